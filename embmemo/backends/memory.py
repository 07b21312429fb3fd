"""In-process storage for tests and notebooks: thread-safe, with TTL and an LRU limit.

Every ``memory://NAME`` URL in a process shares one store (``memory://`` is the
default one), the way two caches pointed at one Redis share it. A size limit
(``memory://NAME?max_size=64MiB``) belongs to the backend that writes, as with a SQLite
file: after each write the least recently used entries go until the store's keys and
values fit.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

from ..urls import without_query
from .base import Record, Refresh, StorageSize

_PURGE_EVERY_WRITES = 1024


def _size(key: str, value: bytes) -> int:
    return len(key) + len(value)


class MemoryStore:
    """Key -> (value, expires_at on the monotonic clock or None, ttl_ms), least recently
    used first, and the bytes of its keys and values."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: OrderedDict[str, tuple[bytes, float | None, int | None]] = OrderedDict()
        self._writes = 0
        self.used = 0
        self._leases: dict[str, float] = {}
        """Lease key -> when it lapses (monotonic clock)."""

    def _live(self, key: str, now: float) -> tuple[bytes, float | None, int | None] | None:
        item = self._data.get(key)
        if item is not None and item[1] is not None and item[1] <= now:
            self._remove(key)
            return None
        return item

    def _remove(self, key: str) -> None:
        value = self._data.pop(key)[0]
        self.used -= _size(key, value)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.monotonic()
        with self._lock:
            values: list[bytes | None] = []
            for key in keys:
                item = self._live(key, now)
                if item is None:
                    values.append(None)
                    continue
                self._data.move_to_end(key)  # most recently used
                values.append(item[0])
            return values

    def refresh_many(self, refreshes: Sequence[Refresh]) -> None:
        now = time.monotonic()
        with self._lock:
            for key, ttl_ms in refreshes:
                item = self._live(key, now)
                if item is not None and item[1] is not None:
                    self._data[key] = (item[0], now + ttl_ms / 1000, item[2])

    def set_many(self, records: Sequence[Record], max_size: int | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            for key, value, ttl_ms in records:
                if key in self._data:
                    self._remove(key)
                self._data[key] = (value, now + ttl_ms / 1000 if ttl_ms else None, ttl_ms)
                self.used += _size(key, value)
            self._writes += len(records)
            if self._writes >= _PURGE_EVERY_WRITES:
                self._writes = 0
                for key in [k for k, v in self._data.items() if v[1] is not None and v[1] <= now]:
                    self._remove(key)
            while max_size is not None and self.used > max_size and self._data:
                self._remove(next(iter(self._data)))

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        now = time.monotonic()
        with self._lock:
            return [self._live(key, now) is not None for key in keys]

    def delete_many(self, keys: Sequence[str]) -> int:
        now = time.monotonic()
        with self._lock:
            found = 0
            for key in keys:
                if self._live(key, now) is not None:
                    self._remove(key)
                    found += 1
            return found

    def remaining_ttls(self, keys: Sequence[str]) -> list[int | None]:
        now = time.monotonic()
        with self._lock:
            items = [self._live(key, now) for key in keys]
        return [None if item is None or item[1] is None else max(1, round((item[1] - now) * 1000))
                for item in items]

    def clear(self, namespace: str, scan_pattern: str) -> int:
        with self._lock:
            doomed = self.scan_keys(namespace, scan_pattern)
            for key in doomed:
                self._remove(key)
            return len(doomed)

    def lease_many(self, keys: Sequence[str], ttl_ms: int) -> list[bool]:
        now = time.monotonic()
        with self._lock:
            taken = []
            for key in keys:
                free = self._leases.get(key, 0.0) <= now
                if free:
                    self._leases[key] = now + ttl_ms / 1000
                taken.append(free)
            return taken

    def release_many(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._leases.pop(key, None)

    def scan_keys(self, namespace: str, scan_pattern: str) -> list[str]:
        prefix = namespace + ":"
        now = time.monotonic()
        return [key for key, (_, expires, _) in list(self._data.items())
                if _is_entry_key(key, prefix) and (expires is None or expires > now)]


def _is_entry_key(key: str, prefix: str) -> bool:
    digest = key[len(prefix):]
    return (
        key.startswith(prefix)
        and len(digest) == 64
        and all(ch in "0123456789abcdef" for ch in digest)
    )


_STORES: dict[str, MemoryStore] = {}
_STORES_LOCK = threading.Lock()


def shared_store(store_name: str) -> MemoryStore:
    """The process-wide store for one ``memory://`` name."""
    with _STORES_LOCK:
        return _STORES.setdefault(store_name, MemoryStore())


class MemoryBackend:
    """``Backend`` over a shared in-process store (its async twin: ``AsyncAdapter``)."""

    in_process = True
    """No in-process tier goes in front: this is one."""

    def __init__(self, url: str, max_size: int | None = None) -> None:
        self.url = url
        self.max_size = max_size
        self._store = shared_store(without_query(url).partition("://")[2])

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return self._store.get_many(keys)

    def refresh_many(self, refreshes: Sequence[Refresh]) -> None:
        self._store.refresh_many(refreshes)

    def set_many(self, records: Sequence[Record]) -> None:
        self._store.set_many(records, self.max_size)

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        return self._store.exists_many(keys)

    def delete_many(self, keys: Sequence[str]) -> int:
        return self._store.delete_many(keys)

    def remaining_ttls(self, keys: Sequence[str]) -> list[int | None]:
        return self._store.remaining_ttls(keys)

    def clear(self, namespace: str, scan_pattern: str) -> int:
        return self._store.clear(namespace, scan_pattern)

    def scan_keys(self, namespace: str, scan_pattern: str) -> list[str]:
        return self._store.scan_keys(namespace, scan_pattern)

    def lease_many(self, keys: Sequence[str], ttl_ms: int) -> list[bool]:
        return self._store.lease_many(keys, ttl_ms)

    def release_many(self, keys: Sequence[str]) -> None:
        self._store.release_many(keys)

    def storage_size(self) -> StorageSize:
        """Bytes of keys and values in the store, and this backend's limit."""
        return StorageSize(self._store.used, self.max_size)

    def server_version(self) -> str:
        return "in-process memory"

    def close(self) -> None:
        pass
