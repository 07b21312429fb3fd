"""The optional C loops (``embmemo/_speedups.c``), when built and not switched off.

``EMBMEMO_NO_SPEEDUPS=1`` makes embmemo use its pure-Python loops even when the C ones
are there (same results; for comparing the two, or ruling the C code out).
"""

from __future__ import annotations

import importlib
import logging
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
                    verified: bool = False, /) -> tuple[list[Any], int]: ...

    def due(self, entries: Sequence[Any], now: float, fraction: float, /) -> list[int]: ...


_announced = False


def load_speedups() -> Speedups | None:
    """``embmemo._speedups``, or None (said once, as a warning, when it was not built)."""
    global _announced
    if os.environ.get("EMBMEMO_NO_SPEEDUPS", "") not in ("", "0"):
        return None
    try:
        speedups = importlib.import_module("embmemo._speedups")
    except ImportError:  # installed without a C compiler
        if not _announced:
            _announced = True
            logging.getLogger("embmemo").warning(
                "embmemo: the C read loops are not built (no C compiler at install), so "
                "reads run in Python: same results, slower. `embmemo info` says more; "
                "EMBMEMO_NO_SPEEDUPS=1 silences this.")
        return None
    return cast(Speedups, speedups)


def speedups_status() -> str:
    """Whether the C loops are in use, and if not, why (for ``embmemo info``)."""
    if os.environ.get("EMBMEMO_NO_SPEEDUPS", "") not in ("", "0"):
        return "off (EMBMEMO_NO_SPEEDUPS is set): the Python loops"
    try:
        speedups = importlib.import_module("embmemo._speedups")
    except ImportError as exc:
        return (f"not built ({exc}): the Python loops, same results, slower reads; "
                "reinstall with a C compiler to build them")
    return f"in use (SHA-256: {getattr(speedups, 'SHA256', 'OpenSSL libcrypto')})"
