"""``@cached_embedding``: transparent memoization for any sync or async embed function.

The decorator is a ``wrapt.FunctionWrapper``, so it works on functions, methods,
classmethods, staticmethods and callable objects and keeps their signature. It picks
the sync or async path once, at decoration time. Each call binds its arguments, looks
up every distinct text in one backend round trip, computes only the misses (in
first-appearance order, once even under concurrency), writes them back, and returns
results in input order and in the type the undecorated function returns.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast, overload

import numpy as np
import numpy.typing as npt
import wrapt

from . import _batch
from ._batch import DEFAULT_FORM, BatchPlan, OutputForm
from ._flight import Flight
from .backends import Record
from .cache import EmbeddingsCache
from .config import Settings, ttl_seconds
from .errors import (
    BackendError,
    ConfigError,
    InvalidInputError,
    InvalidTypeError,
    ValueTooLargeError,
)
from .keys import Text, UncanonicalValueError
from .stats import CacheInfo, Counters, RateLimitedLog

if TYPE_CHECKING:
    from typing import Concatenate

    from typing_extensions import ParamSpec, Self

    P = ParamSpec("P")
    P2 = ParamSpec("P2")
else:
    P = TypeVar("P")
    P2 = TypeVar("P2")

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
S = TypeVar("S")

_bypassed: ContextVar[bool] = ContextVar("embmemo_bypass", default=False)
_backend_log = RateLimitedLog()


@contextmanager
def bypass() -> Iterator[None]:
    """Within this block, decorated functions compute everything and touch no cache.

    It follows the current thread and asyncio task (a context variable), so other
    threads and tasks keep caching.
    """
    token = _bypassed.set(True)
    try:
        yield
    finally:
        _bypassed.reset(token)


class CachedEmbeddingFunction(Protocol[P, R_co]):
    """What ``@cached_embedding`` returns: the function, same signature, plus controls."""

    @property
    def __wrapped__(self) -> Callable[P, R_co]:
        """The undecorated function."""
        ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    @overload
    def __get__(self, instance: None, owner: Any) -> Self: ...
    @overload
    def __get__(
        self: CachedEmbeddingFunction[Concatenate[S, P2], R],
        instance: S,
        owner: Any,
    ) -> CachedEmbeddingFunction[P2, R]: ...
    def __get__(self, instance: Any, owner: Any) -> Any: ...

    @property
    def cache(self) -> EmbeddingsCache:
        """The ``EmbeddingsCache`` this function reads and writes."""
        ...

    def cache_info(self) -> CacheInfo:
        """Hits, misses, errors and corrupt values, per text looked up, and the hit rate."""
        ...

    def cache_clear(self) -> None:
        """Delete every entry in the cache's namespace and reset ``cache_info``."""
        ...


def cached_embedding(
    model: str | Callable[[Any], str],
    *,
    ttl: float | None = None,
    cache: EmbeddingsCache | None = None,
    name: str | None = None,
    url: str | None = None,
    ignore: Sequence[str] = (),
    text_arg: str | None = None,
    batch_size: int | None = None,
    on_error: str | None = None,
) -> Callable[[Callable[P, R]], CachedEmbeddingFunction[P, R]]:
    """Memoize an embed function that takes a text or a list of texts.

    Args:
        model: The model name entries are stored under, or a callable that receives the
            bound instance (or class, or None for a plain function) and returns it.
        ttl: Time to live in seconds of the entries this function writes.
        cache: The ``EmbeddingsCache`` to use; by default one is built from ``name``,
            ``url``, ``ttl`` and the ``EMBMEMO_*`` environment.
        name: Key namespace of the cache built when ``cache`` is None.
        url: Backend URL of the cache built when ``cache`` is None.
        ignore: Arguments that do not change the output (``timeout``, ``client``...),
            left out of the entry identity.
        text_arg: The parameter holding the text(s); default: the first one after
            ``self``/``cls``.
        batch_size: Send misses to the function at most this many at a time, writing
            each chunk as soon as it is computed.
        on_error: ``"compute"`` (default, ``EMBMEMO_ON_ERROR``): a backend failure means
            the function computes and the call succeeds; ``"raise"``: it propagates.

    Every other argument, with defaults applied, is part of the entry identity, so
    ``embed(t, dimensions=8)`` and ``embed(t, dimensions=16)`` never share an entry.
    Decoration never connects.
    """
    if not (isinstance(model, str) and model) and not callable(model):
        raise InvalidInputError("model must be a non-empty str or a callable returning one")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise InvalidInputError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if isinstance(ignore, str):
        raise InvalidTypeError("ignore must be a sequence of argument names, not a str")
    settings = Settings.resolve(on_error=on_error)
    write_ttl = ttl_seconds(ttl)
    if cache is None:
        cache = EmbeddingsCache(name=name, ttl=ttl, url=url)
    elif name is not None or url is not None:
        raise ConfigError("give either cache= or name=/url=, not both")

    def decorate(function: Callable[P, R]) -> CachedEmbeddingFunction[P, R]:
        memo = _Memoizer(function, cache, model, write_ttl, tuple(ignore), text_arg,
                         batch_size, settings)
        wrapper = memo.call_async if memo.is_async else memo.call_sync
        return cast("CachedEmbeddingFunction[P, R]", _CachedEmbedding(function, wrapper, memo))

    return decorate


class _Signature:
    """Where the text is among a function's parameters, for one way of calling it."""

    def __init__(self, signature: inspect.Signature, text_arg: str | None, label: str) -> None:
        self.signature = signature
        names = list(signature.parameters)
        if text_arg is None:
            positional = [
                p.name for p in signature.parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            if not positional:
                raise InvalidTypeError(f"{label} has no positional parameter to hold the text")
            text_arg = positional[0]
        elif text_arg not in names:
            raise InvalidInputError(f"text_arg={text_arg!r} is not a parameter of {label}")
        kind = signature.parameters[text_arg].kind
        if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise InvalidTypeError(f"the text parameter {text_arg!r} of {label} cannot be *args")
        self.text_arg = text_arg
        self.var_keyword = next((p.name for p in signature.parameters.values()
                                 if p.kind == p.VAR_KEYWORD), None)


class _Call:
    """One decorated call, bound and planned."""

    __slots__ = (
        "args",
        "bound",
        "degraded",
        "digests",
        "keys",
        "kwargs",
        "model_name",
        "params",
        "plan",
        "single",
        "text_arg",
        "wrapped",
    )

    def __init__(self, wrapped: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any], bound: inspect.BoundArguments, text_arg: str,
                 single: bool, plan: BatchPlan, model_name: str,
                 params: dict[str, object]) -> None:
        self.wrapped = wrapped
        self.args = args
        self.kwargs = kwargs
        self.bound = bound
        self.text_arg = text_arg
        self.single = single
        self.plan = plan
        self.model_name = model_name
        self.params = params
        self.keys: list[str] = []
        self.digests: list[bytes] = []
        # The backend failed during this call: its texts count as errors once, and no
        # further write is tried (it would most likely cost another timeout).
        self.degraded = False


class _Memoizer:
    """The state and logic behind one decorated function."""

    def __init__(
        self,
        function: Callable[..., Any],
        cache: EmbeddingsCache,
        model: str | Callable[[Any], str],
        ttl: float | None,
        ignore: tuple[str, ...],
        text_arg: str | None,
        batch_size: int | None,
        settings: Settings,
    ) -> None:
        self.cache = cache
        self.model = model
        self.ttl = ttl
        self.ignore = frozenset(ignore)
        self.batch_size = batch_size
        self.raise_errors = settings.on_error == "raise"
        self.disabled = settings.disable
        self.counters = Counters()
        self.label = getattr(function, "__qualname__", type(function).__name__)
        self.is_static = isinstance(function, staticmethod)
        underlying = function.__func__ if isinstance(function, (classmethod, staticmethod)) \
            else function
        self.is_async = _is_async(underlying)
        full = inspect.signature(underlying)
        params = list(full.parameters.values())
        self._text_arg = text_arg
        self._full = full
        self._as_method: _Signature | None = None
        self.unbound = (
            _Signature(full, text_arg, self.label)
            if not isinstance(function, classmethod) else self.method_signature()
        )
        unknown = self.ignore - set(full.parameters)
        if unknown and not any(p.kind == p.VAR_KEYWORD for p in params):
            raise InvalidInputError(f"ignore names unknown parameters {sorted(unknown)} of "
                                    f"{self.label}")
        self.single_form: OutputForm | None = None
        self.batch_form: OutputForm | None = None

    # -- preparing a call -------------------------------------------------------------

    def method_signature(self) -> _Signature:
        """The signature as called through an instance or class: without self/cls."""
        if self._as_method is None:
            params = list(self._full.parameters.values())
            if not params or params[0].kind not in (params[0].POSITIONAL_ONLY,
                                                    params[0].POSITIONAL_OR_KEYWORD):
                raise InvalidTypeError(f"{self.label} cannot be called as a method")
            self._as_method = _Signature(self._full.replace(parameters=params[1:]),
                                         self._text_arg, self.label)
        return self._as_method

    def prepare(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> _Call | None:
        """Bind and validate; None when the arguments do not fit (the function will say)."""
        spec = (self.method_signature() if instance is not None and not self.is_static
                else self.unbound)
        try:
            bound = spec.signature.bind(*args, **kwargs)
        except TypeError:
            return None
        bound.apply_defaults()
        value = bound.arguments[spec.text_arg]
        texts: Sequence[Text]
        if isinstance(value, (str, bytes)):
            single, texts = True, [value]
        elif isinstance(value, (list, tuple)):
            single, texts = False, value
            for index, text in enumerate(texts):
                if not isinstance(text, (str, bytes)):
                    raise InvalidTypeError(
                        f"{self.label}: {spec.text_arg}[{index}] must be str or bytes, "
                        f"got {type(text).__name__}")
        else:
            raise InvalidTypeError(
                f"{self.label}: {spec.text_arg!r} must be a str, bytes, or a list/tuple of "
                f"them, got {type(value).__name__}")
        params = {k: v for k, v in bound.arguments.items()
                  if k != spec.text_arg and k not in self.ignore}
        if spec.var_keyword in params and self.ignore:  # ignore= applies inside **kwargs too
            params[spec.var_keyword] = {k: v for k, v in params[spec.var_keyword].items()
                                        if k not in self.ignore}
        model_name = self.model if isinstance(self.model, str) else self.model(instance)
        if not isinstance(model_name, str) or not model_name:
            raise InvalidInputError(f"{self.label}: the model callable must return a non-empty "
                                    f"str, got {model_name!r}")
        call = _Call(wrapped, args, kwargs, bound, spec.text_arg, single, _batch.plan(texts),
                     model_name, params)
        try:
            call.keys, call.digests = self.cache._request_keys(call.plan.unique, model_name,
                                                               params)
        except UncanonicalValueError as exc:
            name = exc.parameter
            raise InvalidTypeError(
                f"{self.label}: argument {name!r} ({type(params.get(name or '')).__name__}) has "
                f"no stable canonical form to key the cache on; if it does not change the "
                f"output, pass ignore=({name!r},) to @cached_embedding") from None
        return call

    def invoke(self, call: _Call, texts: list[Text]) -> Any:
        """Call the wrapped function on ``texts`` (the original arguments for one text)."""
        if call.single:
            return call.wrapped(*call.args, **call.kwargs)
        call.bound.arguments[call.text_arg] = texts  # same position, as a list
        return call.wrapped(*call.bound.args, **call.bound.kwargs)

    # -- the pieces shared by both paths ------------------------------------------------

    def read_output(self, call: _Call, output: Any, count: int) -> npt.NDArray[Any]:
        """Check the function's output and remember its form; rows as a 2-D array."""
        if call.single:
            row, form = _batch.read_single(output, self.label)
            self.single_form = form
            return row[np.newaxis]
        matrix, form = _batch.read_batch(output, count, self.label)
        self.batch_form = form
        return matrix

    def output_hint(self, call: _Call) -> int:
        """The hint written with new entries: the single and batch forms known so far."""
        form = self.single_form if call.single else self.batch_form
        assert form is not None
        if call.single and self.batch_form is not None:
            form = OutputForm(self.batch_form.container, form.row, form.numpy_elements,
                              form.dtype)
        return form.hint()

    def rows_from(self, entries: Sequence[Any]) -> tuple[list[Any], OutputForm | None]:
        """Embeddings of the hits (None for misses) and the form the first hit recorded."""
        rows: list[Any] = [None] * len(entries)
        hinted: OutputForm | None = None
        for index, entry in enumerate(entries):
            if entry is not None:
                rows[index] = entry.embedding
                if hinted is None:
                    hinted = OutputForm.from_hint(entry.output_hint)
        return rows, hinted

    def finish(self, call: _Call, rows: list[Any], hinted: OutputForm | None) -> Any:
        """The result in input order, in the function's own type."""
        known, other = ((self.single_form, self.batch_form) if call.single
                        else (self.batch_form, self.single_form))
        form = known or hinted or other or DEFAULT_FORM
        if call.single:
            return _batch.build_single(rows[0], form)
        return _batch.build_batch(rows, call.plan.positions, form)

    def backend_failed(self, call: _Call, exc: BackendError | None, texts: int) -> None:
        """Fail open: count, log now and then, trip the breaker; or re-raise if strict.

        ``exc`` is None when the open breaker skipped the backend. Each text counts as
        one error per call, however many of the call's backend operations failed.
        """
        if not call.degraded:
            self.counters.add(errors=texts)
        call.degraded = True
        if exc is None:
            return
        self.cache._breaker.record_failure()
        if self.raise_errors:
            raise exc
        _backend_log.warning("backend", "embmemo: cache unavailable, computing instead: %s", exc)

    def may_write(self, call: _Call, texts: int) -> bool:
        """Whether to write back: not once the backend failed during this call, nor while
        the breaker is open."""
        if call.degraded:
            return False
        if not self.cache._breaker.allow():
            self.backend_failed(call, None, texts)
            return False
        return True

    def write_failed(self, call: _Call, exc: BackendError, texts: int) -> None:
        """A failed write-back; an entry too large to store says nothing of the backend."""
        if not isinstance(exc, ValueTooLargeError):
            self.backend_failed(call, exc, texts)
            return
        if not call.degraded:
            self.counters.add(errors=texts)
        call.degraded = True
        if self.raise_errors:
            raise exc
        _backend_log.warning("too-large", "embmemo: not caching an entry: %s", exc)

    def direct_result(self, call: _Call, owned: list[int], computed_output: Any) -> bool:
        """Whether the function's own output is the whole answer (all misses, in order)."""
        return (computed_output is not None and (call.single or (
            not call.plan.has_duplicates and owned == list(range(len(call.plan.unique))))))

    def chunked(self, indexes: list[int]) -> Iterator[list[int]]:
        size = self.batch_size or max(1, len(indexes))
        for start in range(0, len(indexes), size):
            yield indexes[start:start + size]

    def records(self, call: _Call, chunk: list[int], matrix: npt.NDArray[Any]) -> list[Record]:
        return self.cache._computed_records(
            [call.plan.unique[i] for i in chunk], call.model_name, call.params, matrix,
            self.ttl, self.output_hint(call))

    def claim(self, call: _Call, misses: list[int]) -> tuple[list[int], list[tuple[int, Flight]]]:
        """Own the misses nobody else is computing; wait for the others."""
        claimed, waiting = self.cache._flights.claim([call.keys[i] for i in misses])
        return [misses[j] for j in claimed], [(misses[j], flight) for j, flight in waiting]

    def take_hits(self, call: _Call, owned: list[int], rows: list[Any],
                  entries: Sequence[Any]) -> list[int]:
        """Use what another caller stored meanwhile; return the indexes still to compute."""
        still_missing: list[int] = []
        for i, entry in zip(owned, entries):
            if entry is None:
                still_missing.append(i)
            else:
                rows[i] = entry.embedding
                self.cache._flights.finish(call.keys[i], rows[i])
        return still_missing

    def release(self, call: _Call, owned: list[int], rows: list[Any]) -> None:
        """Publish owned results (None where computing failed) to waiting callers."""
        for i in owned:
            self.cache._flights.finish(call.keys[i], rows[i])

    def take_row(self, call: _Call, chunk: list[int], matrix: npt.NDArray[Any],
                 rows: list[Any]) -> None:
        for i, row in zip(chunk, matrix):
            rows[i] = row

    def count(self, call: _Call, computed: int) -> None:
        self.counters.add(hits=len(call.keys) - computed, misses=computed)

    def lookup_keys(self, call: _Call, indexes: list[int]) -> tuple[list[str], list[bytes]]:
        if len(indexes) == len(call.keys):
            return call.keys, call.digests
        return [call.keys[i] for i in indexes], [call.digests[i] for i in indexes]

    def decoded(self, call: _Call, indexes: list[int], keys: list[str], digests: list[bytes],
                values: list[bytes | None]) -> list[Any]:
        self.cache._breaker.record_success()
        unique = call.plan.unique
        texts = unique if len(indexes) == len(unique) else [unique[i] for i in indexes]
        return self.cache._decode(keys, digests, values, call.model_name, texts,
                                  corrupt_also_to=self.counters)

    # -- sync path ------------------------------------------------------------------------

    def call_sync(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Any:
        if self.disabled or _bypassed.get():
            return wrapped(*args, **kwargs)
        call = self.prepare(wrapped, instance, args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        flights = self.cache._flights
        epoch = flights.finished
        rows, hinted = self.rows_from(self.fetch_sync(call, list(range(len(call.keys)))))
        misses = [i for i, row in enumerate(rows) if row is None]
        computed, direct = 0, None
        if misses:
            owned, waiting = self.claim(call, misses)
            try:
                if owned and flights.finished != epoch:  # someone finished since our read
                    owned = self.take_hits(call, owned, rows, self.fetch_sync(call, owned))
                computed, direct = self.compute_sync(call, owned, rows)
            finally:
                self.release(call, owned, rows)
            for i, flight in waiting:
                rows[i] = flight.wait()
            leftovers = [i for i, _ in waiting if rows[i] is None]  # their owner failed
            computed += self.compute_sync(call, leftovers, rows)[0]
            if not self.direct_result(call, owned, direct):
                direct = None
        self.count(call, computed)
        return direct if direct is not None else self.finish(call, rows, hinted)

    def fetch_sync(self, call: _Call, indexes: list[int]) -> list[Any]:
        if not indexes:
            return []
        keys, digests = self.lookup_keys(call, indexes)
        if not self.cache._breaker.allow():
            self.backend_failed(call, None, len(keys))
            return [None] * len(keys)
        try:
            values = self.cache._sync().get_many(keys, self.cache.refresh_ttl_on_read)
        except BackendError as exc:
            self.backend_failed(call, exc, len(keys))
            return [None] * len(keys)
        return self.decoded(call, indexes, keys, digests, values)

    def compute_sync(self, call: _Call, indexes: list[int], rows: list[Any]) -> tuple[int, Any]:
        output: Any = None
        for chunk in self.chunked(indexes):
            output = self.invoke(call, [call.plan.unique[i] for i in chunk])
            matrix = self.read_output(call, output, len(chunk))
            self.take_row(call, chunk, matrix, rows)
            self.store_sync(call, chunk, matrix)
            self.release(call, chunk, rows)
        return len(indexes), output

    def store_sync(self, call: _Call, chunk: list[int], matrix: npt.NDArray[Any]) -> None:
        records = self.records(call, chunk, matrix)
        if not self.may_write(call, len(records)):
            return
        try:
            self.cache._sync().set_many(records)
        except BackendError as exc:
            self.write_failed(call, exc, len(records))
        else:
            self.cache._breaker.record_success()

    # -- async path: the same steps, awaiting ---------------------------------------------

    async def call_async(self, wrapped: Callable[..., Any], instance: Any,
                         args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.disabled or _bypassed.get():
            return await wrapped(*args, **kwargs)
        call = self.prepare(wrapped, instance, args, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        flights = self.cache._flights
        epoch = flights.finished
        rows, hinted = self.rows_from(await self.fetch_async(call, list(range(len(call.keys)))))
        misses = [i for i, row in enumerate(rows) if row is None]
        computed, direct = 0, None
        if misses:
            owned, waiting = self.claim(call, misses)
            try:
                if owned and flights.finished != epoch:
                    owned = self.take_hits(call, owned, rows, await self.fetch_async(call, owned))
                computed, direct = await self.compute_async(call, owned, rows)
            finally:
                self.release(call, owned, rows)
            for i, flight in waiting:
                rows[i] = await flight.wait_async(flights)
            leftovers = [i for i, _ in waiting if rows[i] is None]
            computed += (await self.compute_async(call, leftovers, rows))[0]
            if not self.direct_result(call, owned, direct):
                direct = None
        self.count(call, computed)
        return direct if direct is not None else self.finish(call, rows, hinted)

    async def fetch_async(self, call: _Call, indexes: list[int]) -> list[Any]:
        if not indexes:
            return []
        keys, digests = self.lookup_keys(call, indexes)
        if not self.cache._breaker.allow():
            self.backend_failed(call, None, len(keys))
            return [None] * len(keys)
        try:
            values = await self.cache._async().get_many(keys, self.cache.refresh_ttl_on_read)
        except BackendError as exc:
            self.backend_failed(call, exc, len(keys))
            return [None] * len(keys)
        return self.decoded(call, indexes, keys, digests, values)

    async def compute_async(self, call: _Call, indexes: list[int],
                            rows: list[Any]) -> tuple[int, Any]:
        output: Any = None
        for chunk in self.chunked(indexes):
            output = await self.invoke(call, [call.plan.unique[i] for i in chunk])
            matrix = self.read_output(call, output, len(chunk))
            self.take_row(call, chunk, matrix, rows)
            await self.store_async(call, chunk, matrix)
            self.release(call, chunk, rows)
        return len(indexes), output

    async def store_async(self, call: _Call, chunk: list[int], matrix: npt.NDArray[Any]) -> None:
        records = self.records(call, chunk, matrix)
        if not self.may_write(call, len(records)):
            return
        try:
            await self.cache._async().set_many(records)
        except BackendError as exc:
            self.write_failed(call, exc, len(records))
        else:
            self.cache._breaker.record_success()


def _is_async(function: Any) -> bool:
    """Whether calling ``function`` returns a coroutine (looks through wrappers and __call__)."""
    target = inspect.unwrap(function)
    if inspect.iscoroutinefunction(target):
        return True
    if not inspect.isfunction(target) and not inspect.ismethod(target) and callable(target):
        return inspect.iscoroutinefunction(inspect.unwrap(type(target).__call__))
    return False


if TYPE_CHECKING:  # wrapt 2 types its wrappers as generics; wrapt 1 cannot subscript them
    _FunctionWrapper = wrapt.FunctionWrapper[Any, Any]
    _BoundFunctionWrapper = wrapt.BoundFunctionWrapper[Any, Any]
else:
    _FunctionWrapper = wrapt.FunctionWrapper
    _BoundFunctionWrapper = wrapt.BoundFunctionWrapper


class _BoundCachedEmbedding(_BoundFunctionWrapper):
    """The decorated function bound to an instance or class: same controls."""

    @property
    def cache(self) -> EmbeddingsCache:
        return self._self_parent._self_memo.cache  # type: ignore[no-any-return]

    def cache_info(self) -> CacheInfo:
        return self._self_parent.cache_info()  # type: ignore[no-any-return]

    def cache_clear(self) -> None:
        self._self_parent.cache_clear()


class _CachedEmbedding(_FunctionWrapper):
    """The decorated function: a transparent wrapt proxy with cache controls."""

    __bound_function_wrapper__ = _BoundCachedEmbedding

    def __init__(self, wrapped: Any, wrapper: Any, memo: _Memoizer) -> None:
        super().__init__(wrapped, wrapper)
        self._self_memo = memo

    @property
    def cache(self) -> EmbeddingsCache:
        return self._self_memo.cache

    def cache_info(self) -> CacheInfo:
        return self._self_memo.counters.snapshot()

    def cache_clear(self) -> None:
        self._self_memo.cache.clear()
        self._self_memo.counters.reset()
