"""Single flight: concurrent calls that miss the same key compute it once.

One registry per cache, shared by threads and asyncio tasks: the first caller to claim a
key computes it; later callers wait for its result (a thread on an Event, a task on a
future of its own loop) and compute it themselves only if the owner failed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

_WAIT_LIMIT = 600.0  # a waiter gives up on a stuck owner after this and computes itself


class Flight:
    """One key being computed by one caller."""

    __slots__ = ("_event", "_futures", "value")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = []
        self.value: Any = None

    def _finish(self, value: Any) -> None:
        self.value = value
        self._event.set()
        for loop, future in self._futures:
            loop.call_soon_threadsafe(_set_result, future, value)

    def wait(self) -> Any:
        """Block until the owner is done; its value, or None if it failed."""
        self._event.wait(_WAIT_LIMIT)
        return self.value

    async def wait_async(self, registry: Flights) -> Any:
        """Await the owner without blocking the event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with registry.lock:
            if self._event.is_set():
                return self.value
            self._futures.append((loop, future))
        try:
            return await asyncio.wait_for(asyncio.shield(future), _WAIT_LIMIT)
        except asyncio.TimeoutError:
            return None


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


class Flights:
    """The keys currently being computed, and who waits for them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._running: dict[str, Flight] = {}
        self.finished = 0
        """How many flights have finished: a caller whose read predates a finish re-reads."""

    def claim(self, keys: Sequence[str]) -> tuple[list[int], list[tuple[int, Flight]]]:
        """Split positions into those this caller owns now and those already in flight."""
        owned: list[int] = []
        waiting: list[tuple[int, Flight]] = []
        with self.lock:
            for index, key in enumerate(keys):
                flight = self._running.get(key)
                if flight is None:
                    self._running[key] = Flight()
                    owned.append(index)
                else:
                    waiting.append((index, flight))
        return owned, waiting

    def finish(self, key: str, value: Any) -> None:
        """Publish an owned key's value (None: failed) and release it."""
        with self.lock:
            flight = self._running.pop(key, None)
            if flight is not None:
                self.finished += 1
                flight._finish(value)
