"""@cached_embedding on memory, SQLite and a real redis-server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from servers import RedisServer

from embmemo import (
    BackendError,
    EmbeddingOutputError,
    EmbeddingsCache,
    bypass,
    cached_embedding,
)

DIM = 6


def vector_for(text: str | bytes, dim: int = DIM) -> np.ndarray:
    """A deterministic stand-in for a model: the same text always gives the same vector."""
    seed = sum(text.encode() if isinstance(text, str) else text) + len(text)
    return np.random.default_rng(seed).random(dim).astype(np.float32)


class Recorder:
    """Counts every text an embed function was asked to compute."""

    def __init__(self) -> None:
        self.calls: list[object] = []
        self.lock = threading.Lock()

    def saw(self, texts: object) -> None:
        with self.lock:
            self.calls.append(texts)

    @property
    def texts(self) -> list[object]:
        out: list[object] = []
        for call in self.calls:
            out.extend(call if isinstance(call, list) else [call])
        return out


@pytest.fixture
def cache(make_cache: Callable[..., EmbeddingsCache]) -> EmbeddingsCache:
    return make_cache()


def st_style(
    cache: EmbeddingsCache, recorder: Recorder, **options: object
) -> Callable[..., object]:
    """A sentence-transformers-like function: str -> 1-D array, list -> 2-D array."""

    @cached_embedding(model="st-model", cache=cache, **options)  # type: ignore[arg-type]
    def encode(sentences: str | list[str], normalize: bool = False) -> np.ndarray:
        recorder.saw(sentences)
        if isinstance(sentences, str):
            return vector_for(sentences)
        return np.stack([vector_for(s) for s in sentences])

    return encode


def test_batch_dedupes_and_computes_only_misses_in_first_appearance_order(
    cache: EmbeddingsCache,
) -> None:
    recorder = Recorder()
    encode = st_style(cache, recorder)
    texts = ["b", "a", "b", "c", "a"]
    first = encode(texts)
    assert recorder.calls == [["b", "a", "c"]]
    assert isinstance(first, np.ndarray) and first.shape == (5, DIM) and first.dtype == np.float32
    np.testing.assert_array_equal(first, np.stack([vector_for(t) for t in texts]))
    second = encode(["c", "new", "a", "new"])
    assert recorder.calls[-1] == ["new"]
    np.testing.assert_array_equal(second, np.stack([vector_for(t) for t in ["c", "new", "a",
                                                                            "new"]]))
    info = encode.cache_info()  # type: ignore[attr-defined]
    assert (info.hits, info.misses, info.errors) == (2, 4, 0)
    assert info.hit_rate == pytest.approx(2 / 6)


def test_full_hit_returns_the_same_type_without_calling(cache: EmbeddingsCache) -> None:
    recorder = Recorder()
    encode = st_style(cache, recorder)
    cold = encode(["x", "y"])
    warm = encode(["y", "x", "y"])
    assert len(recorder.calls) == 1
    assert type(warm) is np.ndarray and warm.dtype == cold.dtype and warm.shape == (3, DIM)
    np.testing.assert_array_equal(warm[1], cold[0])
    single = encode("x")
    assert len(recorder.calls) == 1  # written by the batch call, found by the single one
    assert type(single) is np.ndarray and single.ndim == 1
    np.testing.assert_array_equal(single, vector_for("x"))
    assert encode([]).shape[0] == 0 and len(recorder.calls) == 1


def test_single_text_is_one_lookup_and_passes_arguments_unchanged(
    cache: EmbeddingsCache,
) -> None:
    recorder = Recorder()
    encode = st_style(cache, recorder)
    result = encode("hello", normalize=True)
    assert recorder.calls == ["hello"]
    np.testing.assert_array_equal(result, vector_for("hello"))
    np.testing.assert_array_equal(encode("hello", normalize=True), result)
    assert len(recorder.calls) == 1
    encode("hello")  # normalize=False is another identity
    assert len(recorder.calls) == 2


@pytest.mark.parametrize(
    ("make_output", "check"),
    [
        (lambda vs: [v.astype(np.float64).tolist() for v in vs],
         lambda out: type(out) is list and type(out[0]) is list and type(out[0][0]) is float),
        (lambda vs: tuple(tuple(v.tolist()) for v in vs),
         lambda out: type(out) is tuple and type(out[0]) is tuple),
        (lambda vs: [v.astype(np.float64) for v in vs],
         lambda out: type(out) is list and out[0].dtype == np.float64 and out[0].ndim == 1),
        (lambda vs: np.stack(vs).astype(np.float16),
         lambda out: isinstance(out, np.ndarray) and out.dtype == np.float16),
        (lambda vs: [list(v) for v in vs],
         lambda out: type(out[0][0]) is np.float32),
    ],
    ids=["list-of-lists", "tuple-of-tuples", "list-of-float64-arrays", "float16-matrix",
         "numpy-scalars"],
)
def test_output_type_is_preserved_cold_warm_and_across_processes(
    make_cache: Callable[..., EmbeddingsCache],
    make_output: Callable[[list[np.ndarray]], object],
    check: Callable[[object], bool],
) -> None:
    recorder = Recorder()
    cache = make_cache()

    def build() -> Callable[..., object]:
        @cached_embedding(model="api-model", cache=make_cache(name=cache.name))
        def embed(texts: list[str]) -> object:
            recorder.saw(list(texts))
            return make_output([vector_for(t) for t in texts])
        return embed

    embed = build()
    cold = embed(["p", "q"])
    assert check(cold)
    partly = embed(["q", "r", "p"])
    fresh_process_like = build()  # new decorator state: knows the type only from the entries
    warm = fresh_process_like(["r", "p"])
    assert len(recorder.calls) == 2
    for out in (partly, warm):
        assert check(out)
        assert type(out) is type(cold)
    np.testing.assert_allclose(np.asarray(warm, dtype=np.float64),
                               np.stack([vector_for("r"), vector_for("p")]), rtol=1e-3)


def test_model_params_and_defaults_are_the_identity(cache: EmbeddingsCache) -> None:
    recorder = Recorder()

    @cached_embedding(model="emb-3", cache=cache, ignore=("timeout",))
    def embed(text: str, dimensions: int = 8, timeout: float = 1.0) -> list[float]:
        recorder.saw(text)
        return vector_for(text, dimensions).tolist()

    assert len(embed("t", dimensions=8)) == 8
    assert len(embed("t", dimensions=16)) == 16
    embed("t")  # the same entry as dimensions=8
    embed("t", 8, timeout=30.0)  # ignored argument
    assert recorder.texts == ["t", "t"]
    assert cache.get("t", "emb-3", model_params={"dimensions": 16}) is not None
    assert cache.get("t", "emb-3") is None  # params make it another identity


def test_with_no_other_arguments_the_direct_api_sees_the_entries(cache: EmbeddingsCache) -> None:
    @cached_embedding(model="plain", cache=cache)
    def embed(texts: list[str]) -> list[list[float]]:
        return [vector_for(t).tolist() for t in texts]

    embed(["direct"])
    entry = cache.get("direct", model_name="plain")
    assert entry is not None
    np.testing.assert_array_equal(entry.embedding, vector_for("direct"))
    assert embed.cache is cache


def test_ignore_reaches_into_var_keyword_arguments(cache: EmbeddingsCache) -> None:
    calls: list[str] = []

    @cached_embedding(model="kw", cache=cache, ignore=("timeout",))
    def embed(text: str, **options: object) -> list[float]:
        calls.append(text)
        return [float(len(options))]

    embed("t", timeout=1, dimensions=4)
    embed("t", timeout=99, dimensions=4)
    embed("t", dimensions=8)
    assert calls == ["t", "t"]


def test_uncanonical_arguments_name_the_argument(cache: EmbeddingsCache) -> None:
    @cached_embedding(model="m", cache=cache)
    def embed(text: str, client: object = None) -> list[float]:
        return [1.0]

    with pytest.raises(TypeError, match=r"argument 'client'.*ignore=\('client',\)"):
        embed("t", client=object())
    assert embed("t") == [1.0]


def test_bad_text_arguments_are_type_errors_before_any_call(cache: EmbeddingsCache) -> None:
    recorder = Recorder()
    encode = st_style(cache, recorder)
    for bad in (42, None, {"a"}, ["ok", 3]):
        with pytest.raises(TypeError, match="sentences"):
            encode(bad)
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("output", "match"),
    [
        (lambda n: np.zeros((n + 1, DIM)), "shape"),
        (lambda n: [[1.0] * DIM] * (n - 1), "embeddings for"),
        (lambda n: [[1.0] * DIM] + [[1.0] * (DIM + 1)] * (n - 1), "ragged"),
        (lambda n: np.full((n, DIM), np.nan), "NaN"),
        (lambda n: np.zeros((n, DIM, 2)), "shape"),
        (lambda n: "nope", "str"),
    ],
)
def test_wrong_outputs_raise_and_cache_nothing(
    cache: EmbeddingsCache, output: Callable[[int], object], match: str
) -> None:
    @cached_embedding(model="broken", cache=cache)
    def embed(texts: list[str]) -> object:
        return output(len(texts))

    with pytest.raises(EmbeddingOutputError, match=match):
        embed(["a", "b", "c"])
    assert cache.mexists(["a", "b", "c"], "broken") == [False] * 3


def test_methods_classmethods_staticmethods_and_callable_objects(
    cache: EmbeddingsCache,
) -> None:
    recorder = Recorder()

    class Client:
        def __init__(self, model: str) -> None:
            self.model = model

        @cached_embedding(model=lambda self: self.model, cache=cache)
        def embed(self, texts: list[str], dimensions: int = 4) -> list[list[float]]:
            recorder.saw(("method", self.model, list(texts)))
            return [vector_for(t, dimensions).tolist() for t in texts]

        @cached_embedding(model="cls-model", cache=cache)
        @classmethod
        def embed_cls(cls, text: str) -> list[float]:
            recorder.saw(("classmethod", text))
            return vector_for(text).tolist()

        @cached_embedding(model="static-model", cache=cache)
        @staticmethod
        def embed_static(text: str) -> list[float]:
            recorder.saw(("staticmethod", text))
            return vector_for(text).tolist()

    small, large = Client("small"), Client("large")
    assert small.embed(["t"]) == small.embed(["t"])
    large.embed(["t"])
    assert [c[1] for c in recorder.calls] == ["small", "large"]
    assert cache.exists("t", "small", model_params={"dimensions": 4})
    assert Client.embed_cls("c") == small.embed_cls("c") == vector_for("c").tolist()
    assert Client.embed_static("s") == small.embed_static("s")
    assert [c[0] for c in recorder.calls].count("classmethod") == 1
    assert [c[0] for c in recorder.calls].count("staticmethod") == 1
    assert small.embed.cache is cache
    assert small.embed.cache_info().hits >= 1  # type: ignore[attr-defined]

    class Embedder:
        def __call__(self, texts: list[str]) -> np.ndarray:
            recorder.saw(("object", list(texts)))
            return np.stack([vector_for(t) for t in texts])

    embedder = cached_embedding(model="callable", cache=cache)(Embedder())
    np.testing.assert_array_equal(embedder(["o"]), embedder(["o"]))
    assert [c[0] for c in recorder.calls].count("object") == 1


async def test_async_functions_methods_and_callable_objects(cache: EmbeddingsCache) -> None:
    recorder = Recorder()

    @cached_embedding(model="async-model", cache=cache)
    async def embed(texts: list[str]) -> list[list[float]]:
        recorder.saw(list(texts))
        await asyncio.sleep(0)
        return [vector_for(t).tolist() for t in texts]

    assert asyncio.iscoroutinefunction(embed)
    first = await embed(["a", "b", "a"])
    second = await embed(["b", "a"])
    assert recorder.calls == [["a", "b"]]
    assert second == [first[1], first[0]]

    class AsyncEmbedder:
        async def __call__(self, text: str) -> np.ndarray:
            recorder.saw(text)
            return vector_for(text)

    aembed = cached_embedding(model="async-object", cache=cache)(AsyncEmbedder())
    np.testing.assert_array_equal(await aembed("z"), await aembed("z"))
    assert recorder.calls[-1] == "z" and len(recorder.calls) == 2
    await cache.aclose()


def test_controls_wrapped_bypass_clear_and_disable(
    cache: EmbeddingsCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    encode = st_style(cache, recorder)
    encode(["a"])
    assert encode.__wrapped__(["a"]).shape == (1, DIM)  # type: ignore[attr-defined]
    assert len(recorder.calls) == 2
    with bypass():
        encode(["a", "fresh"])
    params = {"model_params": {"normalize": False}}
    assert recorder.calls[-1] == ["a", "fresh"] and not cache.exists("fresh", "st-model", **params)
    encode(["a"])
    assert len(recorder.calls) == 3
    encode.cache_clear()  # type: ignore[attr-defined]
    assert encode.cache_info() == (0, 0, 0, 0, 0, 0)  # type: ignore[attr-defined]
    assert not cache.exists("a", "st-model", **params)
    monkeypatch.setenv("EMBMEMO_DISABLE", "1")
    disabled = st_style(cache, recorder)
    disabled(["d"])
    disabled(["d"])
    assert recorder.calls[-2:] == [["d"], ["d"]]
    assert not cache.exists("d", "st-model", **params)
    assert cache.exists("a", "st-model", **params) is False


def test_batch_size_writes_each_chunk_as_it_is_computed(cache: EmbeddingsCache) -> None:
    seen: list[int] = []
    fail_on_call = [3]

    @cached_embedding(model="chunked", cache=cache, batch_size=3)
    def embed(texts: list[str]) -> np.ndarray:
        seen.append(len(texts))
        if len(seen) == fail_on_call[0]:
            raise RuntimeError("interrupted")
        return np.stack([vector_for(t) for t in texts])

    texts = [f"t{i}" for i in range(10)]
    with pytest.raises(RuntimeError, match="interrupted"):
        embed(texts)
    assert seen == [3, 3, 3]
    assert cache.mexists(texts, "chunked") == [True] * 6 + [False] * 4
    seen.clear()
    fail_on_call[0] = 0
    embed(texts)
    assert seen == [3, 1]


def test_threads_and_tasks_compute_each_text_once(cache: EmbeddingsCache) -> None:
    recorder = Recorder()
    texts = [f"shared {i}" for i in range(40)]

    @cached_embedding(model="flight", cache=cache)
    def embed(batch: list[str]) -> np.ndarray:
        recorder.saw(list(batch))
        time.sleep(0.02)
        return np.stack([vector_for(t) for t in batch])

    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(5):
                chosen = list(rng.choice(texts, size=8))
                result = embed(chosen)
                np.testing.assert_array_equal(result, np.stack([vector_for(t) for t in chosen]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    computed = Counter(recorder.texts)
    assert max(computed.values()) == 1, computed.most_common(3)

    arecorder = Recorder()

    @cached_embedding(model="aflight", cache=cache)
    async def aembed(batch: list[str]) -> list[list[float]]:
        arecorder.saw(list(batch))
        await asyncio.sleep(0.01)
        return [vector_for(t).tolist() for t in batch]

    async def many() -> None:
        rng = np.random.default_rng(0)
        batches = [list(rng.choice(texts, size=5)) for _ in range(200)]
        results = await asyncio.gather(*(aembed(b) for b in batches))
        for batch, result in zip(batches, results):
            np.testing.assert_allclose(result, [vector_for(t) for t in batch], rtol=1e-6)
        await cache.aclose()

    asyncio.run(many())
    assert max(Counter(arecorder.texts).values()) == 1


def test_fail_open_against_a_closed_port_is_fast_and_counted() -> None:
    cache = EmbeddingsCache(url="redis://127.0.0.1:1/0")
    recorder = Recorder()
    encode = st_style(cache, recorder)
    started = time.monotonic()
    for i in range(50):
        result = encode([f"t{i}", "same"])
        np.testing.assert_array_equal(result[1], vector_for("same"))
    assert time.monotonic() - started < 1.0
    assert len(recorder.calls) == 50
    info = encode.cache_info()  # type: ignore[attr-defined]
    assert info.errors >= 100 and info.hits == 0
    strict = st_style(cache, recorder, on_error="raise")
    cache.engine.breaker.record_success()
    with pytest.raises(BackendError):
        strict(["x"])


async def test_fail_open_async_against_a_closed_port() -> None:
    cache = EmbeddingsCache(url="redis://127.0.0.1:1/0")

    @cached_embedding(model="m", cache=cache)
    async def embed(text: str) -> list[float]:
        return [1.0, 2.0]

    assert [await embed("a") for _ in range(20)] == [[1.0, 2.0]] * 20
    assert embed.cache_info().errors == 20  # type: ignore[attr-defined]


def test_server_killed_mid_test_then_restarted(namespace: str) -> None:
    server = RedisServer().start()
    try:
        cache = EmbeddingsCache(name=namespace, url=server.url)
        cache.engine.breaker.cooldown = 0.2
        recorder = Recorder()
        encode = st_style(cache, recorder)
        encode(["a", "b"])
        encode(["a", "b"])
        assert len(recorder.calls) == 1
        server.kill()
        for _ in range(20):
            np.testing.assert_array_equal(encode(["a", "c"]), np.stack([vector_for("a"),
                                                                        vector_for("c")]))
        assert encode.cache_info().errors > 0  # type: ignore[attr-defined]
        server.start()
        time.sleep(0.3)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            calls = len(recorder.calls)
            encode(["resumed"])
            encode(["resumed"])
            if len(recorder.calls) == calls + 1 and cache.exists(
                    "resumed", "st-model", model_params={"normalize": False}):
                break
            time.sleep(0.2)
        else:
            pytest.fail("caching did not resume after the restart")
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])  # memory:// lives in one process
def test_entries_written_by_another_process(
    request: pytest.FixtureRequest, kind: str, namespace: str, tmp_path: Path
) -> None:
    url = (f"sqlite:///{tmp_path}/xproc.sqlite3" if kind == "sqlite"
           else request.getfixturevalue("redis_url"))
    cache = EmbeddingsCache(name=namespace, url=url)
    script = f"""
import numpy as np
from embmemo import EmbeddingsCache, cached_embedding
cache = EmbeddingsCache(name={cache.name!r}, url={cache.settings.url!r})
@cached_embedding(model="xproc", cache=cache)
def embed(texts, dimensions=3):
    return [[float(len(t)), 1.0, 2.0][:dimensions] for t in texts]
print(embed(["one", "three"]))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, capture_output=True)

    @cached_embedding(model="xproc", cache=cache)
    def embed(texts: list[str], dimensions: int = 3) -> list[list[float]]:
        raise AssertionError("everything should come from the other process's entries")

    assert embed(["three", "one"]) == [[5.0, 1.0, 2.0], [3.0, 1.0, 2.0]]
    assert embed("one") == [3.0, 1.0, 2.0]  # the single form follows the batch's rows
    cache.clear()


def test_decoration_never_connects_and_validates_arguments() -> None:
    cached_embedding(model="m", url="redis://127.0.0.1:1/0")(lambda text: [1.0])
    with pytest.raises(ValueError, match="batch_size"):
        cached_embedding(model="m", url="memory://", batch_size=0)
    with pytest.raises(ValueError, match="model"):
        cached_embedding(model="", url="memory://")
    with pytest.raises(ValueError, match="text_arg"):
        cached_embedding(model="m", url="memory://", text_arg="nope")(lambda text: [1.0])
    with pytest.raises(ValueError, match="on_error"):
        cached_embedding(model="m", url="memory://", on_error="ignore")
    with pytest.raises(ValueError, match="ttl"):
        cached_embedding(model="m", url="memory://", ttl=0)


def test_text_arg_and_ttl(cache: EmbeddingsCache) -> None:
    @cached_embedding(model="named", cache=cache, text_arg="inputs", ttl=60)
    def embed(model_hint: str, inputs: list[str]) -> list[list[float]]:
        return [[1.0, float(len(t))] for t in inputs]

    assert embed("x", ["abc"]) == [[1.0, 3.0]]
    entry = cache.get("abc", "named", model_params={"model_hint": "x"})
    assert entry is not None and entry.ttl == 60
