"""Thread-safe hit/miss/error counters and the rate-limited warning log."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import NamedTuple

logger = logging.getLogger("embmemo")

_locked: weakref.WeakSet[Counters | RateLimitedLog] = weakref.WeakSet()


def _new_locks_after_fork() -> None:
    """A lock some other thread held at fork() would stay held forever in the child."""
    for instance in list(_locked):
        instance.new_lock()


class CacheInfo(NamedTuple):
    """Counters per text looked up, modelled on ``functools.lru_cache``'s ``cache_info``.

    Attributes:
        hits: Texts served from the cache.
        misses: Texts that were not cached (and, in the decorator, were computed).
        errors: Texts whose lookup or write failed on the backend.
        corrupt: Stored values that failed verification and were treated as misses.
        local_hits: Those of the hits the in-process tier served (no backend round trip).
        waited: Those of the hits another process computed while this one waited for
            it (``coordinate=True``).
    """

    hits: int
    misses: int
    errors: int
    corrupt: int
    local_hits: int = 0
    waited: int = 0

    @property
    def hit_rate(self) -> float:
        """Hits over hits + misses, 0.0 before the first lookup."""
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0


class Counters:
    """Counters that many threads may bump at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = [0, 0, 0, 0, 0, 0]
        _locked.add(self)

    def new_lock(self) -> None:
        """Replace the lock (in a forked child)."""
        self._lock = threading.Lock()

    def add(self, hits: int = 0, misses: int = 0, errors: int = 0, corrupt: int = 0,
            local_hits: int = 0, waited: int = 0) -> None:
        """Add to the counters atomically."""
        with self._lock:
            values = self._values
            values[0] += hits
            values[1] += misses
            values[2] += errors
            values[3] += corrupt
            values[4] += local_hits
            values[5] += waited

    def snapshot(self) -> CacheInfo:
        """The counters as they are now."""
        with self._lock:
            return CacheInfo(*self._values)

    def reset(self) -> None:
        """Set every counter back to zero."""
        with self._lock:
            self._values = [0, 0, 0, 0, 0, 0]


class RateLimitedLog:
    """Logs a warning per topic at most once per interval, with the count it held back."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        _locked.add(self)

    def new_lock(self) -> None:
        """Replace the lock (in a forked child)."""
        self._lock = threading.Lock()

    def warning(self, topic: str, message: str, *args: object) -> None:
        """Log ``message % args`` unless this topic was logged less than an interval ago."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(topic)
            if last is not None and now - last < self.interval:
                self._held[topic] = self._held.get(topic, 0) + 1
                return
            held = self._held.pop(topic, 0)
            self._last[topic] = now
        suffix = f" ({held} similar messages suppressed)" if held else ""
        logger.warning(message + suffix, *args)


os.register_at_fork(after_in_child=_new_locks_after_fork)
