"""``EntryStore``: one namespace of entries on one backend, below the public API.

It turns requests into keys, embeddings into checked records and stored bytes back into
entries, and opens the backends (lazily, each once). ``EmbeddingsCache``'s methods and
the decorator's lookup engine both work through it: the cache validates arguments and
shapes results, the engine plans decorated calls, and neither reaches into the other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, cast

import numpy as np
import numpy.typing as npt

from . import codec
from .arguments import either
from .backends import (
    AsyncBackend,
    Backend,
    Record,
    Refresh,
    async_twin,
    open_async_backend,
    open_backend,
    wrap_client,
)
from .codec import CacheEntry
from .config import DEFAULT_LOCAL_CACHE, Settings, ttl_ms, ttl_seconds
from .errors import BackendError, ConfigError, InvalidInputError, InvalidTypeError
from .keys import KeyScheme, Text, encode_text, identity_prefix, model_identity, text_digest
from .stats import Counters, RateLimitedLog, logger
from .tier import (
    AsyncTieredBackend,
    Fetched,
    LocalTier,
    PendingRead,
    TieredBackend,
    begin_read,
)

Params = Mapping[str, object]
_ITEM_FIELDS = frozenset({"text", "content", "model_name", "embedding", "metadata", "ttl",
                          "model_params"})


def _item_fields(item: object) -> tuple[Any, Any, Any, Any, Any, Any]:
    """(text, model_name, model_params, embedding, ttl, metadata) of one mset item; the
    text may be spelled ``content`` (RedisVL 0.13 and later)."""
    if not isinstance(item, Mapping):
        raise InvalidTypeError(f"each item must be a dict, got {type(item).__name__}")
    if not item.keys() <= _ITEM_FIELDS:
        raise InvalidInputError(f"unknown field(s) {sorted(item.keys() - _ITEM_FIELDS)}")
    try:
        return (either(item.get("text"), item.get("content"), "text", "content"),
                item["model_name"], item.get("model_params"), item["embedding"],
                item.get("ttl"), item.get("metadata"))
    except KeyError as missing:
        raise InvalidInputError(f"missing field {missing}") from None


class _RecordEncoder:
    """Validates and encodes records for one batch, reusing per-model work (digest prefix,
    model name bytes)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
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
        vector: bytes,
        dimension: int,
        dtype: np.dtype[Any],
        entry_ttl_ms: int | None,
        metadata: object,
        output_hint: int = 0,
    ) -> Record:
        """One encoded record around an already checked vector."""
        digest_prefix, model_bytes = self._model(model_name, model_params)
        tag, text_bytes = encode_text(text)
        digest = text_digest(digest_prefix, tag, text_bytes)
        value = codec.encode(
            digest, tag == b"b", text_bytes, model_bytes, vector, dimension, dtype,
            codec.metadata_json(metadata), entry_ttl_ms or 0, self.now, output_hint,
        )
        return Record(self.prefix + digest.hex(), value, entry_ttl_ms)


REFRESH_FRACTION = 0.25
"""A hit's TTL is given again once at least this fraction of it has passed."""


class SlidingExpiry:
    """Which hits of a read get their TTL again (sliding expiry, at a coarse grain).

    Re-applying every hit's TTL on every read costs a server write per hit (and a file
    write for SQLite). A hit is due only when a quarter of its TTL has passed since it was
    written (its header says when) or since this process last refreshed it, so a hot
    entry is refreshed at most four times per TTL per process, always keeps at least
    three quarters of its TTL ahead, and most reads are plain reads.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._refreshed: dict[str, float] = {}

    def forget(self) -> None:
        """Forget every refresh made: the next read of a due hit refreshes it again."""
        self._refreshed.clear()

    def any_due(self, keys: Sequence[str], entries: Sequence[CacheEntry | None]) -> bool:
        """Whether ``due`` would refresh any of these entries now (marks nothing)."""
        return bool(self._due(keys, entries, time.time()))

    def due(self, keys: Sequence[str], entries: Sequence[CacheEntry | None]) -> list[Refresh]:
        """The refreshes ``entries`` (read under ``keys``) need now; marks them done."""
        now = time.time()
        refreshed = self._refreshed
        out: list[Refresh] = []
        for index in self._due(keys, entries, now):
            if len(refreshed) >= self.capacity:  # forgetting only means refreshing early
                refreshed.clear()
            refreshed[keys[index]] = now
            out.append(Refresh(keys[index], round(_ttl(entries[index]) * 1000)))
        return out

    def _due(self, keys: Sequence[str], entries: Sequence[CacheEntry | None],
             now: float) -> list[int]:
        """Indexes of the hits written a while ago and not refreshed by this process
        lately."""
        refreshed = self._refreshed
        return [index for index in codec.due(entries, now, REFRESH_FRACTION)
                if now - refreshed.get(keys[index], 0.0)
                >= _ttl(entries[index]) * REFRESH_FRACTION]


def _ttl(entry: CacheEntry | None) -> float:
    """The TTL of an entry ``codec.due`` chose (so it has one)."""
    return cast(float, cast(CacheEntry, entry).ttl)


class ComputedRecords(NamedTuple):
    """A decorated function's fresh embeddings, encoded.

    ``records`` are the rows that can be stored; ``stored_rows`` holds, per input row,
    the embedding exactly as a later read will return it (rounded through the storage
    dtype), or the row as computed where it cannot be stored; ``failures`` names those
    rows (index, reason).
    """

    records: list[Record]
    stored_rows: list[npt.NDArray[Any]]
    failures: list[tuple[int, InvalidInputError]]


class EntryStore:
    """Keys, records and backends of one cache namespace.

    Args:
        settings: The settings (URL, namespace, TTL, timeouts), or how to resolve them:
            a function called at first use, so ``EMBMEMO_*`` variables set after the
            cache was built (``load_dotenv()`` in ``main()``) still count.
        dtype: The storage dtype name of float embeddings.
        connection_kwargs: Redis client settings overriding embmemo's defaults.
        redis_client: A caller's sync Redis client, used instead of the URL.
        async_redis_client: A caller's async Redis client, used instead of the URL.
    """

    def __init__(
        self,
        settings: Settings | Callable[[], Settings],
        dtype: str,
        *,
        connection_kwargs: Mapping[str, Any] | None = None,
        redis_client: Any = None,
        async_redis_client: Any = None,
    ) -> None:
        self._settings = settings if isinstance(settings, Settings) else None
        self._resolve = settings if not isinstance(settings, Settings) else None
        self._scheme: KeyScheme | None = None
        self._settings_lock = threading.Lock()
        self.dtype = codec.dtype_for(dtype)
        self.connection_kwargs = dict(connection_kwargs or {})
        self.redis_client = redis_client
        self.async_redis_client = async_redis_client
        self.counters = Counters()
        """What reads through this store found: the cache's ``stats()``."""
        self.sliding = SlidingExpiry()
        self._corrupt_log = RateLimitedLog()
        self._refresh_log = RateLimitedLog()
        self._backend: Backend | None = None
        self._async_backend: AsyncBackend | None = None
        self._open_lock = threading.Lock()

    @property
    def settings(self) -> Settings:
        """The settings, resolved on first use (and said once in an INFO log line)."""
        settings = self._settings
        if settings is None:
            with self._settings_lock:
                if self._settings is None:
                    assert self._resolve is not None
                    self._settings = self._resolve()
                    logger.info("embmemo: cache %r uses %s", self._settings.name,
                                self._settings.redacted_url)
                settings = self._settings
        return settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self._settings, self._scheme = settings, None

    @property
    def scheme(self) -> KeyScheme:
        """The key scheme of the namespace."""
        scheme = self._scheme
        if scheme is None:
            scheme = self._scheme = KeyScheme(self.settings.name)
        return scheme

    @property
    def name(self) -> str:
        """The key namespace."""
        return self.settings.name

    @property
    def refresh_ttl_on_read(self) -> bool:
        """Whether reads slide the TTL of hits."""
        return self.settings.refresh_ttl

    # -- pure preparation -----------------------------------------------------------------

    def keys(
        self, texts: Sequence[Text], model_name: str, model_params: Params | None = None
    ) -> tuple[list[str], list[bytes]]:
        """Keys and raw digests of ``texts`` under one model identity."""
        return self.scheme.keys(texts, model_identity(model_name, model_params))

    def key_digests(self, keys: Sequence[str]) -> list[bytes]:
        """The digest each key carries; a key of another shape is an input error."""
        return [self.scheme.digest_of(key) for key in keys]

    def own_keys(self, keys: Sequence[object]) -> tuple[list[int], list[str], list[bytes]]:
        """The positions, keys and digests of the entry keys of this namespace among
        ``keys``. Any other string (another namespace's, a malformed one) is left out and
        never sent to the backend; a key that is not a str is an error."""
        positions: list[int] = []
        own: list[str] = []
        digests: list[bytes] = []
        for position, key in enumerate(keys):
            if not isinstance(key, str):
                raise InvalidTypeError(f"keys[{position}] must be a str, got "
                                       f"{type(key).__name__}")
            try:
                digest = self.scheme.digest_of(key)
            except InvalidInputError:
                continue
            positions.append(position)
            own.append(key)
            digests.append(digest)
        if len(own) < len(keys):
            logger.debug("embmemo: %d key(s) outside namespace %r ignored",
                         len(keys) - len(own), self.name)
        return positions, own, digests

    def records(
        self, items: Sequence[Mapping[str, Any]], batch_ttl: float | None
    ) -> tuple[list[str], list[Record]]:
        """Validate every ``mset`` item, then encode them all; nothing is written on any
        error. The keys in item order, and one record per distinct key (the last wins)."""
        if not isinstance(items, (list, tuple)):
            raise InvalidTypeError(f"items must be a list of dicts, got {type(items).__name__}")
        default_ttl = ttl_seconds(batch_ttl) if batch_ttl is not None else self.settings.ttl
        encoder = _RecordEncoder(self.scheme.prefix)
        keys: list[str] = []
        records: dict[str, Record] = {}
        default_ms = ttl_ms(default_ttl)
        with codec.quiet_float_errors():
            for index, item in enumerate(items):
                try:
                    text, model_name, params, embedding, item_ttl, metadata = _item_fields(item)
                    entry_ms = default_ms if item_ttl is None else ttl_ms(ttl_seconds(item_ttl))
                    vector, dimension = codec.vector_bytes(embedding, self.dtype)
                    record = encoder.encode(text, model_name, params, vector, dimension,
                                            self.dtype, entry_ms, metadata)
                except (InvalidInputError, InvalidTypeError) as exc:
                    raise type(exc)(f"items[{index}]: {exc}") from None
                keys.append(record.key)
                records[record.key] = record
        return keys, list(records.values())

    def computed_records(
        self,
        texts: Sequence[Text],
        model_name: str,
        model_params: Params | None,
        matrix: npt.NDArray[Any],
        ttl: float | None,
        output_hint: int,
    ) -> ComputedRecords:
        """Records for rows a decorated function just computed (already checked).

        Float rows are stored in the cache's dtype; integer rows (quantized embeddings)
        in the smallest integer dtype that holds the batch, so they come back exact. A
        row the dtype cannot hold (float16 overflow) is left out and reported.
        """
        encoder = _RecordEncoder(self.scheme.prefix)
        entry_ttl_ms = ttl_ms(ttl if ttl is not None else self.settings.ttl)
        integers = matrix.dtype.kind in "iu"
        dtype = codec.smallest_integer_dtype(matrix) if integers else self.dtype
        result = ComputedRecords([], [], [])
        with codec.quiet_float_errors():
            for index, (text, row) in enumerate(zip(texts, matrix)):
                try:
                    vector, dimension = codec.vector_bytes(row, dtype)
                except InvalidInputError as exc:
                    result.failures.append((index, exc))
                    result.stored_rows.append(_frozen(row.copy()))
                    continue
                result.records.append(encoder.encode(
                    text, model_name, model_params, vector, dimension, dtype, entry_ttl_ms,
                    None, output_hint))
                result.stored_rows.append(np.frombuffer(vector, dtype))
        return result

    def decode(
        self,
        keys: Sequence[str],
        digests: Sequence[bytes],
        values: Sequence[bytes | None],
        model_name: str | None,
        texts: Sequence[Text] | None = None,
        corrupt_also_to: Counters | None = None,
        local: int = 0,
        counted: bool = True,
    ) -> list[CacheEntry | None]:
        """Decode and verify; count hits (``local`` of them from the in-process tier),
        misses and corrupt values (corrupt ones also in ``corrupt_also_to``). ``texts``:
        what the keys were computed from, when they were. ``counted=False``: a read that
        is not a lookup of its own (polling for another process's entries)."""
        entries, corrupt = codec.decode_many(values, keys, digests, model_name, texts,
                                             verified=0 < local == len(values))
        if corrupt:
            if corrupt_also_to is not None:
                corrupt_also_to.add(corrupt=corrupt)
            self._corrupt_log.warning(
                "corrupt", "embmemo: ignored %d stored value(s) that failed verification, "
                "e.g. %s", corrupt,
                next(k for k, v, e in zip(keys, values, entries) if v is not None and e is None),
            )
        # Counting None among the values, not the entries: a CacheEntry's __eq__ would run
        # for every hit.
        if counted:
            hits = len(entries) - values.count(None) - corrupt
            self.counters.add(hits=hits, misses=len(entries) - hits, corrupt=corrupt,
                              local_hits=local)
        return entries

    def peek(self, keys: Sequence[str], digests: Sequence[bytes],
             values: Sequence[bytes | None], model_name: str | None,
             texts: Sequence[Text]) -> list[CacheEntry] | None:
        """The entries of values the in-process tier served, if every one decodes and
        none is due to slide; else None. Counts nothing, marks nothing."""
        entries, corrupt = codec.decode_many(values, keys, digests, model_name, texts,
                                             verified=True)
        if corrupt or not entries or (self.refresh_ttl_on_read
                                      and self.sliding.any_due(keys, entries)):
            return None
        return cast(list[CacheEntry], entries)

    def retimed(self, key: str, value: bytes | None, ttl: float) -> Record | None:
        """The record under ``key`` rewritten with a new TTL, or None if it holds no valid
        entry."""
        if value is None or codec.decode(value, key, self.scheme.digest_of(key)) is None:
            return None
        ms = ttl_ms(ttl)
        assert ms is not None
        return Record(key, codec.with_ttl(value, ms), ms)

    def due_refreshes(self, keys: Sequence[str],
                      entries: Sequence[CacheEntry | None]) -> list[Refresh]:
        """The hits of a read whose TTL should slide now (none when reads do not slide)."""
        return self.sliding.due(keys, entries) if self.refresh_ttl_on_read else []

    def refresh_skipped(self, error: BackendError) -> None:
        """A TTL refresh failed (a read-only replica, say): the read's hits stand."""
        self._refresh_log.warning("refresh", "embmemo: TTL refresh skipped: %s", error)

    def slide(self, backend: Backend, keys: Sequence[str],
              entries: Sequence[CacheEntry | None]) -> None:
        """Refresh the TTLs a read made due, best effort."""
        due = self.due_refreshes(keys, entries)
        if due:
            try:
                backend.refresh_many(due)
            except BackendError as exc:
                self.refresh_skipped(exc)

    async def aslide(self, backend: AsyncBackend, keys: Sequence[str],
                     entries: Sequence[CacheEntry | None]) -> None:
        """Async ``slide``."""
        due = self.due_refreshes(keys, entries)
        if due:
            try:
                await backend.refresh_many(due)
            except BackendError as exc:
                self.refresh_skipped(exc)

    # -- backends -------------------------------------------------------------------------

    def served_locally(self, keys: Sequence[str], asynchronous: bool) -> Fetched | None:
        """The values of ``keys`` if the in-process tier (of the sync or the async backend)
        holds every one of them; else None, and a read must go to the backend. No I/O."""
        backend = self.async_backend() if asynchronous else self.backend()
        if isinstance(backend, (TieredBackend, AsyncTieredBackend)):
            read = begin_read(backend.tier, backend.coherence, keys)
            if not isinstance(read, PendingRead):
                return read
        return None

    def fetch(self, keys: Sequence[str]) -> Fetched:
        """Stored values of ``keys`` (the in-process tier's first), by the sync backend."""
        backend = self.backend()
        if isinstance(backend, TieredBackend):
            return backend.fetch(keys)
        return (backend.get_many(keys) if keys else []), 0

    async def afetch(self, keys: Sequence[str]) -> Fetched:
        """Async ``fetch``."""
        backend = self.async_backend()
        if isinstance(backend, AsyncTieredBackend):
            return await backend.fetch(keys)
        return (await backend.get_many(keys) if keys else []), 0

    def backend(self) -> Backend:
        """The synchronous backend, opened on first use (opening never connects)."""
        backend = self._backend
        return backend if backend is not None else self._open_once(asynchronous=False)

    def async_backend(self) -> AsyncBackend:
        """The asynchronous backend, opened on first use (opening never connects)."""
        backend = self._async_backend
        return backend if backend is not None else self._open_once(asynchronous=True)

    def _open_once(self, asynchronous: bool) -> Any:
        slot = "_async_backend" if asynchronous else "_backend"
        with self._open_lock:  # two threads' first calls open one backend
            if getattr(self, slot) is None:
                setattr(self, slot, self._open(asynchronous))
            return getattr(self, slot)

    def _open(self, asynchronous: bool) -> Any:
        given = self.async_redis_client if asynchronous else self.redis_client
        other = self.redis_client if asynchronous else self.async_redis_client
        timeout, kwargs = self.settings.timeout, self.connection_kwargs
        if given is not None:
            return self._tiered(wrap_client(given, asynchronous, timeout=timeout,
                                            connection_kwargs=kwargs), asynchronous)
        if other is not None and asynchronous:  # only a sync client: async ones like it
            return self._tiered(async_twin(other, timeout=timeout, connection_kwargs=kwargs),
                                asynchronous)
        if other is not None:
            raise ConfigError("this cache was given only an async Redis client; pass "
                              "redis_client to use the sync methods")
        opener = open_async_backend if asynchronous else open_backend
        return self._tiered(opener(self.settings.url, timeout=timeout, connection_kwargs=kwargs,
                                   max_size=self.settings.max_size), asynchronous)

    def _tiered(self, backend: Any, asynchronous: bool) -> Any:
        """The backend behind an in-process tier, where one is wanted and can be kept
        coherent; ``memory://`` is in process already."""
        size = self.settings.local_cache
        coherence = getattr(backend, "coherence", None)
        if size == 0 or getattr(backend, "in_process", False):
            return backend
        if coherence is None:
            if size is None:
                return backend
            raise ConfigError(
                f"local_cache: {self.settings.redacted_url} cannot keep an in-process tier "
                "coherent (no invalidation source); set local_cache=0 or EMBMEMO_LOCAL_CACHE=0")
        tier = LocalTier(size if size is not None else DEFAULT_LOCAL_CACHE)
        wrapper = AsyncTieredBackend if asynchronous else TieredBackend
        return wrapper(backend, tier, coherence(self.scheme.prefix))

    def close(self) -> None:
        """Release the sync backend's connections (it reopens on next use)."""
        with self._open_lock:
            backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    async def aclose(self) -> None:
        """Release the async backend's connections, and the sync backend's too."""
        with self._open_lock:
            backend, self._async_backend = self._async_backend, None
        if backend is not None:
            await backend.close()
        self.close()

    def entries(self, chunk: int = 1000) -> Iterator[tuple[CacheEntry, int]]:
        """Every valid entry of the namespace with its stored size (for ``embmemo stats``);
        reads do not refresh TTLs and are not counted."""
        backend = self.backend()
        keys = backend.scan_keys(self.name, self.scheme.scan_pattern())
        for start in range(0, len(keys), chunk):
            part = keys[start:start + chunk]
            values = backend.get_many(part)
            entries, _ = codec.decode_many(values, part, self.key_digests(part))
            for entry, value in zip(entries, values):
                if entry is not None and value is not None:
                    yield entry, len(value)


def _frozen(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    array.flags.writeable = False
    return array
