"""``EmbeddingsCache``: the explicit cache object, sync methods and their async twins.

Every method validates its whole input first (pure, no I/O), makes one backend call,
then decodes. Single-item methods are the batch methods with one item.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from . import codec
from ._flight import Flights
from .backends import (
    AsyncBackend,
    Backend,
    Record,
    describe_client,
    open_async_backend,
    open_backend,
    wrap_client,
)
from .breaker import CircuitBreaker
from .codec import CacheEntry
from .config import Settings, ttl_ms, ttl_seconds
from .errors import ConfigError, InvalidInputError, InvalidTypeError
from .keys import KeyScheme, Text, encode_text, identity_prefix, model_identity, text_digest
from .stats import CacheInfo, Counters, RateLimitedLog

if TYPE_CHECKING:
    from typing_extensions import Self

Params = Mapping[str, object]
_ITEM_FIELDS = frozenset({"text", "model_name", "embedding", "metadata", "ttl", "model_params"})
_corrupt_log = RateLimitedLog()


def _item_fields(item: object) -> tuple[Any, Any, Any, Any, Any, Any]:
    """(text, model_name, model_params, embedding, ttl, metadata) of one mset item."""
    if not isinstance(item, Mapping):
        raise InvalidTypeError(f"each item must be a dict, got {type(item).__name__}")
    if not item.keys() <= _ITEM_FIELDS:
        raise InvalidInputError(f"unknown field(s) {sorted(item.keys() - _ITEM_FIELDS)}")
    try:
        return (item["text"], item["model_name"], item.get("model_params"), item["embedding"],
                item.get("ttl"), item.get("metadata"))
    except KeyError as missing:
        raise InvalidInputError(f"missing field {missing}") from None


class _RecordEncoder:
    """Validates and encodes records for one batch, reusing per-model work (digest prefix,
    model name bytes)."""

    def __init__(self, prefix: str, dtype: Any) -> None:
        self.prefix = prefix
        self.dtype = dtype
        self.now = time.time()
        self._models: dict[str, tuple[bytes, bytes]] = {}

    def _model(self, model_name: str, model_params: Params | None) -> tuple[bytes, bytes]:
        known = None if model_params else self._models.get(model_name)
        if known is None:
            identity = model_identity(model_name, model_params)
            known = (identity_prefix(identity), model_name.encode("utf-8", "surrogatepass"))
            if not model_params:  # params dicts may be mutated between items: not kept
                self._models[model_name] = known
        return known

    def encode(
        self,
        text: Text,
        model_name: str,
        model_params: Params | None,
        embedding: Any,
        entry_ttl_ms: int | None,
        metadata: object,
        output_hint: int = 0,
    ) -> Record:
        """One validated, encoded record."""
        digest_prefix, model_bytes = self._model(model_name, model_params)
        tag, text_bytes = encode_text(text)
        vector, dimension = codec.vector_bytes(embedding, self.dtype)
        digest = text_digest(digest_prefix, tag, text_bytes)
        key = self.prefix + digest.hex()
        value = codec.encode(
            digest, tag == b"b", text_bytes, model_bytes, vector, dimension, self.dtype,
            codec.metadata_json(metadata), entry_ttl_ms or 0, self.now, output_hint,
        )
        return Record(key, value, entry_ttl_ms)


def _text_list(texts: object) -> Sequence[Text]:
    if isinstance(texts, (str, bytes)) or not isinstance(texts, (list, tuple)):
        raise InvalidTypeError(
            f"texts must be a list or tuple of str/bytes, got {type(texts).__name__}"
        )
    return texts


def _key_list(keys: object) -> Sequence[str]:
    if isinstance(keys, (str, bytes)) or not isinstance(keys, (list, tuple)):
        raise InvalidTypeError(f"keys must be a list or tuple of str, got {type(keys).__name__}")
    return keys


class EmbeddingsCache:
    """A cache of text embeddings in Redis, Redis Cluster, SQLite or memory.

    Args:
        name: Key namespace; every key is ``{name}:{64 hex}``. Default: ``EMBMEMO_NAME``,
            else ``"embedcache"``.
        ttl: Default time to live in seconds. None: ``EMBMEMO_TTL``, else no expiry.
        url: Backend URL (``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``,
            ``sqlite:///path``, ``memory://``). Default: ``EMBMEMO_URL``, else the
            embedded SQLite file in the user cache directory.
        redis_url: The same as ``url`` (RedisVL's spelling).
        redis_client: An existing ``redis.Redis`` (or ``RedisCluster``) for the sync methods.
        async_redis_client: An existing ``redis.asyncio.Redis`` for the async methods.
        connection_kwargs: Redis client settings that override embmemo's defaults
            (``socket_timeout``, ``max_connections``, ``ssl_ca_certs``, ...).
        refresh_ttl_on_read: Reads give hits their TTL again (sliding expiry).
            Default: ``EMBMEMO_REFRESH_TTL``, else True.
        dtype: Storage dtype: ``"float32"`` (default), ``"float16"`` (half the memory)
            or ``"float64"``.

    Construction never connects; the first operation does.
    """

    def __init__(
        self,
        name: str | None = None,
        ttl: float | None = None,
        *,
        url: str | None = None,
        redis_url: str | None = None,
        redis_client: Any = None,
        async_redis_client: Any = None,
        connection_kwargs: Mapping[str, Any] | None = None,
        refresh_ttl_on_read: bool | None = None,
        dtype: str = "float32",
    ) -> None:
        if url is not None and redis_url is not None and url != redis_url:
            raise ConfigError("give url or redis_url, not two different URLs")
        self._settings = Settings.resolve(
            url=url or redis_url or (_client_url(redis_client, async_redis_client)),
            name=name,
            ttl=ttl,
            refresh_ttl=refresh_ttl_on_read,
        )
        self._scheme = KeyScheme(self._settings.name)
        self._dtype = codec.dtype_for(dtype)
        self._connection_kwargs = dict(connection_kwargs or {})
        self._redis_client = redis_client
        self._async_redis_client = async_redis_client
        self._backend: Backend | None = None
        self._async_backend: AsyncBackend | None = None
        self._open_lock = threading.Lock()
        self._counters = Counters()
        self._breaker = CircuitBreaker()  # the decorator's fail-open state, shared per cache
        self._flights = Flights()  # the decorator's single-flight registry, per cache

    # -- configuration ------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The key namespace."""
        return self._settings.name

    @property
    def ttl(self) -> float | None:
        """The default time to live in seconds, or None."""
        return self._settings.ttl

    @property
    def url(self) -> str:
        """The backend URL with any password redacted."""
        return self._settings.redacted_url

    @property
    def dtype(self) -> str:
        """The storage dtype name."""
        return str(self._dtype.name)

    @property
    def refresh_ttl_on_read(self) -> bool:
        """Whether reads slide the TTL of hits."""
        return self._settings.refresh_ttl

    @property
    def settings(self) -> Settings:
        """The resolved settings (the URL inside is not redacted: do not log it)."""
        return self._settings

    def __repr__(self) -> str:
        return (
            f"EmbeddingsCache(name={self.name!r}, url={self.url!r}, ttl={self.ttl!r}, "
            f"dtype={self.dtype!r})"
        )

    def stats(self) -> CacheInfo:
        """Hits, misses, errors and corrupt values seen by this cache object's reads."""
        return self._counters.snapshot()

    def _entries(self, chunk: int = 1000) -> Iterator[tuple[CacheEntry, int]]:
        """Every valid entry of the namespace with its stored size (for ``embmemo stats``);
        reads do not refresh TTLs."""
        backend = self._sync()
        keys = backend.scan_keys(self.name, self._scheme.scan_pattern())
        for start in range(0, len(keys), chunk):
            part = keys[start:start + chunk]
            values = backend.get_many(part, False)
            entries, _ = codec.decode_many(values, part, self._key_digests(part))
            for entry, value in zip(entries, values):
                if entry is not None and value is not None:
                    yield entry, len(value)

    def key(self, text: Text, model_name: str, *, model_params: Params | None = None) -> str:
        """The key an entry for (text, model) is stored under. Pure: no I/O."""
        return self._request_keys([text], model_name, model_params)[0][0]

    # -- pure preparation -----------------------------------------------------------------

    def _request_keys(
        self, texts: Sequence[Text], model_name: str, model_params: Params | None
    ) -> tuple[list[str], list[bytes]]:
        return self._scheme.keys(texts, model_identity(model_name, model_params))

    def _key_digests(self, keys: Sequence[str]) -> list[bytes]:
        return [self._scheme.digest_of(key) for key in _key_list(keys)]

    def _records(
        self, items: Sequence[Mapping[str, Any]], batch_ttl: float | None
    ) -> tuple[list[str], list[Record]]:
        """Validate every item, then encode them all; nothing is written on any error."""
        if not isinstance(items, (list, tuple)):
            raise InvalidTypeError(f"items must be a list of dicts, got {type(items).__name__}")
        default_ttl = ttl_seconds(batch_ttl) if batch_ttl is not None else self.ttl
        encoder = _RecordEncoder(self._scheme.prefix, self._dtype)
        keys: list[str] = []
        records: dict[str, Record] = {}  # one write per key: the last item for a key wins
        default_ms = ttl_ms(default_ttl)
        with codec.quiet_float_errors():
            for index, item in enumerate(items):
                try:
                    text, model_name, params, embedding, item_ttl, metadata = _item_fields(item)
                    entry_ms = default_ms if item_ttl is None else ttl_ms(ttl_seconds(item_ttl))
                    record = encoder.encode(text, model_name, params, embedding, entry_ms,
                                            metadata)
                except (InvalidInputError, InvalidTypeError) as exc:
                    raise type(exc)(f"items[{index}]: {exc}") from None
                keys.append(record.key)
                records[record.key] = record
        return keys, list(records.values())

    def _computed_records(
        self,
        texts: Sequence[Text],
        model_name: str,
        model_params: Params | None,
        rows: Sequence[Any] | npt.NDArray[Any],
        ttl: float | None,
        output_hint: int,
    ) -> list[Record]:
        """Records for embeddings a decorated function just computed (already checked)."""
        encoder = _RecordEncoder(self._scheme.prefix, self._dtype)
        entry_ttl_ms = ttl_ms(ttl if ttl is not None else self.ttl)
        with codec.quiet_float_errors():
            return [
                encoder.encode(text, model_name, model_params, row, entry_ttl_ms, None,
                               output_hint)
                for text, row in zip(texts, rows)
            ]

    @staticmethod
    def _single_item(
        text: Text,
        model_name: str,
        embedding: Any,
        metadata: dict[str, Any] | None,
        ttl: float | None,
        model_params: Params | None,
    ) -> list[Mapping[str, Any]]:
        item: dict[str, Any] = {"text": text, "model_name": model_name, "embedding": embedding}
        if metadata is not None:
            item["metadata"] = metadata
        if ttl is not None:
            item["ttl"] = ttl
        if model_params:
            item["model_params"] = model_params
        return [item]

    def _decode(
        self,
        keys: Sequence[str],
        digests: Sequence[bytes],
        values: Sequence[bytes | None],
        model_name: str | None,
        texts: Sequence[Text] | None = None,
        corrupt_also_to: Counters | None = None,
    ) -> list[CacheEntry | None]:
        """Decode and verify; count hits, misses and corrupt values (corrupt ones also in
        ``corrupt_also_to``, the decorator's counters). ``texts``: what the keys were
        computed from, when they were."""
        entries, corrupt = codec.decode_many(values, keys, digests, model_name, texts)
        if corrupt:
            if corrupt_also_to is not None:
                corrupt_also_to.add(corrupt=corrupt)
            _corrupt_log.warning(
                "corrupt", "embmemo: ignored %d stored value(s) that failed verification, "
                "e.g. %s", corrupt,
                next(k for k, v, e in zip(keys, values, entries) if v is not None and e is None),
            )
        # Counting None among the values, not the entries: a CacheEntry's __eq__ would run
        # for every hit.
        hits = len(entries) - values.count(None) - corrupt
        self._counters.add(hits=hits, misses=len(entries) - hits, corrupt=corrupt)
        return entries

    # -- backends -------------------------------------------------------------------------

    def _sync(self) -> Backend:
        backend = self._backend
        if backend is None:
            with self._open_lock:
                if self._backend is None:
                    self._backend = self._open(asynchronous=False)
                backend = self._backend
        return backend

    def _async(self) -> AsyncBackend:
        backend = self._async_backend
        if backend is None:
            with self._open_lock:
                if self._async_backend is None:
                    self._async_backend = self._open(asynchronous=True)
                backend = self._async_backend
        return backend

    def _open(self, asynchronous: bool) -> Any:
        given = self._async_redis_client if asynchronous else self._redis_client
        other = self._redis_client if asynchronous else self._async_redis_client
        timeout, kwargs = self._settings.timeout, self._connection_kwargs
        if given is not None:
            return wrap_client(given, asynchronous, timeout=timeout, connection_kwargs=kwargs)
        if other is not None:
            raise ConfigError(
                f"this cache was given only {'a sync' if asynchronous else 'an async'} Redis "
                f"client; pass {'async_redis_client' if asynchronous else 'redis_client'} "
                f"to use the {'async' if asynchronous else 'sync'} methods"
            )
        opener = open_async_backend if asynchronous else open_backend
        return opener(self._settings.url, timeout=timeout, connection_kwargs=kwargs)

    # -- sync API -------------------------------------------------------------------------

    def set(
        self,
        text: Text,
        model_name: str,
        embedding: Any,
        metadata: dict[str, Any] | None = None,
        ttl: float | None = None,
        *,
        model_params: Params | None = None,
    ) -> str:
        """Store one embedding and return its key.

        Args:
            text: The text (or bytes) that was embedded.
            model_name: The model that embedded it.
            embedding: A non-empty 1-D list, tuple or numpy array of finite numbers.
            metadata: A JSON-serializable dict stored with the entry.
            ttl: Time to live in seconds for this entry (default: the cache's).
            model_params: Output-affecting parameters (e.g. ``{"dimensions": 256}``)
                that are part of the entry's identity.
        """
        return self.mset(self._single_item(text, model_name, embedding, metadata, ttl,
                                           model_params))[0]

    def get(
        self, text: Text, model_name: str, *, model_params: Params | None = None
    ) -> CacheEntry | None:
        """The entry for (text, model), or None. Refreshes the TTL of a hit by default."""
        return self.mget([text], model_name, model_params=model_params)[0]

    def exists(self, text: Text, model_name: str, *, model_params: Params | None = None) -> bool:
        """Whether an entry for (text, model) is stored (does not refresh its TTL)."""
        return self.mexists([text], model_name, model_params=model_params)[0]

    def drop(self, text: Text, model_name: str, *, model_params: Params | None = None) -> None:
        """Delete the entry for (text, model) if there is one."""
        self.mdrop([text], model_name, model_params=model_params)

    def get_by_key(self, key: str) -> CacheEntry | None:
        """The entry stored under ``key``, or None."""
        return self.mget_by_keys([key])[0]

    def exists_by_key(self, key: str) -> bool:
        """Whether ``key`` holds an entry."""
        return self.mexists_by_keys([key])[0]

    def drop_by_key(self, key: str) -> None:
        """Delete the entry stored under ``key``."""
        self.mdrop_by_keys([key])

    def mset(self, items: Sequence[Mapping[str, Any]], ttl: float | None = None) -> list[str]:
        """Store many embeddings in one round trip per chunk; return their keys in order.

        Each item is a dict with ``text``, ``model_name``, ``embedding`` and optionally
        ``metadata``, ``ttl`` and ``model_params``. An item's ``ttl`` overrides ``ttl``
        here, which overrides the cache default. The whole batch is validated before
        anything is written.
        """
        keys, records = self._records(items, ttl)
        if records:
            self._sync().set_many(records)
        return keys

    def mget(
        self, texts: Sequence[Text], model_name: str, *, model_params: Params | None = None
    ) -> list[CacheEntry | None]:
        """Entries for many texts of one model, in input order (None for misses)."""
        texts = _text_list(texts)
        keys, digests = self._request_keys(texts, model_name, model_params)
        values = self._sync().get_many(keys, self.refresh_ttl_on_read) if keys else []
        return self._decode(keys, digests, values, model_name, texts)

    def mexists(
        self, texts: Sequence[Text], model_name: str, *, model_params: Params | None = None
    ) -> list[bool]:
        """Whether each text has an entry for the model, in input order."""
        keys, _ = self._request_keys(_text_list(texts), model_name, model_params)
        return self._sync().exists_many(keys) if keys else []

    def mdrop(
        self, texts: Sequence[Text], model_name: str, *, model_params: Params | None = None
    ) -> None:
        """Delete the entries for many texts of one model."""
        keys, _ = self._request_keys(_text_list(texts), model_name, model_params)
        if keys:
            self._sync().delete_many(keys)

    def mget_by_keys(self, keys: Sequence[str]) -> list[CacheEntry | None]:
        """Entries stored under many keys, in input order (None for misses)."""
        digests = self._key_digests(keys)
        values = self._sync().get_many(keys, self.refresh_ttl_on_read) if keys else []
        return self._decode(keys, digests, values, None)

    def mexists_by_keys(self, keys: Sequence[str]) -> list[bool]:
        """Whether each key holds an entry, in input order."""
        self._key_digests(keys)
        return self._sync().exists_many(keys) if keys else []

    def mdrop_by_keys(self, keys: Sequence[str]) -> None:
        """Delete the entries stored under many keys."""
        self._key_digests(keys)
        if keys:
            self._sync().delete_many(keys)

    def clear(self) -> int:
        """Delete every entry of this namespace, and nothing else; return how many."""
        return self._sync().clear(self.name, self._scheme.scan_pattern())

    def close(self) -> None:
        """Release the sync backend's connections (use ``aclose`` for the async one)."""
        with self._open_lock:
            backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- async API: the same, awaiting the async backend -------------------------------

    async def aset(
        self,
        text: Text,
        model_name: str,
        embedding: Any,
        metadata: dict[str, Any] | None = None,
        ttl: float | None = None,
        *,
        model_params: Params | None = None,
    ) -> str:
        """Async ``set``."""
        return (await self.amset(self._single_item(text, model_name, embedding, metadata, ttl,
                                                   model_params)))[0]

    async def aget(
        self, text: Text, model_name: str, *, model_params: Params | None = None
    ) -> CacheEntry | None:
        """Async ``get``."""
        return (await self.amget([text], model_name, model_params=model_params))[0]

    async def aexists(
        self, text: Text, model_name: str, *, model_params: Params | None = None
    ) -> bool:
        """Async ``exists``."""
        return (await self.amexists([text], model_name, model_params=model_params))[0]

    async def adrop(
        self, text: Text, model_name: str, *, model_params: Params | None = None
    ) -> None:
        """Async ``drop``."""
        await self.amdrop([text], model_name, model_params=model_params)

    async def aget_by_key(self, key: str) -> CacheEntry | None:
        """Async ``get_by_key``."""
        return (await self.amget_by_keys([key]))[0]

    async def aexists_by_key(self, key: str) -> bool:
        """Async ``exists_by_key``."""
        return (await self.amexists_by_keys([key]))[0]

    async def adrop_by_key(self, key: str) -> None:
        """Async ``drop_by_key``."""
        await self.amdrop_by_keys([key])

    async def amset(
        self, items: Sequence[Mapping[str, Any]], ttl: float | None = None
    ) -> list[str]:
        """Async ``mset``."""
        keys, records = self._records(items, ttl)
        if records:
            await self._async().set_many(records)
        return keys

    async def amget(
        self, texts: Sequence[Text], model_name: str, *, model_params: Params | None = None
    ) -> list[CacheEntry | None]:
        """Async ``mget``."""
        texts = _text_list(texts)
        keys, digests = self._request_keys(texts, model_name, model_params)
        values = await self._async().get_many(keys, self.refresh_ttl_on_read) if keys else []
        return self._decode(keys, digests, values, model_name, texts)

    async def amexists(
        self, texts: Sequence[Text], model_name: str, *, model_params: Params | None = None
    ) -> list[bool]:
        """Async ``mexists``."""
        keys, _ = self._request_keys(_text_list(texts), model_name, model_params)
        return await self._async().exists_many(keys) if keys else []

    async def amdrop(
        self, texts: Sequence[Text], model_name: str, *, model_params: Params | None = None
    ) -> None:
        """Async ``mdrop``."""
        keys, _ = self._request_keys(_text_list(texts), model_name, model_params)
        if keys:
            await self._async().delete_many(keys)

    async def amget_by_keys(self, keys: Sequence[str]) -> list[CacheEntry | None]:
        """Async ``mget_by_keys``."""
        digests = self._key_digests(keys)
        values = await self._async().get_many(keys, self.refresh_ttl_on_read) if keys else []
        return self._decode(keys, digests, values, None)

    async def amexists_by_keys(self, keys: Sequence[str]) -> list[bool]:
        """Async ``mexists_by_keys``."""
        self._key_digests(keys)
        return await self._async().exists_many(keys) if keys else []

    async def amdrop_by_keys(self, keys: Sequence[str]) -> None:
        """Async ``mdrop_by_keys``."""
        self._key_digests(keys)
        if keys:
            await self._async().delete_many(keys)

    async def aclear(self) -> int:
        """Async ``clear``."""
        return await self._async().clear(self.name, self._scheme.scan_pattern())

    async def aclose(self) -> None:
        """Release the async backend's connections, and the sync backend's too."""
        with self._open_lock:
            backend, self._async_backend = self._async_backend, None
        if backend is not None:
            await backend.close()
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _client_url(redis_client: Any, async_redis_client: Any) -> str | None:
    """A placeholder URL naming the given client's server, for display and settings."""
    client = redis_client if redis_client is not None else async_redis_client
    if client is None:
        return None
    return describe_client(client)

