"""``embmemo bench``: embmemo next to raw redis-py (and raw sqlite3) doing the same work.

Every case runs the embmemo operation and its raw equivalent on the same bytes, on the
same server, alternately, ``repeat`` times; the table shows the best and the median of
each and their ratio. Nothing is asserted: the numbers are for reading.

Raw equivalents: ``MGET`` + ``numpy.frombuffer`` for reads (also for sliding-TTL reads,
whose refresh embmemo adds in the same round trip), pipelined ``SET EX`` for writes,
``GET``/``SET EX`` for single items, ``redis.asyncio`` for ``amget``, a key holding only
the vector bytes for memory, and plain ``sqlite3`` (the same table, one transaction per
write, the same chunked ``SELECT ... IN``) for the embedded default.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
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

TTL_SECONDS = 3600
MODEL = "bench/model"


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
    repeat: int = 7


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 4)


def compare(ours: Callable[[], object], raw: Callable[[], object], repeat: int,
            before_each: Callable[[], object] | None = None) -> tuple[list[float], list[float]]:
    """Alternate the two, after one warm-up each, so drift hits both alike."""
    ours_times: list[float] = []
    raw_times: list[float] = []
    for attempt in range(repeat + 1):
        for fn, times in ((raw, raw_times), (ours, ours_times)):
            if before_each is not None:
                before_each()
            started = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - started
            if attempt:
                times.append(elapsed)
    return ours_times, raw_times


def _row(case: str, dim: int, batch: int, dtype: str,
         times: tuple[list[float], list[float]]) -> Row:
    ours, raw = times
    return Row(case, dim, batch, dtype, _ms(min(ours)), _ms(statistics.median(ours)),
               _ms(min(raw)), _ms(statistics.median(raw)))


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

    @contextmanager
    def caches(self, dtype: str) -> Iterator[tuple[EmbeddingsCache, EmbeddingsCache, str]]:
        name = f"embmemo-bench-{self.tag}"
        plain = EmbeddingsCache(name=name, url=self.url, ttl=TTL_SECONDS, dtype=dtype,
                                refresh_ttl_on_read=False,
                                connection_kwargs={"socket_timeout": 30})
        sliding = EmbeddingsCache(name=name, url=self.url, ttl=TTL_SECONDS, dtype=dtype,
                                  connection_kwargs={"socket_timeout": 30})
        raw_prefix = f"embmemo-bench-raw-{self.tag}:"
        try:
            yield plain, sliding, raw_prefix
        finally:
            plain.clear()
            for batch in _chunks([k for k in self.raw.scan_iter(match=raw_prefix + "*",
                                                                 count=1000)], 1000):
                self.raw.unlink(*batch)
            plain.close()
            sliding.close()

    def cases(self, dim: int, batch: int, dtype: str) -> list[Row]:
        repeat = self.options.repeat
        np_dtype = np.dtype(dtype)
        vectors = np.random.default_rng(dim + batch).random((batch, dim), dtype=np.float32)
        stored = vectors.astype(np_dtype)
        texts = texts_for(batch)
        rows: list[Row] = []
        with self.caches(dtype) as (plain, sliding, raw_prefix):
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
                             compare(lambda: plain.mset(items), raw_set_ex, repeat)))
            rows.append(_row("mget", dim, batch, dtype,
                             compare(lambda: plain.mget(texts, MODEL), raw_mget, repeat)))
            rows.append(_row("mget (sliding TTL)", dim, batch, dtype,
                             compare(lambda: sliding.mget(texts, MODEL), raw_mget, repeat)))
            if batch == 1:
                rows.append(_row("set (TTL)", dim, batch, dtype, compare(
                    lambda: plain.set(texts[0], MODEL, vectors[0]),
                    lambda: raw.set(raw_keys[0], raw_values[0], ex=TTL_SECONDS), repeat)))
                rows.append(_row("get", dim, batch, dtype, compare(
                    lambda: plain.get(texts[0], MODEL),
                    lambda: _vector(raw.get(raw_keys[0]), np_dtype), repeat)))
            rows.extend(self.decorator_cases(plain, dim, batch, dtype, vectors, raw_mget,
                                             raw_set_ex))
            rows.append(self.amget_case(plain, dim, batch, dtype, texts, raw_keys, np_dtype))
            rows.append(self.memory_case(plain, dim, batch, dtype, texts, raw_keys))
        return rows

    def decorator_cases(self, cache: EmbeddingsCache, dim: int, batch: int, dtype: str,
                        vectors: npt.NDArray[Any], raw_mget: Callable[[], object],
                        raw_set_ex: Callable[[], object]) -> list[Row]:
        @cached_embedding(model=MODEL, cache=cache)
        def embed(texts: list[str]) -> npt.NDArray[Any]:
            return vectors[: len(texts)]  # a free "model", so only caching is measured

        texts = texts_for(batch)
        embed(texts)
        warm = compare(lambda: embed(texts), raw_mget, self.options.repeat)
        salts = iter(range(10**9))

        def cold() -> None:
            embed(texts_for(batch, salt=f"c{next(salts)}-"))

        missing = [f"embmemo-bench-missing-{self.tag}:{i}" for i in range(batch)]

        def raw_cold() -> None:  # a raw read that misses, then the raw write of the same bytes
            self.raw.mget(missing)
            raw_set_ex()

        return [_row("decorator warm", dim, batch, dtype, warm),
                _row("decorator cold", dim, batch, dtype,
                     compare(cold, raw_cold, self.options.repeat))]

    def amget_case(self, cache: EmbeddingsCache, dim: int, batch: int, dtype: str,
                   texts: list[str], raw_keys: list[str], np_dtype: np.dtype[Any]) -> Row:
        async def measure() -> tuple[list[float], list[float]]:
            raw = aioredis.Redis.from_url(self.url, socket_timeout=30)

            async def raw_amget() -> object:
                return [_vector(v, np_dtype) for v in await raw.mget(raw_keys)]

            try:
                return await compare_async(lambda: cache.amget(texts, MODEL), raw_amget,
                                           self.options.repeat)
            finally:
                await raw.aclose()
                await cache.aclose()

        return _row("amget", dim, batch, dtype, asyncio.run(measure()))

    def memory_case(self, cache: EmbeddingsCache, dim: int, batch: int, dtype: str,
                    texts: list[str], raw_keys: list[str]) -> Row:
        sample = range(min(batch, 50))
        ours = [self.raw.memory_usage(cache.key(texts[i], MODEL)) or 0 for i in sample]
        raw = [self.raw.memory_usage(raw_keys[i]) or 0 for i in sample]
        mean_ours, mean_raw = statistics.mean(ours), statistics.mean(raw)
        return Row("bytes per entry", dim, batch, dtype, mean_ours, mean_ours, mean_raw,
                   mean_raw, unit="B")


async def compare_async(ours: Callable[[], Awaitable[object]],
                        raw: Callable[[], Awaitable[object]],
                        repeat: int) -> tuple[list[float], list[float]]:
    """``compare`` for coroutines."""
    ours_times: list[float] = []
    raw_times: list[float] = []
    for attempt in range(repeat + 1):
        for fn, times in ((raw, raw_times), (ours, ours_times)):
            started = time.perf_counter()
            await fn()
            if attempt:
                times.append(time.perf_counter() - started)
    return ours_times, raw_times


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
                            ttl=TTL_SECONDS, refresh_ttl_on_read=False)
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
        return [
            _row("sqlite mset (TTL)", dim, batch, "float32",
                 compare(lambda: cache.mset(items), raw_write, repeat)),
            _row("sqlite mget", dim, batch, "float32",
                 compare(lambda: cache.mget(texts, MODEL), raw_read, repeat)),
        ]
    finally:
        cache.clear()
        cache.close()
        raw.close()


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
    header = (f"{'case':<20} {'dim':>5} {'batch':>6} {'dtype':<8} {'embmemo best/med':>20} "
              f"{'raw best/med':>20} {'ratio':>6}")
    print(header, file=out)
    print("-" * len(header), file=out)
    for row in rows:
        unit = row.unit
        print(f"{row.case:<20} {row.dim:>5} {row.batch:>6} {row.dtype:<8} "
              f"{row.embmemo_best:>9.3f}/{row.embmemo_median:<8.3f}{unit:<2} "
              f"{row.raw_best:>9.3f}/{row.raw_median:<8.3f}{unit:<2} {row.ratio:>6.2f}",
              file=out)
