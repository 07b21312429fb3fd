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
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast, overload

import wrapt

from . import forms
from .cache import EmbeddingsCache
from .config import Settings, ttl_seconds
from .engine import Call, FunctionState
from .engine.flight import running_loop
from .errors import ConfigError, InvalidInputError, InvalidTypeError
from .keys import Text, UncanonicalValueError
from .stats import CacheInfo, logger

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
    def __get__(  # a classmethod read from its class: cls is bound
        self: CachedEmbeddingFunction[Concatenate[type[S], P2], R],
        instance: None,
        owner: type[S],
    ) -> CachedEmbeddingFunction[P2, R]: ...
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


class CachedEmbeddingDescriptor(Protocol[P, R_co]):
    """A decorated classmethod or staticmethod: read from its class or an instance, it is
    the decorated function with nothing left to bind."""

    def __get__(self, instance: Any, owner: Any) -> CachedEmbeddingFunction[P, R_co]: ...


class CachedEmbeddingDecorator(Protocol):
    """What ``cached_embedding(...)`` returns: apply it to the embed function."""

    @overload
    def __call__(
        self, function: classmethod[Any, P, R]
    ) -> CachedEmbeddingDescriptor[P, R]: ...
    @overload
    def __call__(  # type: ignore[overload-overlap]  # a staticmethod is callable too
        self, function: staticmethod[P, R]
    ) -> CachedEmbeddingDescriptor[P, R]: ...
    @overload
    def __call__(self, function: Callable[P, R]) -> CachedEmbeddingFunction[P, R]: ...


_RIGHT_FORM = '@cached_embedding(model="your-model-name")'
_TEXT_TYPES = frozenset({str, bytes})


def cached_embedding(
    model_name: str | None = None,
    /,
    *,
    model: str | Callable[[Any], str] | None = None,
    ttl: float | None = None,
    cache: EmbeddingsCache | None = None,
    name: str | None = None,
    url: str | None = None,
    ignore: Sequence[str] = (),
    text_arg: str | None = None,
    batch_size: int | None = None,
    on_error: str | None = None,
) -> CachedEmbeddingDecorator:
    """Memoize an embed function that takes a text or a list of texts.

    Args:
        model_name: The model name, given positionally (or use ``model=``).
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
            the function computes and the call succeeds; ``"raise"``: it propagates, and
            while the circuit breaker is open calls raise ``BackendError`` at once.

    Every other argument, with defaults applied, is part of the entry identity, so
    ``embed(t, dimensions=8)`` and ``embed(t, dimensions=16)`` never share an entry.
    Decoration never connects.
    """
    if model_name is not None:
        if callable(model_name) and not isinstance(model_name, str):
            raise InvalidTypeError(
                f"@cached_embedding needs the model name: write {_RIGHT_FORM} above "
                f"{getattr(model_name, '__qualname__', 'the function')}")
        if model is not None:
            raise InvalidTypeError("give the model name once: positionally or as model=")
        model = model_name
    if model is None:
        raise InvalidTypeError(f"cached_embedding() needs model=, as in {_RIGHT_FORM}")
    if not (isinstance(model, str) and model) and not callable(model):
        raise InvalidInputError("model must be a non-empty str or a callable returning one")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise InvalidInputError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if isinstance(ignore, str):
        raise InvalidTypeError("ignore must be a sequence of argument names, not a str")
    settings = Settings.deferred(on_error=on_error)  # EMBMEMO_* are read at the first call
    write_ttl = ttl_seconds(ttl)
    if cache is None:
        cache = EmbeddingsCache(name=name, ttl=ttl, url=url)
    elif name is not None or url is not None:
        raise ConfigError("give either cache= or name=/url=, not both")
    options = {"model": model, "ttl": ttl, "cache": cache, "ignore": tuple(ignore),
               "text_arg": text_arg, "batch_size": batch_size, "on_error": on_error}
    chosen_model = model

    def decorate(function: Callable[..., Any]) -> Any:
        label = getattr(function, "__qualname__", type(function).__name__)
        state = FunctionState(label, write_ttl, batch_size)
        decorated = _Decorated(function, cache, chosen_model, tuple(ignore), text_arg,
                               settings, state)
        wrapper = decorated.call_async if decorated.is_async else decorated.call_sync
        return _CachedEmbedding(function, wrapper, decorated, options)

    return cast(CachedEmbeddingDecorator, decorate)


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
        parameters = list(signature.parameters.values())
        self.defaults: dict[str, Any] | None = None
        """When the text comes first and every other parameter has a default (and there is
        no *args or **kwargs), those defaults: a call with just the text needs no bind."""
        if parameters[0].name == text_arg and all(
                p.default is not p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                for p in parameters[1:]):
            self.defaults = {p.name: p.default for p in parameters[1:]}


class _Decorated:
    """One decorated function: how to bind its arguments into an engine ``Call``."""

    def __init__(
        self,
        function: Callable[..., Any],
        cache: EmbeddingsCache,
        model: str | Callable[[Any], str],
        ignore: tuple[str, ...],
        text_arg: str | None,
        settings: Callable[[], Settings],
        state: FunctionState,
    ) -> None:
        self.cache = cache
        self.model = model
        self.ignore = frozenset(ignore)
        self.settings = settings
        self.warned_in_loop = False
        self.disabled: bool | None = None
        """``EMBMEMO_DISABLE``, read at the first call (None before)."""
        self.state = state
        self.label = state.label
        self.is_static = isinstance(function, staticmethod)
        underlying = function.__func__ if isinstance(function, (classmethod, staticmethod)) \
            else function
        self.is_async = _is_async(underlying)
        full = inspect.signature(underlying)
        self._text_arg = text_arg
        self._full = full
        self._as_method: _Signature | None = None
        self.unbound = (
            _Signature(full, text_arg, self.label)
            if not isinstance(function, classmethod) else self.method_signature()
        )
        unknown = self.ignore - set(full.parameters)
        if unknown and not any(p.kind == p.VAR_KEYWORD for p in full.parameters.values()):
            raise InvalidInputError(f"ignore names unknown parameters {sorted(unknown)} of "
                                    f"{self.label}")

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
                kwargs: dict[str, Any]) -> Call | None:
        """Bind and validate; None when the arguments do not fit (the function will say)."""
        spec = (self.method_signature() if instance is not None and not self.is_static
                else self.unbound)
        bound: inspect.BoundArguments | None = None
        if spec.defaults is not None and len(args) == 1 and not kwargs:  # embed(texts)
            value, arguments = args[0], spec.defaults
        else:
            try:
                bound = spec.signature.bind(*args, **kwargs)
            except TypeError:
                return None
            bound.apply_defaults()
            value, arguments = bound.arguments[spec.text_arg], bound.arguments
        texts: Sequence[Text]
        if isinstance(value, (str, bytes)):
            single, texts = True, [value]
        elif isinstance(value, (list, tuple)):
            single, texts = False, value
            if not set(map(type, texts)) <= _TEXT_TYPES:  # one pass in C; the loop names it
                for index, text in enumerate(texts):
                    if not isinstance(text, (str, bytes)):
                        raise InvalidTypeError(
                            f"{self.label}: {spec.text_arg}[{index}] must be str or bytes, "
                            f"got {type(text).__name__}")
        else:
            hint = " (pass .tolist())" if hasattr(value, "tolist") else ""
            raise InvalidTypeError(
                f"{self.label}: {spec.text_arg!r} must be a str, bytes, or a list/tuple of "
                f"them, got {type(value).__name__}{hint}")
        params = ({k: v for k, v in arguments.items()
                   if k != spec.text_arg and k not in self.ignore} if arguments else {})
        if spec.var_keyword in params and self.ignore:  # ignore= applies inside **kwargs too
            params[spec.var_keyword] = {k: v for k, v in params[spec.var_keyword].items()
                                        if k not in self.ignore}
        model_name = self.model if isinstance(self.model, str) else self.model(instance)
        if not isinstance(model_name, str) or not model_name:
            raise InvalidInputError(f"{self.label}: the model callable must return a non-empty "
                                    f"str, got {model_name!r}")
        plan = forms.plan(texts)
        try:
            keys, digests = self.cache.store.keys(plan.unique, model_name, params)
        except UncanonicalValueError as exc:
            name = exc.parameter
            raise InvalidTypeError(
                f"{self.label}: argument {name!r} ({type(params.get(name or '')).__name__}) has "
                f"no stable canonical form to key the cache on; if it does not change the "
                f"output, pass ignore=({name!r},) to @cached_embedding") from None

        def invoke(batch: list[Text]) -> Any:
            """The wrapped function on ``batch`` (the original arguments for one text)."""
            if single:
                return wrapped(*args, **kwargs)
            if bound is None:
                return wrapped(batch)
            bound.arguments[spec.text_arg] = batch  # same position, as a list
            return wrapped(*bound.args, **bound.kwargs)

        return Call(self.state, plan, single, model_name, params, keys, digests, invoke)

    def caching(self) -> bool:
        """Whether this call caches: not under ``bypass()`` nor ``EMBMEMO_DISABLE=1``
        (the settings are resolved at the first call)."""
        if self.disabled is None:
            settings = self.settings()
            self.state.raise_errors = settings.on_error == "raise"
            self.disabled = settings.disable
        return not (self.disabled or _bypassed.get())

    def call_sync(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Any:
        call = self.prepare(wrapped, instance, args, kwargs) if self.caching() else None
        if call is None:
            return wrapped(*args, **kwargs)
        if not self.warned_in_loop and running_loop() is not None:
            self.warned_in_loop = True
            logger.warning("embmemo: %s (a sync function) was called inside a running event "
                           "loop, which it blocks while the cache answers; decorate an "
                           "`async def`, or call it through `asyncio.to_thread`", self.label)
        return self.cache.engine.run(call)

    async def call_async(self, wrapped: Callable[..., Any], instance: Any,
                         args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = self.prepare(wrapped, instance, args, kwargs) if self.caching() else None
        if call is None:
            return await wrapped(*args, **kwargs)
        return await self.cache.engine.arun(call)


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
        return self._self_parent.cache  # type: ignore[no-any-return]

    def cache_info(self) -> CacheInfo:
        return self._self_parent.cache_info()  # type: ignore[no-any-return]

    def cache_clear(self) -> None:
        self._self_parent.cache_clear()

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        """Pickle like a bound method: the instance (or class) and the attribute name."""
        owner = self._self_instance if self._self_instance is not None else self._self_owner
        return getattr, (owner, self.__name__)

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__reduce_ex__(2)


class _CachedEmbedding(_FunctionWrapper):
    """The decorated function: a transparent wrapt proxy with cache controls."""

    __bound_function_wrapper__ = _BoundCachedEmbedding

    def __init__(self, wrapped: Any, wrapper: Any, decorated: _Decorated,
                 options: dict[str, Any]) -> None:
        super().__init__(wrapped, wrapper)
        self._self_decorated = decorated
        self._self_options = options

    @property
    def cache(self) -> EmbeddingsCache:
        return self._self_decorated.cache

    def cache_info(self) -> CacheInfo:
        return self._self_decorated.state.counters.snapshot()

    def cache_clear(self) -> None:
        self._self_decorated.cache.clear()
        self._self_decorated.state.counters.reset()

    def __reduce_ex__(self, protocol: Any) -> str | tuple[Any, ...]:
        """Pickle a module-level function by reference, as pickle does the plain function;
        anything else (a decorated callable object, ...) by value: the object and the
        decorator's arguments, so the copy caches alike (with its own counters)."""
        module = sys.modules.get(getattr(self, "__module__", None) or "")
        qualname = getattr(self, "__qualname__", None)
        if module is not None and isinstance(qualname, str):
            found: Any = module
            for part in qualname.split("."):
                found = getattr(found, part, None)
            if found is self:
                return qualname
        return _rebuild, (self.__wrapped__, self._self_options)

    def __reduce__(self) -> str | tuple[Any, ...]:
        return self.__reduce_ex__(2)

    def __copy__(self) -> Self:
        return self  # like a function: copying gives the same object

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self


def _rebuild(function: Any, options: dict[str, Any]) -> Any:
    """An unpickled decorated object: decorated again with the same arguments."""
    return cached_embedding(**options)(function)
