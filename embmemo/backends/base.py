"""The byte-level primitives every storage backend provides.

Backends know nothing of embeddings: they store opaque records under string keys.
Each batch method is one round trip per chunk; the chunking is the backend's job
because only it knows its limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol


class Record(NamedTuple):
    """One value to write: its key, its encoded bytes and its TTL in ms (None: no expiry)."""

    key: str
    value: bytes
    ttl_ms: int | None


class Backend(Protocol):
    """Synchronous storage. Errors surface as ``embmemo.errors.BackendError``."""

    url: str
    """The backend's URL with any password redacted (safe to log)."""

    def get_many(self, keys: Sequence[str], refresh_ttl: bool) -> list[bytes | None]:
        """Values in key order (None where missing); refresh hits' TTLs when asked."""
        ...

    def set_many(self, records: Sequence[Record]) -> None:
        """Write every record, each with its own TTL set atomically with the value."""
        ...

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """Whether each key holds a live value, in key order."""
        ...

    def delete_many(self, keys: Sequence[str]) -> int:
        """Delete the keys; return how many existed."""
        ...

    def clear(self, namespace: str, scan_pattern: str) -> int:
        """Delete every entry key of ``namespace`` and nothing else; return the count."""
        ...

    def scan_keys(self, namespace: str, scan_pattern: str) -> list[str]:
        """Every entry key of ``namespace`` (for ``embmemo stats``), in no particular order."""
        ...

    def close(self) -> None:
        """Release connections and files. Idempotent."""
        ...


class AsyncBackend(Protocol):
    """The asynchronous twin of ``Backend``: the same methods as coroutines."""

    url: str

    async def get_many(self, keys: Sequence[str], refresh_ttl: bool) -> list[bytes | None]:
        """See ``Backend.get_many``."""
        ...

    async def set_many(self, records: Sequence[Record]) -> None:
        """See ``Backend.set_many``."""
        ...

    async def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """See ``Backend.exists_many``."""
        ...

    async def delete_many(self, keys: Sequence[str]) -> int:
        """See ``Backend.delete_many``."""
        ...

    async def clear(self, namespace: str, scan_pattern: str) -> int:
        """See ``Backend.clear``."""
        ...

    async def scan_keys(self, namespace: str, scan_pattern: str) -> list[str]:
        """See ``Backend.scan_keys``."""
        ...

    async def close(self) -> None:
        """See ``Backend.close``."""
        ...
