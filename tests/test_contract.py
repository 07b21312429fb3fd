"""Every EmbeddingsCache behaviour, on every backend, through the sync and the async API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest
from contract import Api

from embmemo import CacheEntry, EmbeddingsCache, InvalidTypeError
from embmemo.backends import Record
from embmemo.errors import EmbmemoError

MODEL = "test/model-v1"


def vec(seed: int, dim: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).random(dim, dtype=np.float32)


def item(text: str | bytes, seed: int, **extra: object) -> dict[str, object]:
    return {"text": text, "model_name": MODEL, "embedding": vec(seed), **extra}


async def test_set_then_get_returns_the_entry(api: Api) -> None:
    before = time.time()
    key = await api.set("What is ML?", MODEL, vec(1), metadata={"category": "ai"})
    entry = await api.get("What is ML?", MODEL)
    assert isinstance(entry, CacheEntry)
    assert entry.key == key == f"{api.cache.name}:{entry.entry_id}"
    assert len(entry.entry_id) == 64 and entry.entry_id == entry.entry_id.lower()
    assert entry.text == "What is ML?" and entry.model_name == MODEL
    assert entry.embedding.dtype == np.float32 and entry.embedding.shape == (8,)
    np.testing.assert_array_equal(entry.embedding, vec(1))
    assert entry.metadata == {"category": "ai"}
    assert before - 1 <= entry.inserted_at <= time.time() + 1
    assert entry["text"] == "What is ML?" and entry["metadata"] == {"category": "ai"}
    assert np.array(entry["embedding"]).shape == (8,)
    assert dict(entry)["model_name"] == MODEL


async def test_miss_exists_and_drop(api: Api) -> None:
    assert await api.get("absent", MODEL) is None
    assert await api.exists("absent", MODEL) is False
    await api.set("present", MODEL, [0.5, 0.25])
    assert await api.exists("present", MODEL) is True
    assert await api.exists("present", "another/model") is False
    await api.drop("present", MODEL)
    assert await api.exists("present", MODEL) is False
    await api.drop("present", MODEL)  # dropping a missing entry is fine


async def test_list_and_tuple_embeddings_round_trip(api: Api) -> None:
    await api.set("list", MODEL, [1.0, 2.0, 3.5])
    await api.set("tuple", MODEL, (1, 2, 3))
    np.testing.assert_array_equal((await api.get("list", MODEL)).embedding, [1.0, 2.0, 3.5])
    np.testing.assert_array_equal((await api.get("tuple", MODEL)).embedding, [1, 2, 3])


async def test_by_key_operations(api: Api) -> None:
    key = await api.set("keyed", MODEL, vec(2), metadata={"n": 1})
    assert await api.exists_by_key(key) is True
    entry = await api.get_by_key(key)
    assert entry is not None and entry.text == "keyed" and entry.metadata == {"n": 1}
    await api.drop_by_key(key)
    assert await api.exists_by_key(key) is False
    assert await api.get_by_key(key) is None


async def test_keys_of_another_namespace_are_left_alone(api: Api) -> None:
    own = await api.set("own", MODEL, [1.0])
    foreign = api.cache.name + "2:" + "a" * 64  # a sibling namespace's entry key
    api.cache.store.backend().set_many([Record(foreign, b"not ours", None)])
    for malformed in (foreign, api.cache.name + ":" + "A" * 64, "nonexistent:key", ""):
        assert await api.get_by_key(malformed) is None
        assert await api.exists_by_key(malformed) is False
        await api.drop_by_key(malformed)  # nothing to do, and no error
    assert api.cache.store.backend().exists_many([foreign]) == [True]  # never touched
    got = await api.mget_by_keys([foreign, own, "x"])
    assert got[0] is None and got[2] is None and got[1] is not None
    assert await api.mexists_by_keys([foreign, own]) == [False, True]
    await api.mdrop_by_keys([foreign, own])
    assert api.cache.store.backend().exists_many([foreign, own]) == [True, False]
    api.cache.store.backend().delete_many([foreign])
    with pytest.raises(InvalidTypeError):
        await api.mget_by_keys(own)  # a str, not a list of keys
    with pytest.raises(InvalidTypeError):
        await api.get_by_key(42)


async def test_str_and_bytes_are_different_entries(api: Api) -> None:
    k_str = await api.set("abc", MODEL, [1.0])
    k_bytes = await api.set(b"abc", MODEL, [2.0])
    k_hex = await api.set("616263", MODEL, [3.0])
    assert len({k_str, k_bytes, k_hex}) == 3
    entry = await api.get(b"abc", MODEL)
    assert entry.text == b"abc" and entry.embedding[0] == 2.0
    assert (await api.get("abc", MODEL)).embedding[0] == 1.0


async def test_no_separator_collisions(api: Api) -> None:
    k1 = await api.set("b:c", "a", [1.0])
    k2 = await api.set("c", "a:b", [2.0])
    assert k1 != k2
    assert (await api.get("b:c", "a")).embedding[0] == 1.0
    assert (await api.get("c", "a:b")).embedding[0] == 2.0
    assert "b:c" not in k1 and "a:b" not in k2


async def test_batch_operations_keep_input_order(api: Api) -> None:
    texts = [f"text {i}" for i in range(20)]
    keys = await api.mset([item(t, i, metadata={"i": i}) for i, t in enumerate(texts)])
    assert len(keys) == 20 and len(set(keys)) == 20
    assert keys == [api.cache.key(t, MODEL) for t in texts]
    query = [texts[3], "missing", texts[0], texts[3], texts[19]]
    entries = await api.mget(query, MODEL)
    assert [e.text if e else None for e in entries] == [texts[3], None, texts[0], texts[3],
                                                         texts[19]]
    assert entries[0].metadata == {"i": 3}
    np.testing.assert_array_equal(entries[4].embedding, vec(19))
    assert await api.mexists(query, MODEL) == [True, False, True, True, True]
    by_key = await api.mget_by_keys([keys[5], keys[1]])
    assert [e.text for e in by_key] == [texts[5], texts[1]]
    assert await api.mexists_by_keys([keys[2], api.cache.key("nope", MODEL)]) == [True, False]
    await api.mdrop(texts[:10], MODEL)
    assert await api.mexists(texts[8:12], MODEL) == [False, False, True, True]
    await api.mdrop_by_keys(keys[10:15])
    assert sum(await api.mexists(texts, MODEL)) == 5
    assert await api.mget([], MODEL) == [] and await api.mset([]) == []


async def test_mset_with_duplicate_texts_last_one_wins(api: Api) -> None:
    keys = await api.mset([item("dup", 1), item("dup", 2)])
    assert keys[0] == keys[1]
    np.testing.assert_array_equal((await api.get("dup", MODEL)).embedding, vec(2))


async def test_model_params_are_part_of_the_identity(api: Api) -> None:
    k8 = await api.set("t", MODEL, [8.0], model_params={"dimensions": 8})
    k16 = await api.set("t", MODEL, [16.0], model_params={"dimensions": 16})
    assert k8 != k16 != api.cache.key("t", MODEL)
    assert (await api.get("t", MODEL, model_params={"dimensions": 16})).embedding[0] == 16.0
    assert await api.get("t", MODEL) is None
    assert await api.get("t", MODEL, model_params={}) is None  # {} is the bare model
    assert (await api.mget(["t"], MODEL, model_params={"dimensions": 8}))[0].embedding[0] == 8.0


async def test_default_ttl_expires_entries(make_cache: Callable[..., EmbeddingsCache]) -> None:
    cache = make_cache(ttl=0.3)
    key = cache.set("short", MODEL, [1.0])
    assert cache.exists_by_key(key) and cache.get_by_key(key).ttl == pytest.approx(0.3)
    time.sleep(0.5)
    assert not cache.exists_by_key(key)
    assert cache.get_by_key(key) is None


async def test_ttl_precedence(make_cache: Callable[..., EmbeddingsCache]) -> None:
    cache = make_cache(ttl=100)
    assert cache.get_by_key(cache.set("default", MODEL, [1.0])).ttl == 100
    assert cache.get_by_key(cache.set("own", MODEL, [1.0], ttl=7)).ttl == 7
    keys = cache.mset([item("batch", 1), item("item", 2, ttl=3)], ttl=50)
    assert [e.ttl for e in cache.mget_by_keys(keys)] == [50, 3]
    forever = make_cache(name=cache.name + "-forever")
    assert forever.get_by_key(forever.set("none", MODEL, [1.0])).ttl is None


@pytest.mark.parametrize("bad_ttl", [0, -1, -0.5, "10", float("nan"), float("inf"), True])
async def test_invalid_ttls_are_value_errors(api: Api, bad_ttl: object) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await api.set("t", MODEL, [1.0], ttl=bad_ttl)
    with pytest.raises(ValueError, match="ttl"):
        await api.mset([item("a", 1)], ttl=bad_ttl)
    with pytest.raises(ValueError, match="ttl"):
        await api.mset([item("ok", 1), item("b", 2, ttl=bad_ttl)])
    assert await api.exists("ok", MODEL) is False  # the valid item was not written either
    with pytest.raises(ValueError, match="ttl"):
        EmbeddingsCache(url="memory://", ttl=bad_ttl)  # type: ignore[arg-type]


async def test_reads_slide_the_ttl_each_entry_was_written_with(
    make_cache: Callable[..., EmbeddingsCache],
) -> None:
    cache = make_cache(ttl=60)
    short = cache.set("short", MODEL, [1.0], ttl=1.0)
    forever_cache = make_cache(name=cache.name + "x")
    forever = forever_cache.set("forever", MODEL, [2.0])
    for _ in range(3):  # 1.35 s in all: alive only because each read gives 1 s again
        time.sleep(0.45)
        assert cache.get_by_key(short) is not None
    assert cache.mget(["short"], MODEL)[0] is not None
    time.sleep(1.3)
    assert cache.exists_by_key(short) is False  # refreshed to its 1 s, not the 60 s default
    assert forever_cache.get_by_key(forever).ttl is None


async def test_exists_and_disabled_refresh_do_not_slide(
    make_cache: Callable[..., EmbeddingsCache],
) -> None:
    cache = make_cache(ttl=0.6, refresh_ttl_on_read=False)
    key = cache.set("t", MODEL, [1.0])
    time.sleep(0.35)
    assert cache.get_by_key(key) is not None and cache.exists_by_key(key)
    time.sleep(0.4)
    assert cache.get_by_key(key) is None


async def test_async_refresh_slides_too(make_cache: Callable[..., EmbeddingsCache]) -> None:
    cache = make_cache(ttl=1.0)
    key = await cache.aset("t", MODEL, [1.0])
    for _ in range(3):  # 1.35 s in all
        await asyncio.sleep(0.45)
        assert await cache.aget_by_key(key) is not None
    await cache.aclose()


@pytest.mark.parametrize(
    ("embedding", "error", "match"),
    [
        ([], ValueError, "empty"),
        (np.array([], dtype=np.float32), ValueError, "empty"),
        ([1.0, float("nan")], ValueError, "finite"),
        (np.array([1.0, np.inf]), ValueError, "finite"),
        ([[1.0, 2.0], [3.0, 4.0]], ValueError, "1-D"),
        (np.zeros((2, 2)), ValueError, "1-D"),
        ([1.0, [2.0]], ValueError, "ragged|flat"),
        ("0.1,0.2", TypeError, "list, tuple or numpy array"),
        ({"a": 1.0}, TypeError, "list, tuple or numpy array"),
        (None, TypeError, "list, tuple or numpy array"),
        (["a", "b"], TypeError, "real numbers"),
        (np.array([True, False]), TypeError, "real numbers"),
        (np.array([1 + 2j]), TypeError, "real numbers"),
    ],
)
async def test_bad_embeddings_are_refused_before_any_write(
    api: Api, embedding: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as caught:
        await api.mset([item("good", 1), {"text": "bad", "model_name": MODEL,
                                         "embedding": embedding}])
    assert isinstance(caught.value, EmbmemoError)
    assert "items[1]" in str(caught.value)
    assert await api.exists("good", MODEL) is False
    with pytest.raises(error, match=match):
        await api.set("bad", MODEL, embedding)


async def test_bad_texts_models_and_metadata(api: Api) -> None:
    with pytest.raises(TypeError, match="text must be str or bytes"):
        await api.set(42, MODEL, [1.0])
    with pytest.raises(TypeError, match="texts must be an iterable"):
        await api.mget("not a list", MODEL)
    with pytest.raises(TypeError, match="texts must be an iterable"):
        await api.mget(42, MODEL)
    with pytest.raises(TypeError, match="text must be str or bytes"):
        await api.mget(["ok", None], MODEL)
    with pytest.raises(ValueError, match="model_name must be a non-empty"):
        await api.set("t", "", [1.0])
    with pytest.raises(TypeError, match="model_name must be a str"):
        await api.get("t", 3)
    with pytest.raises(TypeError, match="metadata must be a dict"):
        await api.set("t", MODEL, [1.0], metadata=["a"])
    with pytest.raises(TypeError, match=r"metadata\['when'\]"):
        await api.set("t", MODEL, [1.0], metadata={"ok": 1, "when": {1, 2}})
    with pytest.raises(TypeError, match="metadata keys must be str"):
        await api.set("t", MODEL, [1.0], metadata={1: "x"})
    with pytest.raises(ValueError, match="unknown field"):
        await api.mset([{**item("t", 1), "metdata": {}}])
    with pytest.raises(ValueError, match="missing field 'embedding'"):
        await api.mset([{"text": "t", "model_name": MODEL}])
    with pytest.raises(TypeError, match="each item must be a dict"):
        await api.mset([("t", MODEL, [1.0])])
    assert await api.exists("t", MODEL) is False


async def test_float16_storage(make_cache: Callable[..., EmbeddingsCache]) -> None:
    cache = make_cache(dtype="float16")
    cache.set("half", MODEL, np.array([0.5, 1.25, -2.0], dtype=np.float32))
    entry = cache.get("half", MODEL)
    assert entry.embedding.dtype == np.float16
    np.testing.assert_array_equal(entry.embedding, [0.5, 1.25, -2.0])
    with pytest.raises(ValueError, match="range of float16"):
        cache.set("big", MODEL, [1e6])
    with pytest.raises(ValueError, match="dtype must be one of"):
        EmbeddingsCache(url="memory://", dtype="int8")


async def test_clear_removes_only_this_namespace(
    make_cache: Callable[..., EmbeddingsCache],
) -> None:
    cache = make_cache()
    versioned = make_cache(name=cache.name + ":v2")
    sibling = make_cache(name=cache.name + "2")
    cache.mset([item(f"t{i}", i) for i in range(30)])
    versioned.set("kept", MODEL, [1.0])
    sibling.set("kept", MODEL, [1.0])
    config_key = cache.name + ":config"
    cache.store.backend().set_many([Record(config_key, b"not an entry", None)])
    assert cache.clear() == 30
    assert cache.mexists([f"t{i}" for i in range(30)], MODEL) == [False] * 30
    assert versioned.exists("kept", MODEL) and sibling.exists("kept", MODEL)
    assert cache.store.backend().exists_many([config_key]) == [True]
    cache.store.backend().delete_many([config_key])
    assert cache.clear() == 0


async def test_aclear(api: Api) -> None:
    await api.mset([item(f"t{i}", i) for i in range(5)])
    assert await api.clear() == 5
    assert await api.mexists([f"t{i}" for i in range(5)], MODEL) == [False] * 5


async def test_damaged_values_are_misses(make_cache: Callable[..., EmbeddingsCache]) -> None:
    cache = make_cache()
    key_a = cache.set("a", MODEL, vec(1))
    key_b = cache.set("b", MODEL, vec(2))
    good = cache.store.backend().get_many([key_a])[0]
    assert good is not None
    backend = cache.store.backend()
    flipped = bytearray(good)
    flipped[90] ^= 0x01  # inside the vector (the header is 80 bytes)
    backend.set_many([Record(key_b, good, None)])  # a's value copied under b's key
    assert cache.get("b", MODEL) is None
    for damaged in (good[:-1], good[:40], b"", b"EMBM" + b"\0" * 200, bytes(flipped)):
        backend.set_many([Record(key_a, damaged, None)])
        assert cache.get("a", MODEL) is None
        assert cache.get_by_key(key_a) is None
    assert cache.stats().corrupt >= 6


async def test_construction_never_connects() -> None:
    cache = EmbeddingsCache(url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    assert cache.name == "embedcache"
    started = time.monotonic()
    with pytest.raises(EmbmemoError) as caught:
        cache.get("t", MODEL)
    assert type(caught.value).__name__ == "BackendError"
    assert time.monotonic() - started < 5


async def test_context_managers(backend_url: str, namespace: str) -> None:
    with EmbeddingsCache(name=namespace, url=backend_url) as cache:
        cache.set("t", MODEL, [1.0])
    async with EmbeddingsCache(name=namespace, url=backend_url) as acache:
        assert (await acache.aget("t", MODEL)) is not None
        assert await acache.aclear() == 1


async def test_entries_lists_this_namespace_only(
    make_cache: Callable[..., EmbeddingsCache],
) -> None:
    cache = make_cache()
    sibling = make_cache(name=cache.name + "2")
    cache.mset([item(f"t{i}", i, metadata={"i": i}) for i in range(12)])
    sibling.set("other", MODEL, [1.0])
    cache.store.backend().set_many([Record(cache.name + ":config", b"not an entry", None)])
    found = sorted(entry.text for entry, _ in cache.store.entries(chunk=5))
    assert found == sorted(f"t{i}" for i in range(12))
    assert all(size > 80 for _, size in cache.store.entries())
    cache.store.backend().delete_many([cache.name + ":config"])
