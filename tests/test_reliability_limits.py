"""Issue 6, limits and bad stored data: oversize values, huge batches, corrupted records."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import Model, running, vector_for
from servers import RedisServer

from embmemo import BackendError, EmbeddingsCache, InvalidInputError, cached_embedding
from embmemo.backends._limits import ReadChunker

MODEL = "limits-model"
ONE_MB = 1024 * 1024


def command_calls(raw: redis.Redis, command: str) -> int:
    return int(raw.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_oversize_values_are_refused_before_sending(namespace: str) -> None:
    with running("--proto-max-bulk-len", "1mb") as server, server.client() as raw:
        # local_cache=0: max_value_bytes is the network backend's own (no tier around it)
        cache = EmbeddingsCache(name=namespace, url=server.url, local_cache=0)
        cache.store.backend().max_value_bytes = ONE_MB  # type: ignore[attr-defined]
        cache.store.async_backend().max_value_bytes = ONE_MB  # type: ignore[attr-defined]
        huge = np.ones(300_000, dtype=np.float32)  # 1.2 MB encoded
        raw.config_resetstat()
        with pytest.raises(InvalidInputError, match="nothing was written"):
            cache.set("huge", MODEL, huge)
        with pytest.raises(InvalidInputError):  # one oversize item: none of the batch
            cache.mset([{"text": "ok", "model_name": MODEL, "embedding": [1.0]},
                        {"text": "huge", "model_name": MODEL, "embedding": huge}])
        with pytest.raises(InvalidInputError):
            asyncio.run(cache.aset("huge", MODEL, huge))
        assert command_calls(raw, "set") == 0  # never sent, so never retried either
        assert cache.mexists(["ok", "huge"], MODEL) == [False, False]
        assert raw.dbsize() == 0
        cache.set("fits", MODEL, np.ones(200_000, dtype=np.float32))  # 0.8 MB: accepted
        assert cache.get("fits", MODEL) is not None


def test_a_decorated_function_with_oversize_output_fails_open(namespace: str) -> None:
    with running("--proto-max-bulk-len", "1mb") as server, server.client() as raw:
        # local_cache=0: max_value_bytes is the network backend's own (no tier around it)
        cache = EmbeddingsCache(name=namespace, url=server.url, local_cache=0)
        cache.store.backend().max_value_bytes = ONE_MB  # type: ignore[attr-defined]

        @cached_embedding(model=MODEL, cache=cache)
        def embed(text: str) -> np.ndarray:
            return np.full(300_000, len(text), dtype=np.float32)

        raw.config_resetstat()
        for _ in range(3):
            result = embed("too big to cache")
            assert result.shape == (300_000,) and result[0] == len("too big to cache")
        assert command_calls(raw, "set") == 0
        assert embed.cache_info().errors > 0  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def small_buffers() -> Iterator[RedisServer]:
    """A server that drops a normal client whose pending reply passes 4 MB (2 MB soft)."""
    with running("--client-output-buffer-limit", "normal", "4mb", "2mb", "0") as server:
        yield server


def spy_on_shrink(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record every read the server dropped (ReadChunker.shrink calls)."""
    calls: list[int] = []
    original = ReadChunker.shrink

    def shrink(self: ReadChunker) -> None:
        calls.append(self.wave_size())
        original(self)

    monkeypatch.setattr(ReadChunker, "shrink", shrink)
    return calls


def test_a_server_that_drops_large_replies_is_read_in_smaller_waves(
    small_buffers: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dropped = spy_on_shrink(monkeypatch)
    vectors = np.random.default_rng(5).random((5000, 1536), dtype=np.float32)  # 31 MB
    writer = EmbeddingsCache(name=namespace, url=small_buffers.url)
    texts = [f"doc {i}" for i in range(5000)]
    writer.mset([{"text": t, "model_name": MODEL, "embedding": v}
                 for t, v in zip(texts, vectors)])
    reader = EmbeddingsCache(name=namespace, url=small_buffers.url)
    for _ in range(2):
        entries = reader.mget(texts, MODEL)
        assert all(e is not None for e in entries)
        np.testing.assert_array_equal(np.stack([e.embedding for e in entries]), vectors)
    assert len(dropped) == 1  # the first wave, sent twice, then a smaller budget for good

    async def read_async() -> None:
        reader = EmbeddingsCache(name=namespace, url=small_buffers.url)
        for _ in range(2):
            entries = await asyncio.wait_for(reader.amget(texts, MODEL), 30)
            np.testing.assert_array_equal(np.stack([e.embedding for e in entries]), vectors)
        await reader.aclose()

    asyncio.run(read_async())
    assert len(dropped) == 2
    assert writer.clear() == 5000


def test_values_larger_than_the_estimate_are_reread_in_smaller_chunks(
    small_buffers: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dropped = spy_on_shrink(monkeypatch)
    # 100 KB values: the first wave (sized for 8 KiB values) would be a 15 MB reply.
    vectors = np.random.default_rng(7).random((150, 25_000), dtype=np.float32)
    writer = EmbeddingsCache(name=namespace, url=small_buffers.url)
    texts = [f"long {i}" for i in range(150)]
    writer.mset([{"text": t, "model_name": MODEL, "embedding": v}
                 for t, v in zip(texts, vectors)])
    for sync in (True, False):
        reader = EmbeddingsCache(name=namespace, url=small_buffers.url)
        if sync:
            entries = reader.mget(texts, MODEL)
        else:
            entries = asyncio.run(asyncio.wait_for(reader.amget(texts, MODEL), 30))
        np.testing.assert_array_equal(np.stack([e.embedding for e in entries]), vectors)
        chunker = (reader.store.backend() if sync else reader.store.async_backend()).read_chunker  # type: ignore[attr-defined]
        assert chunker.wave_size() * 100_000 <= 2 * ONE_MB
    assert 2 <= len(dropped) <= 4  # once or twice per reader; never again after that
    writer.clear()


def test_read_chunker_bounds_replies() -> None:
    chunker = ReadChunker()
    assert chunker.wave_size() * 8 * 1024 <= 8 * ONE_MB
    assert chunker.chunk_size() * 8 * 1024 <= ONE_MB
    chunker.observe([b"x" * 3_200, None])
    assert chunker.wave_size() * 3_200 <= 8 * ONE_MB and chunker.wave_size() >= 1000
    chunker.shrink()
    assert chunker.wave_size() * 3_200 * 8 <= ONE_MB
    assert ReadChunker(assumed_value_bytes=10 * ONE_MB).chunk_size() == 1


def test_a_dead_server_is_not_retried_as_a_dropped_reply(namespace: str) -> None:
    cache = EmbeddingsCache(name=namespace, url="redis://127.0.0.1:1/0")
    with pytest.raises(BackendError):
        cache.mget([f"t{i}" for i in range(500)], MODEL)
    assert cache.store.backend().read_chunker.largest_value == 8 * 1024  # type: ignore[attr-defined]


# -- bad data under entry keys -----------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[RedisServer]:
    with running() as server:
        yield server


def test_keys_of_another_type_are_misses_not_errors(fuzz_server: RedisServer,
                                                    namespace: str) -> None:
    cache = EmbeddingsCache(name=namespace, url=fuzz_server.url, ttl=60)
    with fuzz_server.client() as raw:
        keys = cache.mset([{"text": t, "model_name": MODEL, "embedding": vector_for(t)}
                           for t in ("list", "hash", "good")])
        raw.delete(keys[0], keys[1])
        raw.rpush(keys[0], b"EMBM")
        raw.hset(keys[1], "f", b"v")
        for refresh in (True, False):
            reader = EmbeddingsCache(name=namespace, url=fuzz_server.url,
                                     refresh_ttl_on_read=refresh)
            got = reader.mget(["list", "hash", "good"], MODEL)
            assert got[0] is None and got[1] is None and got[2] is not None
            assert asyncio.run(reader.aget("list", MODEL)) is None
        assert raw.type(keys[0]) == b"list"  # left as found


def _mutations() -> st.SearchStrategy[tuple[str, object]]:
    return st.one_of(
        st.tuples(st.just("random"), st.binary(max_size=400)),
        st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
        st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                                       st.integers(0, 7)),
                                            min_size=1, max_size=3)),
        st.tuples(st.just("append"), st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("swap"), st.none()),  # another key's (valid) record
    )


def _mutate(value: bytes, other: bytes, mutation: tuple[str, object]) -> bytes:
    kind, arg = mutation
    if kind == "random":
        return arg  # type: ignore[return-value]
    if kind == "truncate":
        return value[: int(len(value) * arg)]  # type: ignore[operator]
    if kind == "append":
        return value + arg  # type: ignore[operator]
    if kind == "swap":
        return other
    damaged = bytearray(value)
    flipped = set()
    for where, bit in arg:  # type: ignore[attr-defined]
        position = int(len(damaged) * where)
        if (position, bit) not in flipped:
            flipped.add((position, bit))
            damaged[position] ^= 1 << bit
    return bytes(damaged)


@pytest.fixture(scope="module")
def fuzz_cache(fuzz_server: RedisServer) -> Iterator[tuple[EmbeddingsCache, redis.Redis,
                                                            dict[str, bytes]]]:
    cache = EmbeddingsCache(name="fuzz", url=fuzz_server.url, ttl=3600)
    texts = ["victim", "neighbour"]
    for text in texts:
        cache.set(text, MODEL, vector_for(text, 16), metadata={"n": text})
    raw = fuzz_server.client()
    originals = {t: raw.get(cache.key(t, MODEL)) for t in texts}
    yield cache, raw, originals  # type: ignore[misc]
    cache.clear()
    raw.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=_mutations())
def test_corrupted_records_are_misses(
    fuzz_cache: tuple[EmbeddingsCache, redis.Redis, dict[str, bytes]],
    mutation: tuple[str, object],
) -> None:
    cache, raw, originals = fuzz_cache
    key = cache.key("victim", MODEL)
    damaged = _mutate(originals["victim"], originals["neighbour"], mutation)
    raw.set(key, damaged, ex=3600)
    try:
        assert cache.get("victim", MODEL) is None
        assert cache.get_by_key(key) is None
        got = cache.mget(["neighbour", "victim", "neighbour"], MODEL)
        assert got[1] is None and got[0] is not None and got[2] is not None
        np.testing.assert_array_equal(got[0].embedding, vector_for("neighbour", 16))
        assert asyncio.run(cache.aget("victim", MODEL)) is None
        model = Model()

        @cached_embedding(model=MODEL, cache=cache)
        def embed(texts: list[str]) -> np.ndarray:
            model.computed.update(texts)
            return np.stack([vector_for(t, 16) for t in texts])

        result = embed(["victim", "neighbour"])
        np.testing.assert_array_equal(result, np.stack([vector_for("victim", 16),
                                                        vector_for("neighbour", 16)]))
        assert model.computed["victim"] == 1 and model.computed["neighbour"] == 0
    finally:
        raw.set(key, originals["victim"], ex=3600)
