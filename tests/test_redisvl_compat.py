"""A RedisVL user switching by changing one import: RedisVL's documented behaviour of
``EmbeddingsCache``, in both its 0.6 spelling (``text``) and today's (``content``), on every
backend, sync and async."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import numpy as np
import pytest
import redis
from contract import Api
from servers import RedisServer

from embmemo import (
    CacheEntry,
    ConfigError,
    EmbeddingsCache,
    InvalidInputError,
    InvalidTypeError,
)

MODEL = "text-embedding-ada-002"
VECTOR = [0.1, 0.2, 0.3]


async def test_content_and_text_spell_the_same_thing(api: Api) -> None:
    key = await api.set(content="What is ML?", model_name=MODEL, embedding=VECTOR,
                        metadata={"source": "user"})
    assert key == await api.set(text="What is ML?", model_name=MODEL, embedding=VECTOR,
                                metadata={"source": "user"})
    entry = await api.get(content="What is ML?", model_name=MODEL)
    assert entry is not None
    assert entry["content"] == entry["text"] == entry.content == entry.text == "What is ML?"
    assert await api.exists(content="What is ML?", model_name=MODEL)
    keys = await api.mset([
        {"content": "What is AI?", "model_name": MODEL, "embedding": VECTOR},
        {"text": "What is DL?", "model_name": MODEL, "embedding": VECTOR},
    ])
    found = await api.mget(contents=["What is AI?", "What is DL?", "never"], model_name=MODEL)
    assert [e["content"] if e else None for e in found] == ["What is AI?", "What is DL?", None]
    assert [e.key if e else None for e in found[:2]] == keys
    assert await api.mexists(contents=["What is AI?", "never"], model_name=MODEL) == [True,
                                                                                    False]
    await api.mdrop(contents=["What is AI?"], model_name=MODEL)
    await api.drop(content="What is ML?", model_name=MODEL)
    assert await api.mexists(texts=["What is AI?", "What is ML?", "What is DL?"],
                             model_name=MODEL) == [False, False, True]


async def test_both_spellings_at_once_or_neither_is_an_error(api: Api) -> None:
    with pytest.raises(InvalidInputError, match="not both"):
        await api.set(text="a", content="a", model_name=MODEL, embedding=VECTOR)
    with pytest.raises(InvalidInputError, match="not both"):
        await api.mget(texts=["a"], contents=["a"], model_name=MODEL)
    with pytest.raises(InvalidInputError, match="not both"):
        await api.mset([{"text": "a", "content": "a", "model_name": MODEL,
                         "embedding": VECTOR}])
    with pytest.raises(InvalidTypeError, match="required"):
        await api.get(model_name=MODEL)
    with pytest.raises(InvalidTypeError, match="model_name is required"):
        await api.mget(contents=["a"])
    assert await api.exists(content="a", model_name=MODEL) is False  # nothing was written


async def test_by_key_methods_on_foreign_keys_answer_like_redisvl(api: Api) -> None:
    assert await api.get_by_key("nonexistent:key") is None
    assert await api.exists_by_key("nonexistent:key") is False
    await api.drop_by_key("nonexistent:key")
    key = await api.set(content="kept", model_name=MODEL, embedding=VECTOR)
    assert [e is not None for e in await api.mget_by_keys(["nonexistent:key", key])] == [
        False, True]
    assert await api.mexists_by_keys([key, "x:y"]) == [True, False]
    await api.mdrop_by_keys(["x:y", key])
    assert await api.exists_by_key(key) is False


@pytest.mark.parametrize("make_batch", [
    lambda texts: (t for t in texts),
    lambda texts: np.array(texts),
    lambda texts: tuple(texts),
    lambda texts: dict.fromkeys(texts).keys(),
], ids=["generator", "numpy-array", "tuple", "dict-keys"])
async def test_batch_methods_take_any_iterable(
    api: Api, make_batch: Callable[[list[str]], object]
) -> None:
    texts = ["one", "two", "three"]
    await api.mset([{"content": t, "model_name": MODEL, "embedding": VECTOR} for t in texts])
    found = await api.mget(make_batch(texts), MODEL)
    assert [e.text if e else None for e in found] == texts
    assert await api.mexists(make_batch(texts), MODEL) == [True] * 3
    keys = [e.key for e in found if e]
    assert all(await api.mexists_by_keys(make_batch(keys)))
    assert await api.mexists(set(texts), MODEL) == [True] * 3  # a set: its own order
    await api.mdrop(make_batch(texts), MODEL)
    assert await api.mexists(texts, MODEL) == [False] * 3


async def test_expire_changes_one_entrys_ttl(api: Api) -> None:
    cache = api.cache
    key = await api.set(content="expiring", model_name=MODEL, embedding=VECTOR)
    await api.expire(key)  # neither a TTL here nor a cache default: nothing to do
    entry = await api.get_by_key(key)
    assert entry is not None and entry.ttl is None
    await api.expire(key, 60)
    entry = await api.get_by_key(key)
    assert entry is not None and entry.ttl == 60.0  # what later sliding refreshes re-apply
    cache.set_ttl(30)
    await api.expire(key)  # None: the cache default now
    entry = await api.get_by_key(key)
    assert entry is not None and entry.ttl == 30.0
    np.testing.assert_allclose(entry.embedding, VECTOR, rtol=1e-6)
    await api.expire("nonexistent:key", 5)  # another namespace's key: left alone
    await api.expire(cache.name + ":" + "0" * 64, 5)  # no such entry: nothing happens
    await api.expire(key, 0.3)
    await asyncio.sleep(0.5)
    assert await api.get_by_key(key) is None


async def test_set_ttl_changes_the_default_of_later_writes(api: Api) -> None:
    cache = api.cache
    assert cache.ttl is None
    cache.set_ttl(45)
    assert cache.ttl == 45.0
    first = await api.get_by_key(await api.set(content="a", model_name=MODEL,
                                               embedding=VECTOR))
    cache.set_ttl()
    second = await api.get_by_key(await api.set(content="b", model_name=MODEL,
                                                embedding=VECTOR))
    assert first is not None and first.ttl == 45.0
    assert second is not None and second.ttl is None
    with pytest.raises(ValueError, match="ttl"):
        cache.set_ttl(0)  # RedisVL reads 0 as "no TTL"; embmemo refuses it, as everywhere


async def test_disconnect_and_reconnect(api: Api) -> None:
    await api.set(content="before", model_name=MODEL, embedding=VECTOR)
    await api.disconnect()
    await api.disconnect()  # twice is fine
    assert await api.get(content="before", model_name=MODEL) is not None  # reconnects


async def test_entries_work_as_redisvl_dicts(api: Api) -> None:
    before = time.time()
    await api.set(content="plain", model_name=MODEL, embedding=VECTOR)
    await api.set(content="tagged", model_name=MODEL, embedding=VECTOR,
                  metadata={"source": "docs", "n": 2})
    plain = await api.get(content="plain", model_name=MODEL)
    tagged = await api.get(content="tagged", model_name=MODEL)
    assert isinstance(plain, CacheEntry) and isinstance(tagged, CacheEntry)
    assert "metadata" not in plain and "metadata" in tagged
    assert plain.get("metadata") is None and tagged["metadata"] == {"source": "docs", "n": 2}
    data = tagged.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) >= {"entry_id", "content", "model_name", "embedding", "inserted_at",
                         "metadata", "ttl"}
    assert data["embedding"] == pytest.approx(VECTOR) and isinstance(data["embedding"][0],
                                                                     float)
    assert data["inserted_at"] >= before - 1 and "metadata" not in plain.to_dict()
    copied = tagged.copy()
    copied["metadata"]["source"] = "changed"
    assert tagged["metadata"]["source"] == "docs"  # a copy, not a view
    tagged["score"] = 0.93  # as on RedisVL's dict
    tagged["content"] = "renamed"
    assert tagged["score"] == 0.93 and tagged.text == "renamed" and "score" in dict(tagged)
    assert isinstance(tagged.embedding, np.ndarray)  # the fast path stays


# -- a cache given only a sync client ---------------------------------------------------------


async def test_async_methods_of_a_cache_given_only_a_sync_client(
    redis_server: RedisServer, namespace: str
) -> None:
    def ours() -> int:
        with redis_server.client() as raw:
            return len(raw.client_list()) - 1  # every connection but this probe's

    baseline = ours()  # the server is shared: other tests' caches may be connected
    clients = [redis.Redis(host="127.0.0.1", port=redis_server.port),
               redis.Redis(unix_socket_path=redis_server.unix_socket)]
    for client in clients:
        cache = EmbeddingsCache(name=namespace, redis_client=client)
        await cache.aset(content="from async", model_name=MODEL, embedding=VECTOR)
        assert cache.get(content="from async", model_name=MODEL) is not None
        assert (await cache.amget(contents=["from async"], model_name=MODEL))[0] is not None
        await cache.aclear()
        await cache.adisconnect()
        await cache.adisconnect()
        assert client.ping()  # the caller's client stays open
        client.close()
    assert ours() <= baseline  # what embmemo opened for the async methods, it closed


def test_a_sync_cluster_client_alone_names_the_async_client_to_pass(cluster_url: str) -> None:
    from redis.cluster import ClusterNode, RedisCluster

    from embmemo.urls import parse_redis_url

    nodes = parse_redis_url(cluster_url).nodes
    client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes])
    try:
        cache = EmbeddingsCache(redis_client=client)
        with pytest.raises(ConfigError, match="async_redis_client"):
            asyncio.run(cache.aget(content="x", model_name=MODEL))
    finally:
        client.close()


def test_the_decorator_says_how_to_pass_an_array_of_texts() -> None:
    from embmemo import cached_embedding

    @cached_embedding(model=MODEL, cache=EmbeddingsCache(url="memory://compat"))
    def embed(texts: list[str]) -> list[list[float]]:
        return [VECTOR for _ in texts]

    with pytest.raises(TypeError, match=r"ndarray \(pass \.tolist\(\)\)"):
        embed(np.array(["a", "b"]))  # type: ignore[arg-type]
    assert embed(np.array(["a", "b"]).tolist()) == [pytest.approx(VECTOR)] * 2
