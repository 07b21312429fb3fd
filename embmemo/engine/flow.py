"""The lookup of one decorated call, written once as a sans-I/O flow.

``Lookup.steps()`` is a generator: it yields the I/O it needs (``Read``, ``Write``,
``Compute``, ``Wait``), receives each reply (or the exception the I/O raised, thrown in
at the ``yield``), and returns the call's result. ``LookupEngine`` drives it with a sync
driver and an async driver of a few lines each, so the logic exists once.

The plan of a call: read every distinct text in one batch; claim the misses nobody is
computing; if another caller finished something since the read, re-read what was
claimed; compute the rest (in ``batch_size`` chunks), write each chunk and publish it to
waiting callers; wait for the texts other callers were computing; compute what they
failed to deliver; count; build the result in the function's own form from the rows as
the cache stores them, so a cold call returns exactly what a warm call will.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .. import backends, forms
from ..backends import Record
from ..errors import (
    BackendError,
    EmbeddingOutputError,
    MigratingError,
    PartialBackendError,
    ValueTooLargeError,
)
from ..forms import DEFAULT_FORM, BatchPlan, OutputForm
from ..keys import Text
from ..stats import Counters, RateLimitedLog
from ..store import EntryStore
from .breaker import CircuitBreaker, Ticket
from .flight import Flight, Flights


class CircuitOpenError(BackendError):
    """The backend failed repeatedly, so calls skip it for a while (``on_error="raise"``)."""


class Read(NamedTuple):
    """Read these keys; the reply is a ``tier.Fetched``: their values (None for a miss),
    in order, and how many the in-process tier served."""

    keys: list[str]


class Write(NamedTuple):
    """Write these records; the reply is None."""

    records: list[Record]


class Compute(NamedTuple):
    """Call the function on these texts; the reply is what it returned.

    ``holding``: the call holds single-flight claims while computing them."""

    texts: list[Text]
    holding: bool


class Refresh(NamedTuple):
    """Give these hits their TTL again (best effort); the reply is None."""

    refreshes: list[backends.Refresh]


class Wait(NamedTuple):
    """Wait for other callers' flights; the reply is their published values."""

    flights: list[Flight]


class Lease(NamedTuple):
    """Take the leases nobody holds, for ``ttl_ms``; the reply says which were taken."""

    keys: list[str]
    ttl_ms: int


class Release(NamedTuple):
    """Give these leases up (best effort); the reply is None."""

    keys: list[str]


class Sleep(NamedTuple):
    """Pause (while another process computes); the reply is None."""

    seconds: float


Step = Read | Refresh | Write | Compute | Wait | Lease | Release | Sleep
NOT_SERVED = object()
"""``Lookup.served``: the call needs its steps."""

LEASE_SECONDS = 10.0
"""How long a process may compute texts others wait for before its lease lapses (a
crashed owner's texts are computed by a waiter after this)."""
WAIT_SECONDS = 30.0
"""The longest a caller waits for another process; then it computes the texts itself."""
FIRST_POLL, LAST_POLL = 0.005, 0.1
"""Seconds between reads of the entries another process is computing: growing from the
first to the last."""
Flow = Generator[Step, Any, Any]


@dataclass
class FunctionState:
    """What the engine keeps per decorated function: its options, counters and the
    output forms it has been seen to return."""

    label: str
    ttl: float | None = None
    batch_size: int | None = None
    raise_errors: bool = False
    counters: Counters = field(default_factory=Counters)
    single_form: OutputForm | None = None
    batch_form: OutputForm | None = None

    def remember(self, form: OutputForm, single: bool) -> None:
        """Record the form a call just returned."""
        if single:
            self.single_form = form
        else:
            self.batch_form = form

    def output_hint(self, single: bool) -> int:
        """The hint written with new entries: the single and batch forms known so far."""
        if single:
            assert self.single_form is not None
            return self.single_form.with_container_of(self.batch_form).hint()
        assert self.batch_form is not None
        return self.batch_form.hint()

    def form_for(self, single: bool, hint: int | None) -> OutputForm:
        """The form of a result: this call's kind if known, else what a hit recorded."""
        known, other = ((self.single_form, self.batch_form) if single
                        else (self.batch_form, self.single_form))
        if known is not None:
            return known
        return (hint and OutputForm.from_hint(hint)) or other or DEFAULT_FORM


@dataclass(slots=True)
class Call:
    """One decorated call, bound and planned by the decorator."""

    function: FunctionState
    plan: BatchPlan
    single: bool
    model_name: str
    params: dict[str, object]
    keys: list[str]
    digests: list[bytes]
    invoke: Callable[[list[Text]], Any]
    """Calls the wrapped function on these texts (awaitable for an async function)."""


class Lookup:
    """The flow of one call, and its state while it runs.

    ``loop`` gives the event loop running in the caller's thread (None if none), and
    ``asynchronous`` says whether the caller awaits on it or blocks its thread: single
    flight needs both to decide whom a caller may wait for (asked only on a miss).
    """

    __slots__ = ("asynchronous", "breaker", "call", "computed", "degraded", "dimensions",
                 "direct", "flights", "hint", "leased", "local", "log", "loop", "owned", "rows",
                 "store", "ticket", "unreachable", "waited")

    def __init__(self, call: Call, store: EntryStore, breaker: CircuitBreaker, flights: Flights,
                 log: RateLimitedLog, loop: Callable[[], asyncio.AbstractEventLoop | None],
                 asynchronous: bool) -> None:
        self.call = call
        self.store = store
        self.breaker = breaker
        self.flights = flights
        self.log = log
        self.loop = loop
        self.asynchronous = asynchronous
        self.rows: list[npt.NDArray[Any] | None] = [None] * len(call.keys)
        self.hint: int | None = None
        """The output form the first hit recorded (decoded only when needed)."""
        self.computed = 0
        self.local = 0
        """Hits the in-process tier served."""
        self.waited = 0
        """Hits another process computed while this call waited for them."""
        self.leased: set[int] = set()
        """Texts this call holds a cross-process lease on (``coordinate``)."""
        self.unreachable: set[str] = set()
        """Keys whose part of the backend (a cluster node) failed in this call: not read
        or written again by it."""
        # The function's own output when it is exactly the result (see ``_compute``).
        self.direct: Any = None
        # The backend failed during this call: its texts count as errors once, and the
        # backend is not tried again (it would most likely cost another timeout).
        self.degraded = False
        self.ticket: Ticket | None = None
        self.owned: dict[int, Flight] = {}
        self.dimensions: set[int] | None = None

    def served(self) -> Any:
        """The result, if the in-process tier holds every text of the call, each decodes,
        and none is due to slide: the usual hot call, with no step to run. Else
        ``NOT_SERVED``, having changed nothing (``steps`` then does the whole call)."""
        call, store = self.call, self.store
        local = store.served_locally(call.keys, self.asynchronous)
        if local is None:
            return NOT_SERVED
        entries = store.peek(call.keys, call.digests, local[0], call.model_name,
                             call.plan.unique)
        if entries is None:
            return NOT_SERVED
        store.counters.add(hits=len(entries), local_hits=len(entries))
        call.function.counters.add(hits=len(entries), local_hits=len(entries))
        self.rows = [entry.embedding for entry in entries]
        self.hint = entries[0].output_hint
        return self._result()

    def steps(self) -> Flow:
        """The whole call: yields I/O steps, returns the result."""
        try:
            return (yield from self._lookup())
        finally:
            for index, flight in self.owned.items():  # failed or cancelled: waiters compute
                self.flights.publish(self.call.keys[index], flight, self.rows[index])
            if self.ticket is not None:
                self.breaker.abandon(self.ticket)  # a no-op once the trial was answered

    def _lookup(self) -> Flow:
        call, flights = self.call, self.flights
        epoch = flights.finished
        everything = list(range(len(call.keys)))
        yield from self._read(everything)
        misses = [i for i, row in enumerate(self.rows) if row is None]
        if misses:
            claim = flights.claim([call.keys[i] for i in misses], self.loop(), self.asynchronous)
            self.owned = {misses[j]: flight for j, flight in claim.owned}
            owned = list(self.owned)
            if owned and flights.finished != epoch:  # someone finished since our read
                yield from self._read(owned)
                for i in owned:
                    if self.rows[i] is not None:
                        self._publish(i)
            todo = [i for i in owned if self.rows[i] is None]
            elsewhere: list[int] = []
            if todo and self.store.settings.coordinate:
                todo, elsewhere = yield from self._lease(todo)
            yield from self._compute(todo, holding=True)
            if elsewhere:
                yield from self._await_other_processes(elsewhere)
            waiting = [(misses[j], flight) for j, flight in claim.waiting]
            if waiting:
                values = yield Wait([flight for _, flight in waiting])
                for (i, _), value in zip(waiting, values):
                    self.rows[i] = value
            leftovers = [i for i, _ in waiting if self.rows[i] is None]  # their owner failed
            yield from self._compute(leftovers + [misses[j] for j in claim.unclaimed],
                                     holding=False)
        call.function.counters.add(hits=len(call.keys) - self.computed, misses=self.computed,
                                   local_hits=self.local, waited=self.waited)
        return self._result()

    # -- steps ------------------------------------------------------------------------------

    def _read(self, indexes: list[int], counted: bool = True) -> Flow:
        """Read ``indexes`` into ``rows``; a failed or skipped read leaves them missing.
        ``counted=False``: a poll for another process's entries, not a lookup."""
        call = self.call
        if self.unreachable:
            indexes = [i for i in indexes if call.keys[i] not in self.unreachable]
        if not indexes or self.degraded:
            return
        everything = len(indexes) == len(call.keys)
        keys = call.keys if everything else [call.keys[i] for i in indexes]
        # All hits in the in-process tier: no step to yield (it does no I/O), and no
        # question for the breaker.
        served = self.store.served_locally(keys, self.asynchronous)
        if served is None and not self._may_use_backend(len(indexes)):
            return
        digests = call.digests if everything else [call.digests[i] for i in indexes]
        unique = call.plan.unique
        texts = unique if everything else [unique[i] for i in indexes]
        try:
            values, local = served if served is not None else (yield Read(keys))
        except PartialBackendError as exc:  # one node of a cluster: the others' hits stand
            values, local = exc.values or [None] * len(keys), 0
            self.unreachable.update(keys[i] for i in exc.failed)
            self._partly_failed(exc, len(exc.failed))
        except BackendError as exc:
            self._backend_failed(exc, len(keys))
            return
        if local < len(keys):
            self.breaker.record_success()
        self.local += local
        entries = self.store.decode(keys, digests, values, call.model_name, texts,
                                    corrupt_also_to=call.function.counters, local=local,
                                    counted=counted)
        found = [entry.embedding if entry is not None else None for entry in entries]
        if everything:
            self.rows = found
        else:
            for i, row in zip(indexes, found):
                self.rows[i] = row
        if self.hint is None:
            for entry in entries:
                if entry is not None:
                    self.hint = entry.output_hint
                    break
        due = self.store.due_refreshes(keys, entries)
        if due:
            try:
                yield Refresh(due)
            except BackendError as exc:  # the hits stand (a read-only replica, say)
                self.store.refresh_skipped(exc)

    def _compute(self, indexes: list[int], holding: bool) -> Flow:
        """Compute ``indexes`` chunk by chunk; write and publish each chunk."""
        call, function = self.call, self.call.function
        size = function.batch_size or max(1, len(indexes))
        for start in range(0, len(indexes), size):
            chunk = indexes[start:start + size]
            texts = [call.plan.unique[i] for i in chunk]
            try:
                output = yield Compute(texts, holding)
            except Exception:
                yield from self._release(indexes[start:])  # waiters elsewhere: compute
                raise
            if call.single:
                row, form = forms.read_single(output, function.label)
                matrix = row[np.newaxis]
            else:
                matrix, form = forms.read_batch(output, len(chunk), function.label)
            self._check_dimension(matrix.shape[1])
            function.remember(form, call.single)
            computed = self.store.computed_records(
                texts, call.model_name, call.params, matrix, function.ttl,
                function.output_hint(call.single))
            for i, row in zip(chunk, computed.stored_rows):
                self.rows[i] = row
            self.computed += len(chunk)
            if computed.failures:
                self._unstorable(computed.failures, texts)
            if computed.records:
                yield from self._write(computed.records)
            yield from self._release(chunk)
            for i in chunk:
                self._publish(i)
            if (chunk == list(range(len(self.rows))) and not call.plan.has_duplicates
                    and not computed.failures and _exact(output, form, computed.stored_rows)):
                self.direct = output  # nobody else holds it: the caller may have it as is

    def _lease(self, indexes: list[int]) -> Generator[Step, Any, tuple[list[int], list[int]]]:
        """Take cross-process leases on ``indexes``: (those to compute here, those another
        process is computing). A text whose entry appeared meanwhile is neither. Without a
        backend, everything is computed here."""
        if self.degraded:
            return indexes, []
        scheme = self.store.scheme
        try:
            taken = yield Lease([scheme.lease_key(self.call.keys[i]) for i in indexes],
                                round(LEASE_SECONDS * 1000))
        except BackendError:  # fail open: no coordination, no wait
            return indexes, []
        mine = [i for i, got in zip(indexes, taken) if got]
        self.leased.update(mine)
        if mine:  # a lease given up since our read may mean its entry is there now
            yield from self._read(mine, counted=False)
            there = [i for i in mine if self.rows[i] is not None]
            yield from self._release(there)
            for i in there:
                self._publish(i)
            mine = [i for i in mine if self.rows[i] is None]
        return mine, [i for i, got in zip(indexes, taken) if not got]

    def _release(self, indexes: list[int]) -> Flow:
        """Give up the leases held on ``indexes`` (best effort: they lapse anyway)."""
        held = [i for i in indexes if i in self.leased]
        if not held:
            return
        self.leased.difference_update(held)
        scheme = self.store.scheme
        with suppress(BackendError):
            yield Release([scheme.lease_key(self.call.keys[i]) for i in held])

    def _await_other_processes(self, indexes: list[int]) -> Flow:
        """Read the entries other processes hold leases on until they are there, taking
        over any lease that lapsed (its owner died); after ``WAIT_SECONDS``, or if the
        backend fails, compute what is still missing here."""
        deadline = time.monotonic() + WAIT_SECONDS
        delay = FIRST_POLL
        pending = indexes
        while pending and not self.degraded and time.monotonic() < deadline:
            yield Sleep(delay)
            delay = min(delay * 1.5, LAST_POLL)
            yield from self._read(pending, counted=False)
            arrived = [i for i in pending if self.rows[i] is not None]
            self.waited += len(arrived)
            for i in arrived:
                self._publish(i)
            pending = [i for i in pending if self.rows[i] is None]
            if pending:
                mine, pending = yield from self._lease(pending)
                yield from self._compute(mine, holding=True)
        yield from self._compute(pending, holding=True)

    def _write(self, records: list[Record]) -> Flow:
        if self.unreachable:
            records = [r for r in records if r.key not in self.unreachable]
        if not records or not self._may_use_backend(len(records)):
            return
        try:
            yield Write(records)
        except ValueTooLargeError as exc:  # says nothing of the backend's health
            self.call.function.counters.add(errors=len(records))
            if self.call.function.raise_errors:
                raise
            self.log.warning("too-large", "embmemo: not caching an entry: %s", exc)
        except PartialBackendError as exc:  # one node of a cluster: the rest was written
            self._partly_failed(exc, len(records))
        except BackendError as exc:
            self._backend_failed(exc, len(records))
        else:
            self.breaker.record_success()

    def _publish(self, index: int) -> None:
        flight = self.owned.pop(index, None)
        if flight is not None:
            self.flights.publish(self.call.keys[index], flight, self.rows[index])

    # -- failures ---------------------------------------------------------------------------

    def _may_use_backend(self, texts: int) -> bool:
        """Whether to try the backend: not after it failed in this call, nor while the
        breaker is open (then the texts count as errors, or it raises if strict)."""
        if self.degraded:
            return False
        ticket = self.breaker.allow()
        if ticket is None:
            self._backend_failed(None, texts)
            return False
        if ticket.trial:
            self.ticket = ticket
        return True

    def _partly_failed(self, exc: PartialBackendError, texts: int) -> None:
        """Part of a batch failed (a cluster node): count those texts as errors, keep
        going with the rest; the breaker, which guards the whole backend, is left alone."""
        self.call.function.counters.add(errors=texts)
        if self.call.function.raise_errors:
            raise exc
        self.log.warning("partial", "embmemo: part of the cache unavailable: %s", exc)

    def _backend_failed(self, exc: BackendError | None, texts: int) -> None:
        """Fail open: count, log now and then, trip the breaker; or raise if strict.

        ``exc`` is None when the open breaker skipped the backend. Each text counts as
        one error per call, however many of the call's backend operations failed.
        """
        function = self.call.function
        if not self.degraded:
            function.counters.add(errors=texts)
        self.degraded = True
        if exc is not None and not isinstance(exc, MigratingError):  # a slot moving: no
            self.breaker.record_failure()  # sign of the backend's health
        if function.raise_errors:
            raise exc or CircuitOpenError(
                f"the cache backend failed repeatedly; {function.label} skips it for "
                f"{self.breaker.retry_in:.1f} s more (on_error='raise')")
        if exc is not None:
            self.log.warning("backend", "embmemo: cache unavailable, computing instead: %s", exc)

    def _unstorable(self, failures: Sequence[tuple[int, Exception]], texts: list[Text]) -> None:
        """Rows the storage dtype cannot hold: returned as computed, not cached."""
        function = self.call.function
        function.counters.add(errors=len(failures))
        index, reason = failures[0]
        if function.raise_errors:
            raise type(reason)(f"{function.label}: cannot cache the embedding of text "
                               f"{texts[index]!r}: {reason}") from None
        self.log.warning("unstorable", "embmemo: not caching %d embedding(s) of %s: %s",
                         len(failures), function.label, reason)

    def _check_dimension(self, computed: int) -> None:
        """Fresh embeddings must match the dimension of the hits they are returned with
        (checked before anything of theirs is written)."""
        if self.dimensions is None:  # all hits are in by the first computed chunk
            self.dimensions = {row.shape[0] for row in self.rows if row is not None}
        if self.dimensions and self.dimensions != {computed}:
            raise _dimension_error(self.call, sorted(self.dimensions), computed)
        self.dimensions.add(computed)

    # -- the result -------------------------------------------------------------------------

    def _result(self) -> Any:
        call = self.call
        if self.direct is not None:
            return self.direct
        rows: list[npt.NDArray[Any]] = self.rows  # type: ignore[assignment]  # all filled now
        form = call.function.form_for(call.single, self.hint)
        if call.single:
            return forms.build_single(rows[0], form)
        mismatch = forms.dimension_mismatch(rows)
        if mismatch:
            raise _dimension_error(call, sorted(mismatch), None)
        return forms.build_batch(rows, call.plan.positions, form)


def _exact(output: Any, form: OutputForm, stored: Sequence[npt.NDArray[Any]]) -> bool:
    """Whether the function's output equals what a warm read would build: an array whose
    dtype the entries record and whose values the storage dtype keeps exactly."""
    return (isinstance(output, np.ndarray) and form.dtype is not None
            and output.dtype == form.dtype
            and (output.dtype.kind in "iu" or output.dtype == stored[0].dtype))


def _dimension_error(call: Call, cached: list[int], computed: int | None) -> EmbeddingOutputError:
    model = call.model_name
    if computed is None:
        found = f"cached embeddings of these texts have different dimensions {cached}"
    else:
        found = (f"it returned {computed}-d embeddings, but entries cached under the same "
                 f"identity hold {'/'.join(map(str, cached))}-d ones")
    params = f", model_params={call.params!r}" if call.params else ""
    return EmbeddingOutputError(
        f"{call.function.label}: {found}: the output of model {model!r} changed under the "
        f"same name. Give the new output its own model name (for example "
        f"model={model + '-v2'!r}), or drop the stale entries with "
        f"cache.mdrop(texts, {model!r}{params}); other models' entries are not affected. "
        "Nothing from this call was cached."
    )
