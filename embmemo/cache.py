"""``EmbeddingsCache``: the explicit cache object, sync methods and their async twins.

Every method validates its whole input first (pure, no I/O), makes one backend call,
then decodes. Single-item methods are the batch methods with one item.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .arguments import batch, model_of, spread, text_of, texts_of
from .backends import Backend, describe_client
from .codec import CacheEntry
from .config import Settings, ttl_seconds
from .engine import LookupEngine
from .engine.flight import running_loop
from .errors import ConfigError
from .keys import Text
from .stats import CacheInfo, logger
from .store import EntryStore, Params

if TYPE_CHECKING:
    from typing_extensions import Self


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
        max_size: Bytes a SQLite or ``memory://`` cache may hold, as an int or a string
            such as ``"512MiB"``; the least recently used entries go first. Default:
            ``EMBMEMO_MAX_SIZE``, else 1 GiB for the embedded default file and no limit
            for a URL you give (Redis: set ``maxmemory`` on the server instead).
        local_cache: Bytes of recently used entries kept in this process in front of the
            backend (``"32MiB"``; 0 turns it off). Default: ``EMBMEMO_LOCAL_CACHE``, else
            32 MiB on SQLite and standalone Redis.
        coordinate: Decorated functions in every process sharing the backend compute a
            missing text once: the first takes a short lease in the backend, the others
            wait for its entry (bounded; a crashed owner's lease lapses). Default:
            ``EMBMEMO_COORDINATE``, else False.

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
        max_size: int | str | None = None,
        local_cache: int | str | None = None,
        coordinate: bool | None = None,
    ) -> None:
        if url is not None and redis_url is not None and url != redis_url:
            raise ConfigError("give url or redis_url, not two different URLs")
        settings = Settings.deferred(
            url=url or redis_url or (_client_url(redis_client, async_redis_client)),
            name=name,
            ttl=ttl,
            refresh_ttl=refresh_ttl_on_read,
            max_size=max_size,
            local_cache=local_cache,
            coordinate=coordinate,
        )
        self._setup(EntryStore(settings, dtype, connection_kwargs=connection_kwargs,
                               redis_client=redis_client,
                               async_redis_client=async_redis_client))

    def _setup(self, store: EntryStore) -> None:
        self._store = store
        self._warned_in_loop = False
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
        model_name: str | None,
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
        text: Text | None = None,
        model_name: str | None = None,
        embedding: Any = None,
        metadata: dict[str, Any] | None = None,
        ttl: float | None = None,
        *,
        model_params: Params | None = None,
        content: Text | None = None,
    ) -> str:
        """Store one embedding and return its key.

        Args:
            text: The text (or bytes) that was embedded; ``content`` is the same (RedisVL's
                current name).
            model_name: The model that embedded it.
            embedding: A non-empty 1-D list, tuple or numpy array of finite numbers.
            metadata: A JSON-serializable dict stored with the entry.
            ttl: Time to live in seconds for this entry (default: the cache's).
            model_params: Output-affecting parameters (e.g. ``{"dimensions": 256}``)
                that are part of the entry's identity.
        """
        self._warn_in_loop("set")
        return self.mset(self._single_item(text_of(text, content), model_name,
                                           embedding, metadata, ttl, model_params))[0]

    def get(
        self, text: Text | None = None, model_name: str | None = None, *,
        model_params: Params | None = None, content: Text | None = None,
    ) -> CacheEntry | None:
        """The entry for (text, model), or None. Slides the TTL of a hit by default."""
        self._warn_in_loop("get")
        return self._read([text_of(text, content)], model_name, model_params)[0]

    def exists(
        self, text: Text | None = None, model_name: str | None = None, *,
        model_params: Params | None = None, content: Text | None = None,
    ) -> bool:
        """Whether an entry for (text, model) is stored (does not refresh its TTL)."""
        self._warn_in_loop("exists")
        return self.mexists([text_of(text, content)], model_name,
                            model_params=model_params)[0]

    def drop(
        self, text: Text | None = None, model_name: str | None = None, *,
        model_params: Params | None = None, content: Text | None = None,
    ) -> None:
        """Delete the entry for (text, model) if there is one."""
        self._warn_in_loop("drop")
        self.mdrop([text_of(text, content)], model_name,
                   model_params=model_params)

    def get_by_key(self, key: str) -> CacheEntry | None:
        """The entry stored under ``key``, or None (also for a key of another namespace)."""
        self._warn_in_loop("get_by_key")
        return self.mget_by_keys([key])[0]

    def exists_by_key(self, key: str) -> bool:
        """Whether ``key`` holds an entry of this namespace."""
        self._warn_in_loop("exists_by_key")
        return self.mexists_by_keys([key])[0]

    def drop_by_key(self, key: str) -> None:
        """Delete the entry stored under ``key``; a key of another namespace is left alone."""
        self._warn_in_loop("drop_by_key")
        self.mdrop_by_keys([key])

    def mset(self, items: Sequence[Mapping[str, Any]], ttl: float | None = None) -> list[str]:
        """Store many embeddings in one round trip per chunk; return their keys in order.

        Each item is a dict with ``text`` (or ``content``), ``model_name``, ``embedding``
        and optionally ``metadata``, ``ttl`` and ``model_params``. An item's ``ttl``
        overrides ``ttl`` here, which overrides the cache default. The whole batch is
        validated before anything is written; a Redis write is not atomic, so a failure
        part way says how many entries were written.
        """
        keys, records = self._store.records(items, ttl)
        if records:
            self._blocking("mset").set_many(records)
        return keys

    def mget(
        self, texts: Iterable[Text] | None = None, model_name: str | None = None, *,
        model_params: Params | None = None, contents: Iterable[Text] | None = None,
    ) -> list[CacheEntry | None]:
        """Entries for many texts of one model, in input order (None for misses)."""
        self._warn_in_loop("mget")
        return self._read(texts_of(texts, contents), model_name, model_params)

    def _read(self, texts: list[Text], model_name: str | None,
              model_params: Params | None) -> list[CacheEntry | None]:
        keys, digests = self._store.keys(texts, model_of(model_name), model_params)
        values, local = self._store.fetch(keys)
        entries = self._store.decode(keys, digests, values, model_name, texts, local=local)
        self._store.slide(self._store.backend(), keys, entries)
        return entries

    def mexists(
        self, texts: Iterable[Text] | None = None, model_name: str | None = None, *,
        model_params: Params | None = None, contents: Iterable[Text] | None = None,
    ) -> list[bool]:
        """Whether each text has an entry for the model, in input order."""
        keys, _ = self._store.keys(texts_of(texts, contents), model_of(model_name),
                                  model_params)
        return self._blocking("mexists").exists_many(keys) if keys else []

    def mdrop(
        self, texts: Iterable[Text] | None = None, model_name: str | None = None, *,
        model_params: Params | None = None, contents: Iterable[Text] | None = None,
    ) -> None:
        """Delete the entries for many texts of one model."""
        keys, _ = self._store.keys(texts_of(texts, contents), model_of(model_name),
                                  model_params)
        if keys:
            self._blocking("mdrop").delete_many(keys)

    def mget_by_keys(self, keys: Iterable[str]) -> list[CacheEntry | None]:
        """Entries stored under many keys, in input order (None for misses and for keys
        of another namespace, which are never sent to the backend)."""
        given = batch(keys, "keys")
        positions, own, digests = self._store.own_keys(given)
        backend = self._blocking("mget_by_keys")
        values, local = self._store.fetch(own)
        entries = self._store.decode(own, digests, values, None, local=local)
        self._store.slide(backend, own, entries)
        return spread(len(given), positions, entries, None)

    def mexists_by_keys(self, keys: Iterable[str]) -> list[bool]:
        """Whether each key holds an entry of this namespace, in input order."""
        given = batch(keys, "keys")
        positions, own, _ = self._store.own_keys(given)
        return spread(len(given), positions,
                      self._blocking("mexists_by_keys").exists_many(own) if own else [], False)

    def mdrop_by_keys(self, keys: Iterable[str]) -> None:
        """Delete the entries stored under many keys (those of this namespace)."""
        _, own, _ = self._store.own_keys(batch(keys, "keys"))
        if own:
            self._blocking("mdrop_by_keys").delete_many(own)

    def expire(self, key: str, ttl: float | None = None) -> None:
        """Give the entry under ``key`` a new TTL in seconds (None: the cache default),
        also for its later sliding refreshes. Nothing happens when neither TTL is set,
        or ``key`` holds no entry of this namespace."""
        seconds = self._expiry(key, ttl)
        if seconds is not None:
            backend = self._blocking("expire")
            record = self._store.retimed(key, backend.get_many([key])[0], seconds)
            if record is not None:
                backend.set_many([record])

    def set_ttl(self, ttl: float | None = None) -> None:
        """Change the default TTL (seconds, or None for no expiry) of entries written from
        now on. No I/O."""
        self._store.settings = replace(self._store.settings, ttl=ttl_seconds(ttl))

    def clear(self) -> int:
        """Delete every entry of this namespace, and nothing else; return how many."""
        return self._blocking("clear").clear(self.name, self._store.scheme.scan_pattern())

    def close(self) -> None:
        """Release the sync backend's connections (use ``aclose`` for the async one)."""
        self._store.close()

    disconnect = close
    """RedisVL's name for ``close``."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _blocking(self, method: str) -> Backend:
        """The sync backend, for ``method``; warns once if a running event loop called it
        (it blocks the loop until the backend answers)."""
        self._warn_in_loop(method)
        return self._store.backend()

    def _warn_in_loop(self, method: str) -> None:
        """Once per cache: a sync ``method`` called inside a running event loop, named with
        its async twin. The single-entry methods say it first, so the name is the user's."""
        if not self._warned_in_loop and running_loop() is not None:
            self._warned_in_loop = True
            logger.warning("embmemo: EmbeddingsCache.%s was called inside a running event "
                           "loop, which it blocks until the backend answers; use "
                           "`await cache.a%s(...)`", method, method)

    def _expiry(self, key: str, ttl: float | None) -> float | None:
        """The TTL ``expire`` sets, or None when it has nothing to do."""
        seconds = ttl_seconds(ttl) if ttl is not None else self.ttl
        return seconds if seconds is not None and self._store.own_keys([key])[1] else None

    # -- async API: the same, awaiting the async backend -------------------------------

    async def aset(
        self,
        text: Text | None = None,
        model_name: str | None = None,
        embedding: Any = None,
        metadata: dict[str, Any] | None = None,
        ttl: float | None = None,
        *,
        model_params: Params | None = None,
        content: Text | None = None,
    ) -> str:
        """Async ``set``."""
        return (await self.amset(self._single_item(
            text_of(text, content), model_name, embedding, metadata, ttl,
            model_params)))[0]

    async def aget(
        self, text: Text | None = None, model_name: str | None = None, *,
        model_params: Params | None = None, content: Text | None = None,
    ) -> CacheEntry | None:
        """Async ``get``."""
        return (await self.amget([text_of(text, content)], model_name,
                                 model_params=model_params))[0]

    async def aexists(
        self, text: Text | None = None, model_name: str | None = None, *,
        model_params: Params | None = None, content: Text | None = None,
    ) -> bool:
        """Async ``exists``."""
        return (await self.amexists([text_of(text, content)], model_name,
                                    model_params=model_params))[0]

    async def adrop(
        self, text: Text | None = None, model_name: str | None = None, *,
        model_params: Params | None = None, content: Text | None = None,
    ) -> None:
        """Async ``drop``."""
        await self.amdrop([text_of(text, content)], model_name,
                          model_params=model_params)

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
        self, texts: Iterable[Text] | None = None, model_name: str | None = None, *,
        model_params: Params | None = None, contents: Iterable[Text] | None = None,
    ) -> list[CacheEntry | None]:
        """Async ``mget``."""
        batch = texts_of(texts, contents)
        keys, digests = self._store.keys(batch, model_of(model_name), model_params)
        backend = self._store.async_backend()
        values, local = await self._store.afetch(keys)
        entries = self._store.decode(keys, digests, values, model_name, batch, local=local)
        await self._store.aslide(backend, keys, entries)
        return entries

    async def amexists(
        self, texts: Iterable[Text] | None = None, model_name: str | None = None, *,
        model_params: Params | None = None, contents: Iterable[Text] | None = None,
    ) -> list[bool]:
        """Async ``mexists``."""
        keys, _ = self._store.keys(texts_of(texts, contents), model_of(model_name),
                                  model_params)
        return await self._store.async_backend().exists_many(keys) if keys else []

    async def amdrop(
        self, texts: Iterable[Text] | None = None, model_name: str | None = None, *,
        model_params: Params | None = None, contents: Iterable[Text] | None = None,
    ) -> None:
        """Async ``mdrop``."""
        keys, _ = self._store.keys(texts_of(texts, contents), model_of(model_name),
                                  model_params)
        if keys:
            await self._store.async_backend().delete_many(keys)

    async def amget_by_keys(self, keys: Iterable[str]) -> list[CacheEntry | None]:
        """Async ``mget_by_keys``."""
        given = batch(keys, "keys")
        positions, own, digests = self._store.own_keys(given)
        backend = self._store.async_backend()
        values, local = await self._store.afetch(own)
        entries = self._store.decode(own, digests, values, None, local=local)
        await self._store.aslide(backend, own, entries)
        return spread(len(given), positions, entries, None)

    async def amexists_by_keys(self, keys: Iterable[str]) -> list[bool]:
        """Async ``mexists_by_keys``."""
        given = batch(keys, "keys")
        positions, own, _ = self._store.own_keys(given)
        return spread(len(given), positions,
                      await self._store.async_backend().exists_many(own) if own else [],
                      False)

    async def amdrop_by_keys(self, keys: Iterable[str]) -> None:
        """Async ``mdrop_by_keys``."""
        _, own, _ = self._store.own_keys(batch(keys, "keys"))
        if own:
            await self._store.async_backend().delete_many(own)

    async def aexpire(self, key: str, ttl: float | None = None) -> None:
        """Async ``expire``."""
        seconds = self._expiry(key, ttl)
        if seconds is not None:
            backend = self._store.async_backend()
            record = self._store.retimed(key, (await backend.get_many([key]))[0], seconds)
            if record is not None:
                await backend.set_many([record])

    async def aclear(self) -> int:
        """Async ``clear``."""
        return await self._store.async_backend().clear(self.name,
                                                        self._store.scheme.scan_pattern())

    async def aclose(self) -> None:
        """Release the async backend's connections, and the sync backend's too."""
        await self._store.aclose()

    adisconnect = aclose
    """RedisVL's name for ``aclose``."""

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
