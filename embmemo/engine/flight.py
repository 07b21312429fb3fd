"""Single flight: concurrent calls that miss the same key compute it once.

One registry per cache, shared by threads and asyncio tasks: the first caller to claim a
key computes it and publishes the result; later callers wait for it (a thread on an
Event, a task on a future of its own loop) and compute it themselves only if the owner
failed or was cancelled. Waiting must never hang or lie:

* A call made while its call chain holds claims (a decorated method calling another
  decorated method, directly, in a task it spawned, or through ``asyncio.to_thread``)
  never waits: it computes. Waiting there could wait on itself, or close a cycle with
  another chain, and a caller that holds no claims can never be part of a cycle.
* A sync call never blocks on an owner running on its own thread's event loop.
* A waiter whose event loop is gone (closed, or its task cancelled) is skipped by the
  owner, never an error for the owner or the other waiters.
* Published values are read-only arrays; every caller builds its own result from them.
* After ``fork()`` the child starts with an empty registry (see ``LookupEngine``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from asyncio import _get_running_loop as get_running_loop_or_none
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any, NamedTuple

WAIT_LIMIT = 600.0
"""A waiter gives up on an owner that has not finished after this and computes itself."""

_holding_claims: ContextVar[bool] = ContextVar("embmemo_holding_claims", default=False)


@contextmanager
def holding_claims(holding: bool) -> Iterator[None]:
    """Mark the current call chain (thread or task, and what it spawns) as holding claims
    for the block; with ``holding`` False an enclosing mark stays as it is."""
    if not holding:
        yield
        return
    token = _holding_claims.set(True)
    try:
        yield
    finally:
        _holding_claims.reset(token)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any (also seen from sync code)."""
    # asyncio's own low-level accessor (in asyncio.events.__all__): no exception to
    # raise and catch on every sync call, which get_running_loop() would cost.
    return get_running_loop_or_none()


class Flight:
    """One key being computed by one caller."""

    __slots__ = ("done", "loop", "value", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.done = threading.Event()
        self.loop = loop
        """The event loop of an async owner; None for a sync owner."""
        self.value: Any = None
        self.waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []


class Claim(NamedTuple):
    """How a caller's missing keys (by position) are split."""

    owned: list[tuple[int, Flight]]
    """Claimed by this caller: it computes them and must publish each."""
    waiting: list[tuple[int, Flight]]
    """Being computed by another caller: wait for them."""
    unclaimed: list[int]
    """Being computed by another caller this one may not wait for: compute them too."""


class Flights:
    """The keys currently being computed, and who waits for them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._running: dict[str, Flight] = {}
        self.finished = 0
        """How many flights have finished: a caller whose read predates a finish re-reads."""

    def __len__(self) -> int:
        """How many keys are being computed."""
        return len(self._running)

    def waiting_tasks(self) -> int:
        """How many asyncio tasks wait for a key being computed."""
        with self.lock:
            return sum(len(flight.waiters) for flight in self._running.values())

    def claim(self, keys: Sequence[str], loop: asyncio.AbstractEventLoop | None,
              asynchronous: bool) -> Claim:
        """Split positions of ``keys`` into owned, waiting and unclaimed ones.

        ``loop`` is the event loop running in the caller's thread (None if none);
        ``asynchronous`` says whether the caller awaits on it or blocks the thread.
        """
        may_wait = not _holding_claims.get()
        claim = Claim([], [], [])
        with self.lock:
            for index, key in enumerate(keys):
                flight = self._running.get(key)
                if flight is None:
                    flight = self._running[key] = Flight(loop if asynchronous else None)
                    claim.owned.append((index, flight))
                elif may_wait and (asynchronous or loop is None or flight.loop is not loop):
                    claim.waiting.append((index, flight))
                else:
                    claim.unclaimed.append(index)
        return claim

    def publish(self, key: str, flight: Flight, value: Any) -> None:
        """Release an owned key with its value (None: compute it yourselves)."""
        with self.lock:
            if self._running.get(key) is flight:
                del self._running[key]
                self.finished += 1
            flight.value = value
            flight.done.set()
            waiters, flight.waiters = flight.waiters, []
        for loop, future in waiters:
            with suppress(RuntimeError):  # that waiter's loop is closed: nobody waits there
                loop.call_soon_threadsafe(_wake, future)

    def wait(self, flights: Sequence[Flight]) -> list[Any]:
        """Block until the owners are done (at most ``WAIT_LIMIT``); their values."""
        deadline = time.monotonic() + WAIT_LIMIT
        for flight in flights:
            flight.done.wait(max(0.0, deadline - time.monotonic()))
        return [flight.value for flight in flights]

    async def wait_async(self, flights: Sequence[Flight]) -> list[Any]:
        """Await the owners without blocking the event loop; their values."""
        loop = asyncio.get_running_loop()
        pending: list[tuple[Flight, asyncio.Future[None]]] = []
        with self.lock:
            for flight in flights:
                if not flight.done.is_set():
                    future = loop.create_future()
                    flight.waiters.append((loop, future))
                    pending.append((flight, future))
        try:
            if pending:
                await asyncio.wait([future for _, future in pending], timeout=WAIT_LIMIT)
        finally:
            with self.lock:
                for flight, future in pending:
                    if (loop, future) in flight.waiters:
                        flight.waiters.remove((loop, future))
        return [flight.value for flight in flights]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
