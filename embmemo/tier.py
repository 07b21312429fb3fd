"""The in-process first tier: recently read entries kept in front of any backend.

``LocalTier`` holds stored values (bytes, never the decoded arrays: every read decodes
its own read-only array from immutable bytes, so nothing a caller does to a result can
change what the next caller gets) in least-recently-used order, bounded by their bytes.
A value's CRC is checked once, when the tier takes it; reads served wholly from the tier
skip it (it reads the whole value) and check the header as always.

Coherence comes from the backend (``Coherence``): Redis pushes invalidations
(``backends/tracking.py``), SQLite says when another connection committed
(``PRAGMA data_version``). Before each read the tier applies what changed; a source that
cannot vouch for the tier just now (its connection is down) makes the read go to the
backend. A value read from the backend enters the tier only if no invalidation of its
key arrived while it was being read, so a late reply never overwrites newer news.

Entries with a TTL leave the tier when their header says they expire, or later only as
far as this process itself slid their TTL on the backend.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

from . import codec
from .backends import AsyncBackend, Backend, Record, Refresh, StorageSize
from .errors import PartialBackendError

_FORGET_AFTER = 100_000
"""Invalidated keys remembered for reads in flight; past it, those reads are distrusted."""
_tiers: weakref.WeakSet[LocalTier] = weakref.WeakSet()


class Coherence(Protocol):
    """What keeps a tier true to its backend."""

    trusts_own_writes: bool
    """Whether a value this process wrote may enter the tier at once (True when the
    backend's own writes cannot race with news of other writes, as on SQLite)."""

    def sync(self, tier: LocalTier) -> bool:
        """Apply every change made elsewhere since the last call; False when the tier
        cannot be trusted just now (then the read goes to the backend)."""
        ...

    def close(self) -> None:
        """Stop listening. Idempotent."""
        ...


Fetched = tuple[list[bytes | None], int]
"""Values read for some keys, and how many of them the tier served (a plain tuple: a
named one costs more than the rest of a hit's lookup)."""


class LocalTier:
    """Stored values by key, least recently used first, at most ``capacity`` bytes.

    Thread-safe; emptied in a forked child (its coherence source belonged to the parent).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._values: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self.used = 0
        self._seq = 0
        """Invalidations applied so far: a read notes it before it goes to the backend."""
        self._invalidated: dict[str, int] = {}
        self._horizon = 0
        """Reads noted before this may have missed an invalidation: nothing of theirs
        enters the tier."""
        _tiers.add(self)

    def __len__(self) -> int:
        return len(self._values)

    def lookup(self, keys: Sequence[str]) -> tuple[list[bytes | None], int]:
        """Live values of ``keys`` (None where absent), and the mark to pass to ``keep``."""
        now = time.time()
        values: list[bytes | None] = []
        with self._lock:
            stored = self._values
            for key in keys:
                item = stored.get(key)
                if item is None:
                    values.append(None)
                elif item[1] <= now:
                    self._remove(key)
                    values.append(None)
                else:
                    stored.move_to_end(key)
                    values.append(item[0])
            return values, self._seq

    def keep(self, keys: Sequence[str], values: Sequence[bytes | None], mark: int) -> None:
        """Add values read from the backend since ``mark``, unless an invalidation of
        their key arrived meanwhile (one applied before the mark was taken has a number
        no greater than it)."""
        now = time.time()
        with self._lock:
            if mark < self._horizon:
                return
            invalidated = self._invalidated
            for key, value in zip(keys, values):
                if (value is not None and invalidated.get(key, -1) <= mark
                        and codec.intact(value)):  # checked once here, not on every hit
                    self._add(key, value, now)

    def wrote(self, records: Sequence[Record], keep: bool) -> None:
        """This process wrote ``records``: the old values go; the new ones stay if
        ``keep`` (a read in flight that started earlier cannot add an old value back)."""
        keys = [record.key for record in records]
        now = time.time()
        with self._lock:
            self._invalidate(keys)
            if keep:
                for key, value, _ in records:
                    if codec.intact(value):  # written by anyone: checked like a read
                        self._add(key, value, now)

    def invalidate(self, keys: Sequence[str]) -> None:
        """These keys changed on the backend."""
        with self._lock:
            self._invalidate(keys)

    def flush(self) -> None:
        """Anything may have changed: forget everything, and every read in flight."""
        with self._lock:
            self._values.clear()
            self.used = 0
            self._seq += 1
            self._horizon = self._seq
            self._invalidated.clear()

    def extend(self, refreshes: Sequence[Refresh]) -> None:
        """This process gave these keys their TTL again: they live that long here too."""
        now = time.time()
        with self._lock:
            for key, ttl_ms in refreshes:
                item = self._values.get(key)
                if item is not None:
                    self._values[key] = (item[0], max(item[1], now + ttl_ms / 1000))

    def _invalidate(self, keys: Sequence[str]) -> None:
        self._seq += 1
        if len(self._invalidated) + len(keys) > _FORGET_AFTER:
            self._invalidated.clear()
            self._horizon = self._seq
        for key in keys:
            self._invalidated[key] = self._seq
            if key in self._values:
                self._remove(key)

    def _add(self, key: str, value: bytes, now: float) -> None:
        size = len(key) + len(value)
        expires = codec.expires_at(value)
        if size > self.capacity or expires <= now:
            return
        if key in self._values:
            self._remove(key)
        self._values[key] = (value, expires)
        self.used += size
        while self.used > self.capacity:
            self._remove(next(iter(self._values)))

    def _remove(self, key: str) -> None:
        value, _ = self._values.pop(key)
        self.used -= len(key) + len(value)

    def after_fork(self) -> None:
        """In a forked child: a new lock, and nothing the parent's listener vouched for."""
        self._lock = threading.Lock()
        self.flush()


def _reset_after_fork() -> None:
    for tier in list(_tiers):
        tier.after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)


def begin_read(tier: LocalTier, coherence: Coherence,
               keys: Sequence[str]) -> Fetched | PendingRead:
    """A read through the tier: complete if the tier holds every key, else what the
    backend must still read."""
    if coherence.sync(tier):
        values, mark = tier.lookup(keys)
        if None not in values:
            return values, len(values)
        return PendingRead(keys, values, mark)
    # Nothing vouches for the tier just now: everything from the backend, nothing kept.
    return PendingRead(keys, [None] * len(keys), -1)


class PendingRead:
    """A read the tier served only in part: ``missing`` must come from the backend."""

    __slots__ = ("keys", "mark", "missing", "values")

    def __init__(self, keys: Sequence[str], values: list[bytes | None], mark: int) -> None:
        self.keys = keys
        self.values = values
        self.mark = mark
        self.missing = [key for key, value in zip(keys, values) if value is None]

    def partly_failed(self, tier: LocalTier, error: PartialBackendError) -> PartialBackendError:
        """The error of a backend read that failed in part, with the values and failed
        positions of the whole read (the tier's included)."""
        found = error.values or [None] * len(self.missing)
        values, _ = self.finish(tier, found)
        missing = [i for i, value in enumerate(self.values) if value is None]
        return PartialBackendError(str(error), values,
                                   tuple(missing[j] for j in error.failed))

    def finish(self, tier: LocalTier, found: Sequence[bytes | None]) -> Fetched:
        """Merge the backend's values for ``missing``, and keep them in the tier."""
        if self.mark >= 0:
            tier.keep(self.missing, found, self.mark)
        local = len(self.keys) - len(self.missing)
        if not local:
            return list(found), 0
        replies = iter(found)
        return [value if value is not None else next(replies) for value in self.values], local


class TieredBackend:
    """A ``Backend`` with a ``LocalTier`` in front (its async twin: ``AsyncTieredBackend``).

    Reads are served from the tier where it holds the key; every write, delete and clear
    passes through and leaves the tier consistent with it.
    """

    def __init__(self, backend: Backend, tier: LocalTier, coherence: Coherence) -> None:
        self.backend = backend
        self.url = backend.url
        self.tier = tier
        self.coherence = coherence

    def __repr__(self) -> str:
        return f"TieredBackend({self.backend!r}, {self.tier.capacity} bytes)"

    def __getattr__(self, name: str) -> Any:  # server_version, storage_size, round_trips
        return getattr(self.backend, name)

    def fetch(self, keys: Sequence[str]) -> Fetched:
        """Values of ``keys``, the tier's first, and how many it served."""
        read = begin_read(self.tier, self.coherence, keys)
        if not isinstance(read, PendingRead):
            return read
        try:
            return read.finish(self.tier, self.backend.get_many(read.missing))
        except PartialBackendError as exc:
            raise read.partly_failed(self.tier, exc) from None

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """See ``Backend.get_many``."""
        return self.fetch(keys)[0]

    def refresh_many(self, refreshes: Sequence[Refresh]) -> None:
        """See ``Backend.refresh_many``."""
        self.backend.refresh_many(refreshes)
        self.tier.extend(refreshes)

    def set_many(self, records: Sequence[Record]) -> None:
        """See ``Backend.set_many``."""
        self.tier.wrote(records, keep=False)
        self.backend.set_many(records)
        self.tier.wrote(records, keep=self.coherence.trusts_own_writes)

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """See ``Backend.exists_many``."""
        return self.backend.exists_many(keys)

    def delete_many(self, keys: Sequence[str]) -> int:
        """See ``Backend.delete_many``."""
        self.tier.invalidate(keys)
        try:
            return self.backend.delete_many(keys)
        finally:
            self.tier.invalidate(keys)  # a read that overlapped the delete

    def remaining_ttls(self, keys: Sequence[str]) -> list[int | None]:
        """See ``Backend.remaining_ttls``."""
        return self.backend.remaining_ttls(keys)

    def clear(self, namespace: str, scan_pattern: str) -> int:
        """See ``Backend.clear``."""
        self.tier.flush()
        try:
            return self.backend.clear(namespace, scan_pattern)
        finally:
            self.tier.flush()

    def scan_keys(self, namespace: str, scan_pattern: str) -> list[str]:
        """See ``Backend.scan_keys``."""
        return self.backend.scan_keys(namespace, scan_pattern)

    def close(self) -> None:
        """See ``Backend.close``; the tier is emptied (nothing vouches for it now)."""
        self.coherence.close()
        self.tier.flush()
        self.backend.close()


class AsyncTieredBackend:
    """The async twin of ``TieredBackend``, over an ``AsyncBackend``."""

    def __init__(self, backend: AsyncBackend, tier: LocalTier, coherence: Coherence) -> None:
        self.backend = backend
        self.url = backend.url
        self.tier = tier
        self.coherence = coherence

    def __repr__(self) -> str:
        return f"AsyncTieredBackend({self.backend!r}, {self.tier.capacity} bytes)"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    async def fetch(self, keys: Sequence[str]) -> Fetched:
        """See ``TieredBackend.fetch``."""
        read = begin_read(self.tier, self.coherence, keys)
        if not isinstance(read, PendingRead):
            return read
        try:
            return read.finish(self.tier, await self.backend.get_many(read.missing))
        except PartialBackendError as exc:
            raise read.partly_failed(self.tier, exc) from None

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """See ``Backend.get_many``."""
        return (await self.fetch(keys))[0]

    async def refresh_many(self, refreshes: Sequence[Refresh]) -> None:
        """See ``Backend.refresh_many``."""
        await self.backend.refresh_many(refreshes)
        self.tier.extend(refreshes)

    async def set_many(self, records: Sequence[Record]) -> None:
        """See ``Backend.set_many``."""
        self.tier.wrote(records, keep=False)
        await self.backend.set_many(records)
        self.tier.wrote(records, keep=self.coherence.trusts_own_writes)

    async def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """See ``Backend.exists_many``."""
        return await self.backend.exists_many(keys)

    async def delete_many(self, keys: Sequence[str]) -> int:
        """See ``Backend.delete_many``."""
        self.tier.invalidate(keys)
        try:
            return await self.backend.delete_many(keys)
        finally:
            self.tier.invalidate(keys)

    async def remaining_ttls(self, keys: Sequence[str]) -> list[int | None]:
        """See ``Backend.remaining_ttls``."""
        return await self.backend.remaining_ttls(keys)

    async def clear(self, namespace: str, scan_pattern: str) -> int:
        """See ``Backend.clear``."""
        self.tier.flush()
        try:
            return await self.backend.clear(namespace, scan_pattern)
        finally:
            self.tier.flush()

    async def scan_keys(self, namespace: str, scan_pattern: str) -> list[str]:
        """See ``Backend.scan_keys``."""
        return await self.backend.scan_keys(namespace, scan_pattern)

    async def close(self) -> None:
        """See ``TieredBackend.close``."""
        self.coherence.close()
        self.tier.flush()
        await self.backend.close()


def storage_size(backend: object) -> StorageSize | None:
    """What a local backend holds and its limit (None for a server)."""
    method = getattr(backend, "storage_size", None)
    return method() if method is not None else None


