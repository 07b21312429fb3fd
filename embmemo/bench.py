"""``embmemo bench``: embmemo next to raw redis-py (and raw sqlite3) doing the same work.

Every case runs the embmemo operation and its raw equivalent on the same bytes, on the
same server, alternately (raw, then embmemo, ``repeat`` times after a warm-up), so drift
hits both alike. A row shows the best and median time of each, the ratio of the bests,
the median of the per-pair ratios, and the sequential round trips each needs. Nothing
is asserted: the numbers are for reading.

The first rows of each size are the configuration a user gets by default: TTL set,
reads sliding it (hits written a while ago are not yet due, as in a warm cache). Any
other configuration says so in its case name. Raw equivalents: ``MGET`` +
``numpy.frombuffer`` for reads, pipelined ``SET EX`` for writes, ``GET``/``SET EX`` for
single items, ``redis.asyncio`` for ``amget``, a key holding only the vector bytes for
memory, and plain ``sqlite3`` (the same table, one transaction per write, the same
chunked ``SELECT ... IN``) for the embedded default. The default includes the in-process
tier (warmed before timing, so its rows measure hot entries); rows marked "no local
tier" measure the network or file path alone. The "vs none" rows compare a
size-limited SQLite file (under its limit, or evicting all along) with an unlimited one:
there the raw columns are embmemo without a limit. One-item cases time 100 calls per
sample and report the time per call.
"""

from __future__ import annotations

import asyncio
import functools
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt
import redis
import redis.asyncio as aioredis

from .cache import EmbeddingsCache
from .decorator import cached_embedding
from .sansio import adrive, drive

TTL_SECONDS = 3600
DUE_TTL_SECONDS = 4.0
"""TTL of the entries of the "every hit due" case: a second old, each is due to slide."""
MODEL = "bench/model"

Pairs = list[tuple[float, float]]
"""(embmemo seconds, raw seconds) of each alternation."""


@dataclass
class Row:
    """One measured case."""

    case: str
    dim: int
    batch: int
    dtype: str
    embmemo_best: float
    embmemo_median: float
    raw_best: float
    raw_median: float
    pair_ratio: float = float("nan")
    """The median over alternations of embmemo's time over raw's."""
    round_trips: int | None = None
    """Sequential round trips of one embmemo call (raw: see ``raw_round_trips``)."""
    raw_round_trips: int | None = None
    unit: str = "ms"

    @property
    def ratio(self) -> float:
        """embmemo's best over raw's best."""
        return self.embmemo_best / self.raw_best if self.raw_best else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": round(self.ratio, 3)}


@dataclass
class Options:
    """What to measure."""

    dims: Sequence[int] = (384, 768, 1536)
    batches: Sequence[int] = (1, 100, 1000, 10000)
    dtypes: Sequence[str] = ("float32", "float16")
    repeat: int = 15


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 4)


def _alternation(ours: Callable[[], Any], raw: Callable[[], Any],
                 repeat: int) -> Generator[Callable[[], Any], float, Pairs]:
    """Raw, then embmemo, ``repeat`` times after a warm-up pair: yields what to time next,
    receives its seconds."""
    pairs: Pairs = []
    for attempt in range(repeat + 1):
        raw_seconds = yield raw
        ours_seconds = yield ours
        if attempt:
            pairs.append((ours_seconds, raw_seconds))
    return pairs


SINGLE_CALLS = 100
"""Calls per sample of a one-item case: one call (a few microseconds) is too short for
the clock alone. A row then reports the time per call."""


def calls_for(batch: int) -> int:
    """Calls per timed sample for a batch size."""
    return SINGLE_CALLS if batch == 1 else 1


def compare(ours: Callable[[], object], raw: Callable[[], object], repeat: int,
            before_each: Callable[[], object] | None = None, calls: int = 1) -> Pairs:
    """Alternate the two, so drift hits both alike; each sample times ``calls`` calls."""
    def timed(fn: Callable[[], object]) -> float:
        if before_each is not None:
            before_each()
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - started) / calls

    return drive(_alternation(ours, raw, repeat), timed)


async def compare_async(ours: Callable[[], Awaitable[object]],
                        raw: Callable[[], Awaitable[object]], repeat: int,
                        calls: int = 1) -> Pairs:
    """``compare`` for coroutines."""
    async def timed(fn: Callable[[], Awaitable[object]]) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await fn()
        return (time.perf_counter() - started) / calls

    return await adrive(_alternation(ours, raw, repeat), timed)


def _row(case: str, dim: int, batch: int, dtype: str, pairs: Pairs,
         trips: tuple[int, int] | None = None) -> Row:
    ours = [p[0] for p in pairs]
    raw = [p[1] for p in pairs]
    return Row(case, dim, batch, dtype, _ms(min(ours)), _ms(statistics.median(ours)),
               _ms(min(raw)), _ms(statistics.median(raw)),
               round(statistics.median(o / r for o, r in pairs), 3),
               *(trips or (None, None)))


def texts_for(count: int, salt: str = "") -> list[str]:
    """About 40-character texts, distinct per ``salt``."""
    return [f"benchmark text {salt}{i:010d} on topic q" for i in range(count)]


class RedisBench:
    """All cases against one Redis server, in private namespaces it cleans up."""

    def __init__(self, url: str, options: Options, progress: Callable[[str], None]) -> None:
        self.url = url
        self.options = options
        self.progress = progress
        self.raw = redis.Redis.from_url(url, socket_timeout=30)
        self.tag = uuid.uuid4().hex[:8]

    def run(self) -> list[Row]:
        rows: list[Row] = []
        try:
            for dtype in self.options.dtypes:
                for dim in self.options.dims:
                    for batch in self.options.batches:
                        self.progress(f"redis {dtype} dim={dim} batch={batch}")
                        rows.extend(self.cases(dim, batch, dtype))
        finally:
            self.raw.close()
        return rows

    def cache(self, dtype: str, ttl: float | None = TTL_SECONDS,
              suffix: str = "", local_cache: int | None = None) -> EmbeddingsCache:
        """A cache in the default configuration (in-process tier included), but for
        generous client timeouts; ``local_cache=0`` for the network path alone."""
        return EmbeddingsCache(name=f"embmemo-bench-{self.tag}{suffix}", url=self.url, ttl=ttl,
                               dtype=dtype, connection_kwargs={"socket_timeout": 30},
                               local_cache=local_cache)

    @contextmanager
    def cleanup(self, caches: Sequence[EmbeddingsCache], raw_prefix: str) -> Iterator[None]:
        try:
            yield
        finally:
            for cache in caches:
                cache.clear()
                cache.close()
            for batch in _chunks([k for k in self.raw.scan_iter(match=raw_prefix + "*",
                                                                 count=1000)], 1000):
                self.raw.unlink(*batch)

    def cases(self, dim: int, batch: int, dtype: str) -> list[Row]:
        repeat = self.options.repeat
        np_dtype = np.dtype(dtype)
        vectors = np.random.default_rng(dim + batch).random((batch, dim), dtype=np.float32)
        stored = vectors.astype(np_dtype)
        texts = texts_for(batch)
        default, forever = self.cache(dtype), self.cache(dtype, None, "-forever", 0)
        due = self.cache(dtype, DUE_TTL_SECONDS, "-due", 0)
        remote = self.cache(dtype, local_cache=0)  # the same entries as default's
        raw_prefix = f"embmemo-bench-raw-{self.tag}:"
        rows: list[Row] = []
        with self.cleanup((default, forever, due, remote), raw_prefix):
            raw_keys = [f"{raw_prefix}{i}" for i in range(batch)]
            raw_values = [row.tobytes() for row in stored]
            items = [{"text": t, "model_name": MODEL, "embedding": v}
                     for t, v in zip(texts, vectors)]
            raw = self.raw

            def raw_set_ex() -> None:
                pipe = raw.pipeline(transaction=False)
                for key, value in zip(raw_keys, raw_values):
                    pipe.set(key, value, ex=TTL_SECONDS)
                pipe.execute()

            def raw_mget() -> list[npt.NDArray[Any]]:
                return [_vector(v, np_dtype) for v in raw.mget(raw_keys)]

            rows.append(_row("mset (TTL)", dim, batch, dtype,
                             compare(lambda: default.mset(items), raw_set_ex, repeat,
                                     calls=calls_for(batch)),
                             (_trips(default, lambda: default.mset(items)), 1)))
            _warm(default, lambda: default.mget(texts, MODEL))
            rows.append(self.read_row("mget", default, texts, raw_mget, dim, batch, dtype))
            rows.append(self.read_row("mget, no local tier", remote, texts, raw_mget, dim,
                                      batch, dtype))
            forever.mset(items)
            rows.append(self.read_row("mget, no TTL, no tier", forever, texts, raw_mget, dim,
                                      batch, dtype))
            due.mset(items)
            time.sleep(DUE_TTL_SECONDS / 4)
            rows.append(self.read_row("mget, every hit sliding, no tier", due, texts, raw_mget,
                                      dim, batch, dtype, before_each=due.store.sliding.forget))
            if batch == 1:
                rows.append(_row("set (TTL)", dim, batch, dtype, compare(
                    lambda: default.set(texts[0], MODEL, vectors[0]),
                    lambda: raw.set(raw_keys[0], raw_values[0], ex=TTL_SECONDS), repeat,
                    calls=SINGLE_CALLS),
                    (_trips(default, lambda: default.set(texts[0], MODEL, vectors[0])), 1)))
                for case, cache in (("get", default), ("get, no local tier", remote)):
                    get = functools.partial(cache.get, texts[0], MODEL)
                    rows.append(_row(case, dim, batch, dtype, compare(
                        get, lambda: _vector(raw.get(raw_keys[0]), np_dtype), repeat,
                        calls=SINGLE_CALLS),
                        (_trips(cache, get), 1)))
            rows.extend(self.decorator_cases(default, dim, batch, dtype, vectors, raw_mget,
                                             raw_set_ex, raw_keys, np_dtype))
            rows.append(self.amget_case(default, dim, batch, dtype, texts, raw_keys, np_dtype))
            rows.append(self.memory_case(default, dim, batch, dtype, texts, raw_keys))
        return rows

    def read_row(self, case: str, cache: EmbeddingsCache, texts: list[str],
                 raw_mget: Callable[[], object], dim: int, batch: int, dtype: str,
                 before_each: Callable[[], object] | None = None) -> Row:
        pairs = compare(lambda: cache.mget(texts, MODEL), raw_mget, self.options.repeat,
                        before_each, calls=1 if before_each else calls_for(len(texts)))
        if before_each is not None:
            before_each()
        return _row(case, dim, batch, dtype, pairs,
                    (_trips(cache, lambda: cache.mget(texts, MODEL)), 1))

    def decorator_cases(self, cache: EmbeddingsCache, dim: int, batch: int, dtype: str,
                        vectors: npt.NDArray[Any], raw_mget: Callable[[], object],
                        raw_set_ex: Callable[[], object], raw_keys: list[str],
                        np_dtype: np.dtype[Any]) -> list[Row]:
        @cached_embedding(model=MODEL, cache=cache)
        def embed(texts: list[str] | str) -> npt.NDArray[Any]:
            if isinstance(texts, str):
                return np.asarray(vectors[0])
            return vectors[: len(texts)]  # a free "model", so only caching is measured

        repeat = self.options.repeat
        texts = texts_for(batch)
        embed(texts)
        _warm(cache, lambda: embed(texts))
        if batch == 1:
            _warm(cache, lambda: embed(texts[0]))
        rows = [_row("decorator warm", dim, batch, dtype,
                     compare(lambda: embed(texts), raw_mget, repeat, calls=calls_for(batch)),
                     (_trips(cache, lambda: embed(texts)), 1))]
        if batch == 1:  # the query path of a search service: one str in, one vector out
            rows.append(_row("decorator warm, one str", dim, batch, dtype, compare(
                lambda: embed(texts[0]), lambda: _vector(self.raw.get(raw_keys[0]), np_dtype),
                repeat, calls=SINGLE_CALLS), (_trips(cache, lambda: embed(texts[0])), 1)))
        salts = iter(range(10**9))

        def cold() -> None:
            embed(texts_for(batch, salt=f"c{next(salts)}-"))

        missing = [f"embmemo-bench-missing-{self.tag}:{i}" for i in range(batch)]

        def raw_cold() -> None:  # a raw read that misses, then the raw write of the same bytes
            self.raw.mget(missing)
            raw_set_ex()

        rows.append(_row("decorator cold", dim, batch, dtype, compare(cold, raw_cold, repeat),
                         (_trips(cache, cold), 2)))
        return rows

    def amget_case(self, cache: EmbeddingsCache, dim: int, batch: int, dtype: str,
                   texts: list[str], raw_keys: list[str], np_dtype: np.dtype[Any]) -> Row:
        pairs, trips = asyncio.run(_amget_pairs(self.url, cache, texts, raw_keys, np_dtype,
                                                self.options.repeat))
        return _row("amget", dim, batch, dtype, pairs, (trips, 1))

    def memory_case(self, cache: EmbeddingsCache, dim: int, batch: int, dtype: str,
                    texts: list[str], raw_keys: list[str]) -> Row:
        sample = range(min(batch, 50))
        ours = [self.raw.memory_usage(cache.key(texts[i], MODEL)) or 0 for i in sample]
        raw = [self.raw.memory_usage(raw_keys[i]) or 0 for i in sample]
        mean_ours, mean_raw = statistics.mean(ours), statistics.mean(raw)
        return Row("bytes per entry", dim, batch, dtype, mean_ours, mean_ours, mean_raw,
                   mean_raw, round(mean_ours / mean_raw, 3), unit="B")


async def _amget_pairs(url: str, cache: EmbeddingsCache, texts: list[str], raw_keys: list[str],
                       np_dtype: np.dtype[Any], repeat: int) -> tuple[Pairs, int]:
    """``amget`` against ``redis.asyncio``'s ``MGET``, and its round trips."""
    raw = aioredis.Redis.from_url(url, socket_timeout=30)

    async def raw_amget() -> object:
        return [_vector(v, np_dtype) for v in await raw.mget(raw_keys)]

    try:
        backend: Any = cache.store.async_backend()
        deadline = time.monotonic() + 1  # until the in-process tier serves it (see _warm)
        while time.monotonic() < deadline:
            before = backend.round_trips
            await cache.amget(texts, MODEL)
            if backend.round_trips == before:
                break
            await asyncio.sleep(0.01)
        pairs = await compare_async(lambda: cache.amget(texts, MODEL), raw_amget, repeat,
                                    calls_for(len(texts)))
        before = backend.round_trips
        await cache.amget(texts, MODEL)
        return pairs, backend.round_trips - before
    finally:
        await raw.aclose()
        await cache.aclose()


def _warm(cache: EmbeddingsCache, call: Callable[[], object]) -> None:
    """Repeat a read until the in-process tier serves it (its invalidation connection
    comes up in the background)."""
    deadline = time.monotonic() + 1  # it connects in milliseconds; a batch bigger than
    while time.monotonic() < deadline and _trips(cache, call):  # the tier never gets there
        time.sleep(0.01)


def _trips(cache: EmbeddingsCache, call: Callable[[], object]) -> int:
    """Sequential round trips of one ``call`` on the cache's sync backend."""
    backend: Any = cache.store.backend()
    before = backend.round_trips
    call()
    return int(backend.round_trips - before)


def _vector(value: Any, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """What a raw client does with a reply: one ``frombuffer``."""
    return np.frombuffer(value, dtype)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def sqlite_rows(options: Options, progress: Callable[[str], None]) -> list[Row]:
    """The embedded default against plain sqlite3 on the same table and data."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="embmemo-bench-") as folder:
        for dim in options.dims:
            for batch in options.batches:
                progress(f"sqlite float32 dim={dim} batch={batch}")
                rows.extend(_sqlite_cases(folder, dim, batch, options.repeat))
    return rows


def _sqlite_cases(folder: str, dim: int, batch: int, repeat: int) -> list[Row]:
    cache = EmbeddingsCache(name="bench", url=f"sqlite:///{folder}/embmemo.sqlite3",
                            ttl=TTL_SECONDS)
    remote = EmbeddingsCache(name="bench", url=f"sqlite:///{folder}/embmemo.sqlite3",
                             ttl=TTL_SECONDS, local_cache=0)
    raw = _raw_sqlite(os.path.join(folder, "raw.sqlite3"))
    vectors = np.random.default_rng(dim).random((batch, dim), dtype=np.float32)
    texts = texts_for(batch)
    items = [{"text": t, "model_name": MODEL, "embedding": v} for t, v in zip(texts, vectors)]
    keys = [f"raw:{i}" for i in range(batch)]
    values = [v.tobytes() for v in vectors]

    def raw_write() -> None:
        expires = time.time() + TTL_SECONDS
        raw.execute("BEGIN IMMEDIATE")
        raw.executemany(
            "INSERT INTO entries (key, value, expires_at, ttl_ms) VALUES (?,?,?,?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value,"
            " expires_at = excluded.expires_at, ttl_ms = excluded.ttl_ms",
            [(k, v, expires, TTL_SECONDS * 1000) for k, v in zip(keys, values)])
        raw.execute("COMMIT")

    def raw_read() -> list[npt.NDArray[Any]]:
        found: dict[str, bytes] = {}
        for chunk in _chunks(keys, 500):
            marks = ",".join("?" * len(chunk))
            found.update(raw.execute(
                f"SELECT key, value FROM entries WHERE key IN ({marks})"  # noqa: S608
                " AND (expires_at IS NULL OR expires_at > ?)",
                (*chunk, time.time())).fetchall())
        return [np.frombuffer(found[k], np.float32) for k in keys]

    try:
        rows = [
            _row("sqlite mset (TTL)", dim, batch, "float32",
                 compare(lambda: cache.mset(items), raw_write, repeat, calls=calls_for(batch))),
            _row("sqlite mget", dim, batch, "float32",
                 compare(lambda: cache.mget(texts, MODEL), raw_read, repeat,
                         calls=calls_for(batch))),
            _row("sqlite mget, no local tier", dim, batch, "float32",
                 compare(lambda: remote.mget(texts, MODEL), raw_read, repeat,
                         calls=calls_for(batch))),
        ]
        rows.extend(_limit_cases(folder, dim, batch, repeat, vectors))
        return rows
    finally:
        for each in (cache, remote):
            each.clear()
            each.close()
        raw.close()


LIMITED_ENTRIES = 2000
"""The size limit of the "evicting" cases, in entries: eviction runs throughout them."""


def _limit_cases(folder: str, dim: int, batch: int, repeat: int,
                 vectors: npt.NDArray[Any]) -> list[Row]:
    """Size-limited files against an unlimited one (in the raw columns): under a limit it
    never reaches (the bookkeeping alone), and at a limit every write goes past (so each
    evicts), with fresh entries written and the newest read."""
    return [*_limit_case(folder, dim, batch, repeat, vectors, "under a limit", 1 << 40),
            *_limit_case(folder, dim, batch, repeat, vectors, "evicting",
                         LIMITED_ENTRIES * dim * 4)]


def _limit_case(folder: str, dim: int, batch: int, repeat: int, vectors: npt.NDArray[Any],
                case: str, limit: int) -> list[Row]:
    limited = EmbeddingsCache(name="bench", url=f"sqlite:///{folder}/limited.sqlite3",
                              ttl=TTL_SECONDS, max_size=limit, local_cache=0)
    unlimited = EmbeddingsCache(name="bench", url=f"sqlite:///{folder}/unlimited.sqlite3",
                                ttl=TTL_SECONDS, local_cache=0)
    salts = iter(range(10**9))
    last: dict[int, list[str]] = {}

    def write(cache: EmbeddingsCache, count: int = batch) -> None:
        texts = texts_for(count, salt=f"w{next(salts)}-")
        cache.mset([{"text": t, "model_name": MODEL, "embedding": vectors[i % batch]}
                    for i, t in enumerate(texts)])
        last[id(cache)] = texts[-batch:]

    try:
        for _ in range(4):  # past the evicting limit first: every write below evicts
            write(limited, LIMITED_ENTRIES // 2)
            write(unlimited, LIMITED_ENTRIES // 2)
        return [
            _row(f"sqlite mset, {case} vs none", dim, batch, "float32", compare(
                lambda: write(limited), lambda: write(unlimited), repeat,
                calls=calls_for(batch))),
            _row(f"sqlite mget, {case} vs none", dim, batch, "float32", compare(
                lambda: limited.mget(last[id(limited)], MODEL),
                lambda: unlimited.mget(last[id(unlimited)], MODEL), repeat,
                calls=calls_for(batch))),
        ]
    finally:
        for each in (limited, unlimited):
            each.clear()
            each.close()


def _raw_sqlite(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY,"
                       " value BLOB NOT NULL, expires_at REAL, ttl_ms INTEGER)")
    return connection


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        parser = f"hiredis {metadata.version('hiredis')}"
    except metadata.PackageNotFoundError:
        parser = "pure-Python parser"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "redis-py": redis.__version__,
        "parser": parser,
        "numpy": np.__version__,
        "sqlite": sqlite3.sqlite_version,
    }


def print_table(rows: Sequence[Row], out: TextIO = sys.stdout) -> None:
    """A fixed-width table: one line per case."""
    header = (f"{'case':<26} {'dim':>5} {'batch':>6} {'dtype':<8} {'embmemo best/med':>20} "
              f"{'raw best/med':>20} {'ratio':>6} {'pairs':>6} {'trips':>6}")
    print(header, file=out)
    print("-" * len(header), file=out)
    for row in rows:
        unit = row.unit
        trips = "" if row.round_trips is None else f"{row.round_trips}/{row.raw_round_trips}"
        digits = 0 if unit == "B" else 3  # bytes are whole
        print(f"{row.case:<26} {row.dim:>5} {row.batch:>6} {row.dtype:<8} "
              f"{row.embmemo_best:>9.{digits}f}/{row.embmemo_median:<8.{digits}f}{unit:<2} "
              f"{row.raw_best:>9.{digits}f}/{row.raw_median:<8.{digits}f}{unit:<2} "
              f"{row.ratio:>6.2f} {row.pair_ratio:>6.2f} {trips:>6}", file=out)
