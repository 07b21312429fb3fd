"""``EmbeddingsCache``: the explicit cache object, sync methods and their async twins.

Every method validates its whole input first (pure, no I/O), makes one backend call,
then decodes. Single-item methods are the batch methods with one item.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .backends import describe_client
from .codec import CacheEntry
from .config import Settings
from .engine import LookupEngine
from .errors import ConfigError, InvalidTypeError
from .keys import Text
from .stats import CacheInfo
from .store import EntryStore, Params

if TYPE_CHECKING:
    from typing_extensions import Self


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
        settings = Settings.resolve(
            url=url or redis_url or (_client_url(redis_client, async_redis_client)),
            name=name,
            ttl=ttl,
            refresh_ttl=refresh_ttl_on_read,
        )
        self._setup(EntryStore(settings, dtype, connection_kwargs=connection_kwargs,
                               redis_client=redis_client,
                               async_redis_client=async_redis_client))

    def _setup(self, store: EntryStore) -> None:
        self._store = store
        self._engine: LookupEngine | None = None
        self._engine_lock = threading.Lock()

    # -- configuration ------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The key namespace."""
        return self._store.name

    @property
    def ttl(self) -> float | None:
        """The default time to live in seconds, or None."""
        return self._store.settings.ttl

    @property
    def url(self) -> str:
        """The backend URL with any password redacted."""
        return self._store.settings.redacted_url

    @property
    def dtype(self) -> str:
        """The storage dtype name."""
        return str(self._store.dtype.name)

    @property
    def refresh_ttl_on_read(self) -> bool:
        """Whether reads slide the TTL of hits."""
        return self._store.refresh_ttl_on_read

    @property
    def settings(self) -> Settings:
        """The resolved settings (the URL inside is not redacted: do not log it)."""
        return self._store.settings

    @property
    def store(self) -> EntryStore:
        """The layer below this API: keys, records and backends (see ``embmemo.store``)."""
        return self._store

    @property
    def engine(self) -> LookupEngine:
        """The lookup engine of decorated functions using this cache: their single flight
        and circuit breaker, shared by every function on this cache."""
        engine = self._engine
        if engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine = LookupEngine(self._store)
                engine = self._engine
        return engine

    def __repr__(self) -> str:
        return (
            f"EmbeddingsCache(name={self.name!r}, url={self.url!r}, ttl={self.ttl!r}, "
            f"dtype={self.dtype!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle by configuration: the copy reconnects lazily in its own process."""
        store = self._store
        if store.redis_client is not None or store.async_redis_client is not None:
            raise TypeError(
                "an EmbeddingsCache built from a Redis client object cannot be pickled (the "
                "connection cannot travel); build it from a URL to send it to other processes"
            )
        return (_restore, (store.settings, self.dtype, store.connection_kwargs))

    def stats(self) -> CacheInfo:
        """Hits, misses, errors and corrupt values seen by this cache object's reads."""
        return self._store.counters.snapshot()

    def key(self, text: Text, model_name: str, *, model_params: Params | None = None) -> str:
        """The key an entry for (text, model) is stored under. Pure: no I/O."""
        return self._store.keys([text], model_name, model_params)[0][0]

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
        keys, records = self._store.records(items, ttl)
        if records:
            self._store.backend().set_many(records)
        return keys

    def mget(
        self, texts: Sequence[Text], model_name: str, *, model_params: Params | None = None
    ) -> list[CacheEntry | None]:
        """Entries for many texts of one model, in input order (None for misses)."""
        texts = _text_list(texts)
        keys, digests = self._store.keys(texts, model_name, model_params)
        backend = self._store.backend()
        values = backend.get_many(keys) if keys else []
        entries = self._store.decode(keys, digests, values, model_name, texts)
        self._store.slide(backend, keys, entries)
        return entries

    def mexists(
        self, texts: Sequence[Text], model_name: str, *, model_params: Params | None = None
    ) -> list[bool]:
        """Whether each text has an entry for the model, in input order."""
        keys, _ = self._store.keys(_text_list(texts), model_name, model_params)
        return self._store.backend().exists_many(keys) if keys else []

    def mdrop(
        self, texts: Sequence[Text], model_name: str, *, model_params: Params | None = None
    ) -> None:
        """Delete the entries for many texts of one model."""
        keys, _ = self._store.keys(_text_list(texts), model_name, model_params)
        if keys:
            self._store.backend().delete_many(keys)

    def mget_by_keys(self, keys: Sequence[str]) -> list[CacheEntry | None]:
        """Entries stored under many keys, in input order (None for misses)."""
        digests = self._store.key_digests(_key_list(keys))
        backend = self._store.backend()
        values = backend.get_many(keys) if keys else []
        entries = self._store.decode(keys, digests, values, None)
        self._store.slide(backend, keys, entries)
        return entries

    def mexists_by_keys(self, keys: Sequence[str]) -> list[bool]:
        """Whether each key holds an entry, in input order."""
        self._store.key_digests(_key_list(keys))
        return self._store.backend().exists_many(keys) if keys else []

    def mdrop_by_keys(self, keys: Sequence[str]) -> None:
        """Delete the entries stored under many keys."""
        self._store.key_digests(_key_list(keys))
        if keys:
            self._store.backend().delete_many(keys)

    def clear(self) -> int:
        """Delete every entry of this namespace, and nothing else; return how many."""
        return self._store.backend().clear(self.name, self._store.scheme.scan_pattern())

    def close(self) -> None:
        """Release the sync backend's connections (use ``aclose`` for the async one)."""
        self._store.close()

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
        keys, records = self._store.records(items, ttl)
        if records:
            await self._store.async_backend().set_many(records)
        return keys

    async def amget(
        self, texts: Sequence[Text], model_name: str, *, model_params: Params | None = None
    ) -> list[CacheEntry | None]:
        """Async ``mget``."""
        texts = _text_list(texts)
        keys, digests = self._store.keys(texts, model_name, model_params)
        backend = self._store.async_backend()
        values = await backend.get_many(keys) if keys else []
        entries = self._store.decode(keys, digests, values, model_name, texts)
        await self._store.aslide(backend, keys, entries)
        return entries

    async def amexists(
        self, texts: Sequence[Text], model_name: str, *, model_params: Params | None = None
    ) -> list[bool]:
        """Async ``mexists``."""
        keys, _ = self._store.keys(_text_list(texts), model_name, model_params)
        return await self._store.async_backend().exists_many(keys) if keys else []

    async def amdrop(
        self, texts: Sequence[Text], model_name: str, *, model_params: Params | None = None
    ) -> None:
        """Async ``mdrop``."""
        keys, _ = self._store.keys(_text_list(texts), model_name, model_params)
        if keys:
            await self._store.async_backend().delete_many(keys)

    async def amget_by_keys(self, keys: Sequence[str]) -> list[CacheEntry | None]:
        """Async ``mget_by_keys``."""
        digests = self._store.key_digests(_key_list(keys))
        backend = self._store.async_backend()
        values = await backend.get_many(keys) if keys else []
        entries = self._store.decode(keys, digests, values, None)
        await self._store.aslide(backend, keys, entries)
        return entries

    async def amexists_by_keys(self, keys: Sequence[str]) -> list[bool]:
        """Async ``mexists_by_keys``."""
        self._store.key_digests(_key_list(keys))
        return await self._store.async_backend().exists_many(keys) if keys else []

    async def amdrop_by_keys(self, keys: Sequence[str]) -> None:
        """Async ``mdrop_by_keys``."""
        self._store.key_digests(_key_list(keys))
        if keys:
            await self._store.async_backend().delete_many(keys)

    async def aclear(self) -> int:
        """Async ``clear``."""
        return await self._store.async_backend().clear(self.name, self._store.scheme.scan_pattern())

    async def aclose(self) -> None:
        """Release the async backend's connections, and the sync backend's too."""
        await self._store.aclose()

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



def _restore(settings: Settings, dtype: str,
             connection_kwargs: Mapping[str, Any]) -> EmbeddingsCache:
    """An unpickled cache: the sender's resolved settings, connected on first use."""
    cache = EmbeddingsCache.__new__(EmbeddingsCache)
    cache._setup(EntryStore(settings, dtype, connection_kwargs=connection_kwargs))
    return cache
