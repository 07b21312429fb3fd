"""The lookup engine of decorated calls: one flow (``flow.Lookup``), two small drivers.

``LookupEngine`` is what ``@cached_embedding`` talks to. It holds what every decorated
function of one cache shares (the store, the single-flight registry, the circuit
breaker, the rate-limited warnings) and runs a call's flow, executing each I/O step
with blocking calls (``run``) or awaiting them (``arun``).
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

from ..sansio import adrive, drive
from ..stats import RateLimitedLog
from ..store import EntryStore
from .breaker import CircuitBreaker
from .flight import Flights, holding_claims, running_loop
from .flow import (
    NOT_SERVED,
    Call,
    CircuitOpenError,
    Compute,
    FunctionState,
    Lease,
    Lookup,
    Read,
    Refresh,
    Release,
    Sleep,
    Step,
    Wait,
    Write,
)

__all__ = ["Call", "CircuitOpenError", "FunctionState", "LookupEngine"]

_engines: weakref.WeakSet[LookupEngine] = weakref.WeakSet()


class LookupEngine:
    """Runs decorated calls against one cache's store.

    Attributes:
        store: The cache's keys, records and backends.
        breaker: Fail-open state: after repeated backend failures calls skip it.
        flights: Single flight: concurrent misses of one key are computed once.
    """

    def __init__(self, store: EntryStore) -> None:
        self.store = store
        self.breaker = CircuitBreaker()
        self.flights = Flights()
        self.log = RateLimitedLog()
        """Warnings, at most one per topic a minute for this cache."""
        _engines.add(self)

    def after_fork(self) -> None:
        """In a forked child: the parent's flights have no owner here, its breaker's
        state is the parent's, and either lock may be held by a thread that does not
        exist here."""
        self.breaker = CircuitBreaker(self.breaker.threshold, self.breaker.cooldown)
        self.flights = Flights()

    def _new_lookup(self, call: Call, loop: Callable[[], asyncio.AbstractEventLoop | None],
                    asynchronous: bool) -> Lookup:
        return Lookup(call, self.store, self.breaker, self.flights, self.log, loop,
                      asynchronous)

    def run(self, call: Call) -> Any:
        """Run a call, blocking on each step."""
        lookup = self._new_lookup(call, running_loop, asynchronous=False)
        result = lookup.served()
        if result is not NOT_SERVED:
            return result
        return drive(lookup.steps(), partial(self._execute, call=call))

    async def arun(self, call: Call) -> Any:
        """Run a call, awaiting each step (a cancellation releases its claims)."""
        lookup = self._new_lookup(call, asyncio.get_running_loop, asynchronous=True)
        result = lookup.served()
        if result is not NOT_SERVED:
            return result
        return await adrive(lookup.steps(), partial(self._aexecute, call=call))

    def _execute(self, step: Step, call: Call) -> Any:
        if isinstance(step, Compute):
            with holding_claims(step.holding):
                return call.invoke(step.texts)
        if isinstance(step, Wait):
            return self.flights.wait(step.flights)
        if isinstance(step, Sleep):
            return time.sleep(step.seconds)
        method, argument = _storage_call(step, self.store.fetch, self.store.backend())
        return method(argument)

    async def _aexecute(self, step: Step, call: Call) -> Any:
        if isinstance(step, Compute):
            with holding_claims(step.holding):
                return await call.invoke(step.texts)
        if isinstance(step, Wait):
            return await self.flights.wait_async(step.flights)
        if isinstance(step, Sleep):
            return await asyncio.sleep(step.seconds)
        method, argument = _storage_call(step, self.store.afetch, self.store.async_backend())
        return await method(argument)


def _storage_call(step: Step, fetch: Callable[[Any], Any],
                  backend: Any) -> tuple[Callable[[Any], Any], Any]:
    """The store or backend method a storage step calls, and its argument."""
    if isinstance(step, Read):
        return fetch, step.keys
    if isinstance(step, Write):
        return backend.set_many, step.records
    if isinstance(step, Lease):
        return partial(backend.lease_many, ttl_ms=step.ttl_ms), step.keys
    if isinstance(step, Release):
        return backend.release_many, step.keys
    assert isinstance(step, Refresh)
    return backend.refresh_many, step.refreshes


def _reset_after_fork() -> None:
    for engine in list(_engines):
        engine.after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)
