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
from servers import RedisServer

from embmemo import BackendError, ConfigError, EmbeddingsCache

MODEL = "m"


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


def commands_sent(raw: redis.Redis, action: object) -> list[list[str]]:
    """Run ``action`` and return the commands the server saw (from the slow log)."""
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
    cache = EmbeddingsCache(name=namespace, url=redis_server.url, ttl=30)
    cache.set("warm", MODEL, [1.0])  # connects, so the log below holds only the operations
    texts = [f"t{i}" for i in range(50)]
    sent = commands_sent(raw, lambda: cache.mset(
        [{"text": t, "model_name": MODEL, "embedding": [1.0]} for t in texts]))
    names = [c[0].upper() for c in sent]
    assert names == ["SET"] * 50
    assert all(c[-2].upper() == "PX" and c[-1] == "30000" for c in sent)
    cache.get("warm", MODEL)  # loads the refresh script once
    sent = [c[0].upper() for c in commands_sent(raw, lambda: cache.mget(texts, MODEL))]
    in_script = {"MGET", "PEXPIRE"}  # the slow log also lists what the script calls
    assert [c for c in sent if c not in in_script] == ["EVALSHA"]
    assert sent.count("MGET") == 1 and sent.count("PEXPIRE") == 50
    no_refresh = EmbeddingsCache(name=namespace, url=redis_server.url, refresh_ttl_on_read=False)
    no_refresh.get("warm", MODEL)
    assert [c[0].upper() for c in commands_sent(raw, lambda: no_refresh.mget(texts, MODEL))] \
        == ["MGET"]
    sent = commands_sent(raw, cache.clear)
    assert {c[0].upper() for c in sent} <= {"SCAN", "UNLINK"}
    assert any(namespace + ":" in " ".join(c) for c in sent if c[0].upper() == "SCAN")


def test_refresh_restores_the_written_ttl_and_never_adds_one(
    redis_server: RedisServer, raw: redis.Redis, namespace: str
) -> None:
    cache = EmbeddingsCache(name=namespace, url=redis_server.url, ttl=100)
    with_ttl = cache.set("with", MODEL, [1.0], ttl=50)
    forever = EmbeddingsCache(name=namespace + "n", url=redis_server.url)
    without = forever.set("w", MODEL, [1.0])
    assert 0 < raw.pttl(with_ttl) <= 50_000
    raw.pexpire(with_ttl, 2_000)  # as if time had passed
    assert cache.get_by_key(with_ttl) is not None
    assert 49_000 < raw.pttl(with_ttl) <= 50_000  # its own 50 s, not the cache's 100 s
    assert forever.mget_by_keys([without])[0] is not None
    assert raw.pttl(without) == -1
    cache.exists_by_key(with_ttl)
    raw.pexpire(with_ttl, 2_000)
    cache.exists_by_key(with_ttl)
    assert raw.pttl(with_ttl) <= 2_000  # exists does not refresh


async def test_async_refresh_and_script_reload(
    redis_server: RedisServer, raw: redis.Redis, namespace: str
) -> None:
    cache = EmbeddingsCache(name=namespace, url=redis_server.url, ttl=20)
    key = await cache.aset("a", MODEL, [1.0])
    raw.script_flush()  # the refresh script must be reloaded transparently
    raw.pexpire(key, 1_000)
    assert (await cache.amget(["a"], MODEL))[0] is not None
    assert raw.pttl(key) > 19_000
    raw.script_flush()
    raw.pexpire(key, 1_000)
    assert cache.get("a", MODEL) is not None and raw.pttl(key) > 19_000
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
    with pytest.raises(ConfigError, match="async_redis_client"):
        await sync_only.aexists("given", MODEL)
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
    pool = cache.store.backend()._redis().connection_pool  # type: ignore[attr-defined]
    assert pool.connection_kwargs["socket_timeout"] == 1.0
    assert pool.connection_kwargs["socket_connect_timeout"] == 1.0
    assert pool.connection_kwargs["retry"].get_retries() == 1
    assert pool.max_connections == 64
    custom = EmbeddingsCache(url=redis_server.url,
                             connection_kwargs={"socket_timeout": 3.5, "max_connections": 4})
    custom.exists("t", MODEL)
    pool = custom.store.backend()._redis().connection_pool  # type: ignore[attr-defined]
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
