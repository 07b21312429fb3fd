"""The byte-level primitives every storage backend provides.

Backends know nothing of embeddings: they store opaque records under string keys.
Each batch method is one round trip per chunk; the chunking is the backend's job
because only it knows its limits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar

T = TypeVar("T")


class Record(NamedTuple):
    """One value to write: its key, its encoded bytes and its TTL in ms (None: no expiry)."""

    key: str
    value: bytes
    ttl_ms: int | None


class Refresh(NamedTuple):
    """A hit whose TTL slides: its key and the TTL (ms) it was written with."""

    key: str
    ttl_ms: int


class StorageSize(NamedTuple):
    """What local storage holds, in bytes, and its limit (None: no limit)."""

    used: int
    limit: int | None


class Backend(Protocol):
    """Synchronous storage. Errors surface as ``embmemo.errors.BackendError``."""

    url: str
    """The backend's URL with any password redacted (safe to log)."""

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values in key order (None where missing or expired)."""
        ...

    def refresh_many(self, refreshes: Sequence[Refresh]) -> None:
        """Give each key its TTL again, if it still exists and still expires."""
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

    def remaining_ttls(self, keys: Sequence[str]) -> list[int | None]:
        """Milliseconds each key has left to live, in key order (None: no expiry, or no
        such key); for moving entries between backends."""
        ...

    def clear(self, namespace: str, scan_pattern: str) -> int:
        """Delete every entry key of ``namespace`` and nothing else; return the count."""
        ...

    def lease_many(self, keys: Sequence[str], ttl_ms: int) -> list[bool]:
        """Take each lease key nobody holds, for ``ttl_ms``; whether each was taken."""
        ...

    def release_many(self, keys: Sequence[str]) -> None:
        """Give these lease keys up."""
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

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """See ``Backend.get_many``."""
        ...

    async def refresh_many(self, refreshes: Sequence[Refresh]) -> None:
        """See ``Backend.refresh_many``."""
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

    async def remaining_ttls(self, keys: Sequence[str]) -> list[int | None]:
        """See ``Backend.remaining_ttls``."""
        ...

    async def clear(self, namespace: str, scan_pattern: str) -> int:
        """See ``Backend.clear``."""
        ...

    async def lease_many(self, keys: Sequence[str], ttl_ms: int) -> list[bool]:
        """See ``Backend.lease_many``."""
        ...

    async def release_many(self, keys: Sequence[str]) -> None:
        """See ``Backend.release_many``."""
        ...

    async def scan_keys(self, namespace: str, scan_pattern: str) -> list[str]:
        """See ``Backend.scan_keys``."""
        ...

    async def close(self) -> None:
        """See ``Backend.close``."""
        ...


class AsyncAdapter:
    """An ``AsyncBackend`` over a sync ``Backend`` of local storage: each call runs in a
    worker thread (a file: the event loop never waits on disk or locks) or directly (an
    in-process dict: no I/O, no thread hop)."""

    def __init__(self, backend: Backend, in_thread: bool) -> None:
        self.backend = backend
        self.url = backend.url
        self.in_thread = in_thread

    def __repr__(self) -> str:
        return f"AsyncAdapter({self.backend!r})"

    def __getattr__(self, name: str) -> Any:  # coherence, storage_size, server_version
        return getattr(self.backend, name)

    async def _call(self, method: Callable[..., T], *args: Any) -> T:
        if self.in_thread:
            return await asyncio.to_thread(method, *args)
        return method(*args)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """See ``Backend.get_many``."""
        return await self._call(self.backend.get_many, keys)

    async def refresh_many(self, refreshes: Sequence[Refresh]) -> None:
        """See ``Backend.refresh_many``."""
        await self._call(self.backend.refresh_many, refreshes)

    async def set_many(self, records: Sequence[Record]) -> None:
        """See ``Backend.set_many``."""
        await self._call(self.backend.set_many, records)

    async def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """See ``Backend.exists_many``."""
        return await self._call(self.backend.exists_many, keys)

    async def delete_many(self, keys: Sequence[str]) -> int:
        """See ``Backend.delete_many``."""
        return await self._call(self.backend.delete_many, keys)

    async def remaining_ttls(self, keys: Sequence[str]) -> list[int | None]:
        """See ``Backend.remaining_ttls``."""
        return await self._call(self.backend.remaining_ttls, keys)

    async def clear(self, namespace: str, scan_pattern: str) -> int:
        """See ``Backend.clear``."""
        return await self._call(self.backend.clear, namespace, scan_pattern)

    async def scan_keys(self, namespace: str, scan_pattern: str) -> list[str]:
        """See ``Backend.scan_keys``."""
        return await self._call(self.backend.scan_keys, namespace, scan_pattern)

    async def lease_many(self, keys: Sequence[str], ttl_ms: int) -> list[bool]:
        """See ``Backend.lease_many``."""
        return await self._call(self.backend.lease_many, keys, ttl_ms)

    async def release_many(self, keys: Sequence[str]) -> None:
        """See ``Backend.release_many``."""
        await self._call(self.backend.release_many, keys)

    async def close(self) -> None:
        """See ``Backend.close``."""
        await self._call(self.backend.close)
