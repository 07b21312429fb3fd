"""The optional C loops (``embmemo/_speedups.c``), when built and not switched off.

``EMBMEMO_NO_SPEEDUPS=1`` makes embmemo use its pure-Python loops even when the C ones
are there (same results; for comparing the two, or ruling the C code out).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast


class Speedups(Protocol):
    """What ``_speedups.c`` offers (its stub, ``_speedups.pyi``, documents the arguments)."""

    def keys(self, identity_prefix: bytes, key_prefix: str, texts: Sequence[str | bytes],
             /) -> tuple[list[str], list[bytes]] | None: ...

    def configure(self, entry_type: type, fields: tuple[str, ...],
                  frombuffer: Callable[..., Any], dtypes: tuple[Any, ...],
                  crc32c: Callable[[bytes], int], loads: Callable[[bytes], Any],
                  residue: int, version: int, /) -> None: ...

    def decode_many(self, values: Sequence[bytes | None], keys: Sequence[str],
                    digests: Sequence[bytes], model_bytes: bytes | None,
                    model_name: str | None, texts: Sequence[str | bytes] | None,
                    /) -> tuple[list[Any], int]: ...

    def due(self, entries: Sequence[Any], now: float, fraction: float, /) -> list[int]: ...


def load_speedups() -> Speedups | None:
    """``embmemo._speedups``, or None."""
    if os.environ.get("EMBMEMO_NO_SPEEDUPS", "") not in ("", "0"):
        return None
    try:
        speedups = importlib.import_module("embmemo._speedups")
    except ImportError:  # installed without a C compiler or OpenSSL headers
        return None
    return cast(Speedups, speedups)
