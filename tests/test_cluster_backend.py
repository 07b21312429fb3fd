"""The Redis Cluster backend against a real three-primary cluster (the ``cluster_url`` fixture)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode, RedisCluster

from embmemo import EmbeddingsCache
from embmemo.errors import BackendError, ConfigError
from embmemo.urls import parse_redis_url

MODEL = "test-model"
HEX = "ab" * 32


def _items(count: int, dim: int = 8, prefix: str = "text") -> list[dict[str, object]]:
    return [
        {"text": f"{prefix} {i}", "model_name": MODEL,
         "embedding": np.arange(dim, dtype=np.float32) + i}
        for i in range(count)
    ]


@pytest.fixture
def raw(cluster_url: str) -> Iterator[RedisCluster]:
    """A plain redis-py cluster client, to look at what the backend wrote."""
    nodes = parse_redis_url(cluster_url).nodes
    client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes])
    yield client
    client.close()


@pytest.fixture
def cache(cluster_url: str, namespace: str) -> Iterator[EmbeddingsCache]:
    with EmbeddingsCache(name=namespace, url=cluster_url) as cache:
        yield cache


def test_url_parsing() -> None:
    url = parse_redis_url("rediss+cluster://me:p%40ss@a:7000, b:7001,[::1]:7002,c")
    assert url.nodes == (("a", 7000), ("b", 7001), ("::1", 7002), ("c", 6379))
    assert (url.tls, url.username, url.password) == (True, "me", "p@ss")
    assert parse_redis_url("redis+cluster://h:1?x=y").nodes == (("h", 1),)
    for bad in ("redis+cluster://h:notaport", "redis+cluster://", "redis+cluster://h:1/2"):
        with pytest.raises(ConfigError):
            EmbeddingsCache(url=bad)


def test_batch_spans_every_node_and_keeps_input_order(
    cache: EmbeddingsCache, raw: RedisCluster
) -> None:
    items = _items(300)
    keys = cache.mset(items)
    owners = {raw.nodes_manager.get_node_from_slot(raw.keyslot(key)).name for key in keys}
    assert len({raw.keyslot(key) for key in keys}) > 250
    assert owners == {node.name for node in raw.get_primaries()}
    assert len(owners) == 3

    texts = [f"text {i}" for i in range(300)]
    query = [*texts[:150], "never stored", texts[7], *texts[150:]]
    entries = cache.mget(query, MODEL)
    assert len(entries) == len(query)
    assert entries[150] is None
    for text, entry in zip(query, entries, strict=True):
        if text == "never stored":
            continue
        assert entry is not None
        assert entry.text == text
        assert entry.embedding[0] == int(text.split()[1])


def test_reads_larger_than_one_chunk(cache: EmbeddingsCache) -> None:
    texts = [f"big batch {i}" for i in range(2500)]
    cache.mset([{"text": t, "model_name": MODEL, "embedding": [float(i)]}
                for i, t in enumerate(texts)])
    entries = cache.mget(texts[::-1], MODEL)
    assert [e.embedding[0] if e else None for e in entries] == list(range(2499, -1, -1))
    assert cache.mexists(texts, MODEL) == [True] * 2500
    assert cache.clear() == 2500


def test_exists_and_drop(cache: EmbeddingsCache) -> None:
    cache.mset(_items(40))
    texts = [f"text {i}" for i in range(40)]
    assert cache.mexists([*texts, "missing"], MODEL) == [True] * 40 + [False]
    cache.mdrop(texts[:25], MODEL)
    assert cache.mexists(texts, MODEL) == [False] * 25 + [True] * 15
    assert cache.mget(texts[:25], MODEL) == [None] * 25


def test_ttl_is_set_and_slides_on_read(cache: EmbeddingsCache, raw: RedisCluster) -> None:
    short = cache.set("short-lived", MODEL, [1.0, 2.0], ttl=1.0)
    forever = cache.set("forever", MODEL, [3.0, 4.0])
    assert 0 < raw.pttl(short) <= 1000
    time.sleep(0.4)
    assert raw.pttl(short) <= 700
    assert cache.get("short-lived", MODEL) is not None
    assert 900 < raw.pttl(short) <= 1000
    assert cache.get("forever", MODEL) is not None
    assert raw.pttl(forever) == -1


def test_no_refresh_leaves_the_ttl_alone(
    cluster_url: str, namespace: str, raw: RedisCluster
) -> None:
    with EmbeddingsCache(name=namespace, url=cluster_url, refresh_ttl_on_read=False) as cache:
        key = cache.set("fixed", MODEL, [1.0], ttl=1.0)
        time.sleep(0.3)
        assert cache.get("fixed", MODEL) is not None
        assert raw.pttl(key) <= 700


def test_clear_touches_only_this_namespace(
    cache: EmbeddingsCache, raw: RedisCluster, namespace: str
) -> None:
    keys = cache.mset(_items(120))
    others = [f"{namespace}:v2:{HEX}", f"{namespace}2:{HEX}", f"{namespace}:config"]
    for key in others:
        raw.set(key, b"keep me")
    assert {raw.nodes_manager.get_node_from_slot(raw.keyslot(k)).name for k in keys} == {
        node.name for node in raw.get_primaries()
    }
    assert cache.clear() == 120
    assert sum(raw.exists(key) for key in keys) == 0
    assert [raw.get(key) for key in others] == [b"keep me"] * 3
    assert cache.clear() == 0
    raw.delete(*others[:1])
    raw.delete(*others[1:2])
    raw.delete(*others[2:])


def test_a_given_client_is_used_and_left_open(raw: RedisCluster, namespace: str) -> None:
    cache = EmbeddingsCache(redis_client=raw, name=namespace)
    assert cache.url.startswith("redis+cluster://")
    keys = cache.mset(_items(50))
    assert raw.exists(*keys) == 50
    assert cache.mget(["text 3", "nope"], MODEL)[0] is not None
    assert cache.clear() == 50
    cache.close()
    assert raw.ping()


async def test_a_given_async_client_is_used_and_left_open(
    cluster_url: str, namespace: str, raw: RedisCluster
) -> None:
    nodes = parse_redis_url(cluster_url).nodes
    client = AsyncRedisCluster(startup_nodes=[AsyncClusterNode(h, p) for h, p in nodes])
    try:
        cache = EmbeddingsCache(async_redis_client=client, name=namespace)
        keys = await cache.amset(_items(30))
        assert raw.exists(*keys) == 30
        assert (await cache.amget(["text 29"], MODEL))[0] is not None
        assert await cache.aclear() == 30
        await cache.aclose()
        assert await client.ping()
    finally:
        await client.aclose()


def test_a_decoding_client_is_refused(cluster_url: str, namespace: str) -> None:
    nodes = parse_redis_url(cluster_url).nodes
    client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes],
                          decode_responses=True)
    try:
        with pytest.raises(ConfigError, match="decode"):
            EmbeddingsCache(redis_client=client, name=namespace).get("x", MODEL)
    finally:
        client.close()


async def test_async_twins(cluster_url: str, namespace: str, raw: RedisCluster) -> None:
    cache = EmbeddingsCache(name=namespace, url=cluster_url, ttl=1.0)
    try:
        keys = await cache.amset(_items(200))
        assert len({raw.nodes_manager.get_node_from_slot(raw.keyslot(k)).name
                    for k in keys}) == 3
        texts = [f"text {i}" for i in range(200)]
        time.sleep(0.3)
        entries = await cache.amget([*texts[:100], "missing", texts[0], *texts[100:]], MODEL)
        assert entries[100] is None
        assert [e.text for e in entries if e is not None] == [*texts[:100], texts[0],
                                                               *texts[100:]]
        assert raw.pttl(keys[0]) > 900  # refreshed by the read
        assert await cache.amexists([texts[0], "missing"], MODEL) == [True, False]
        await cache.amdrop(texts[:50], MODEL)
        assert await cache.amexists(texts[:51], MODEL) == [False] * 50 + [True]
        assert await cache.aclear() == 150
        assert raw.exists(*keys) == 0
    finally:
        await cache.aclose()


def test_unreachable_cluster_fails_fast_with_backend_error() -> None:
    cache = EmbeddingsCache(name="unreachable", url="redis+cluster://127.0.0.1:1")
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        cache.get("x", MODEL)
    assert time.monotonic() - started < 5
    assert type(caught.value) is BackendError
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__  # no redis-py traceback chained on


async def test_unreachable_cluster_fails_fast_async() -> None:
    cache = EmbeddingsCache(name="unreachable", url="redis+cluster://127.0.0.1:1")
    started = time.monotonic()
    with pytest.raises(BackendError):
        await cache.amget(["x"], MODEL)
    assert time.monotonic() - started < 5
    await cache.aclose()


def test_password_never_shows() -> None:
    cache = EmbeddingsCache(name="secret", url="redis+cluster://user:s3cret@127.0.0.1:1")
    assert "s3cret" not in repr(cache)
    assert "s3cret" not in cache.url
    with pytest.raises(BackendError) as caught:
        cache.mset(_items(1))
    assert "s3cret" not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)
