"""LangChain, LlamaIndex and the OpenAI client through embmemo, on a real redis-server:
hits, misses, dedup, async and fail-open, plus LangChain's own standard test suites."""

from __future__ import annotations

import asyncio
import importlib
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import openai
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests
from llama_index.core.embeddings import MockEmbedding
from openai_server import embeddings_server, vector_for
from pydantic import Field

from embmemo import ConfigError, EmbeddingsCache, InvalidInputError
from embmemo.integrations.langchain import CachedEmbeddings
from embmemo.integrations.llama_index import CachedEmbedding
from embmemo.vectorizers import OpenAITextVectorizer

DOWN = "redis://127.0.0.1:1/0"  # nothing listens there


@pytest.fixture
def cache(redis_url: str, namespace: str) -> Iterator[EmbeddingsCache]:
    made = EmbeddingsCache(name=namespace, url=redis_url)
    yield made
    made.clear()
    made.close()


class CountingEmbeddings(Embeddings):
    """A LangChain model that records every text it embeds (queries get a prefix, as
    instruction-tuned models do, so a query and a document of one text differ)."""

    def __init__(self, model: str = "counting-8") -> None:
        self.model = model
        self.documents: list[str] = []
        self.queries: list[str] = []
        self.lock = threading.Lock()
        self.fake = DeterministicFakeEmbedding(size=8)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        with self.lock:
            self.documents += texts
        return [self.fake.embed_query(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        with self.lock:
            self.queries.append(text)
        return self.fake.embed_query("query: " + text)


# -- LangChain --------------------------------------------------------------------------------


def test_langchain_hits_misses_dedup_and_queries(cache: EmbeddingsCache) -> None:
    model = CountingEmbeddings()
    embeddings = CachedEmbeddings(model, cache=cache)
    first = embeddings.embed_documents(["a", "b", "a"])
    assert model.documents == ["a", "b"]
    assert first[0] == first[2] == pytest.approx(model.fake.embed_query("a"))
    assert embeddings.embed_documents(["b", "c"])[0] == first[1]
    assert model.documents == ["a", "b", "c"]
    query = embeddings.embed_query("a")
    assert query == pytest.approx(model.fake.embed_query("query: a"))  # its own identity
    assert embeddings.embed_query("a") == query and model.queries == ["a"]
    assert cache.get("a", "counting-8") is not None  # documents: keyed by the model alone
    uncached = CachedEmbeddings(model, cache=cache, cache_queries=False)
    uncached.embed_query("a")
    assert model.queries == ["a", "a"]


def test_langchain_query_as_document_shares_entries(cache: EmbeddingsCache) -> None:
    model = DeterministicFakeEmbedding(size=8)
    embeddings = CachedEmbeddings(model, model="same-way", cache=cache, query_as_document=True)
    document = embeddings.embed_documents(["shared"])[0]
    assert embeddings.embed_query("shared") == document
    assert cache.get("shared", "same-way") is not None


async def test_langchain_async_and_concurrent_callers(cache: EmbeddingsCache) -> None:
    model = CountingEmbeddings()
    embeddings = CachedEmbeddings(model, cache=cache)
    results = await asyncio.gather(*(embeddings.aembed_documents(["x", "y", f"own {i}"])
                                     for i in range(20)))
    assert sorted(set(model.documents)) == sorted({"x", "y", *(f"own {i}" for i in range(20))})
    assert len(model.documents) == 22  # each text once, though 20 callers asked together
    assert all(r[0] == results[0][0] for r in results)
    assert await embeddings.aembed_query("x") == await embeddings.aembed_query("x")
    assert model.queries == ["x"]
    await cache.aclose()


def test_langchain_fails_open_and_needs_a_model_name() -> None:
    model = CountingEmbeddings()
    embeddings = CachedEmbeddings(model, cache=EmbeddingsCache(url=DOWN))
    assert embeddings.embed_documents(["a"]) == [pytest.approx(model.fake.embed_query("a"))]
    assert asyncio.run(embeddings.aembed_query("q")) == pytest.approx(
        model.fake.embed_query("query: q"))
    with pytest.raises(InvalidInputError, match="pass model="):
        CachedEmbeddings(DeterministicFakeEmbedding(size=8))


class _RedisParams:
    """The standard suites build the model from ``embedding_model_params``: a cache on the
    session's real redis-server."""

    redis_url = ""

    @pytest.fixture(autouse=True)
    def _use_redis(self, redis_url: str) -> None:
        type(self).redis_url = redis_url

    @property
    def embeddings_class(self) -> type[CachedEmbeddings]:
        return CachedEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"embeddings": DeterministicFakeEmbedding(size=16), "model": "standard-16",
                "cache": EmbeddingsCache(name="langchain-standard", url=self.redis_url)}


class TestCachedEmbeddingsUnit(_RedisParams, EmbeddingsUnitTests):
    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return ({"EMBMEMO_URL": "memory://langchain-env", "EMBMEMO_TTL": "120"},
                {"embeddings": DeterministicFakeEmbedding(size=4), "model": "env-4"},
                {"ttl": 120.0, "model": "env-4"})


class TestCachedEmbeddingsIntegration(_RedisParams, EmbeddingsIntegrationTests):
    pass


# -- LlamaIndex -------------------------------------------------------------------------------


class CountingLlama(MockEmbedding):
    """A LlamaIndex model that records what it embeds (texts and queries apart)."""

    seen: list[str] = Field(default_factory=list)

    def _get_text_embedding(self, text: str) -> list[float]:
        self.seen.append(text)
        return vector_for(text, self.embed_dim)

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        self.seen.extend(texts)
        return [vector_for(text, self.embed_dim) for text in texts]

    def _get_query_embedding(self, query: str) -> list[float]:
        self.seen.append("query: " + query)
        return vector_for("query: " + query, self.embed_dim)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embedding(text)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)


def test_llama_index_texts_batches_and_queries(cache: EmbeddingsCache) -> None:
    inner = CountingLlama(embed_dim=8, model_name="llama-mock")
    model = CachedEmbedding(inner, cache=cache)
    assert model.model_name == "llama-mock"
    batch = model.get_text_embedding_batch(["a", "b", "a", "c"])
    assert inner.seen == ["a", "b", "c"]
    assert batch[0] == batch[2] == pytest.approx(vector_for("a", 8))
    assert model.get_text_embedding("b") == batch[1] and inner.seen == ["a", "b", "c"]
    query = model.get_query_embedding("a")
    assert query == pytest.approx(vector_for("query: a", 8))
    assert model.get_query_embedding("a") == query and inner.seen.count("query: a") == 1
    async_batch = asyncio.run(model.aget_text_embedding_batch(["c", "d"]))
    assert async_batch[0] == batch[3] and inner.seen[-1] == "d"
    assert asyncio.run(model.aget_query_embedding("a")) == query
    assert asyncio.run(model.aget_text_embedding("d")) == async_batch[1]


def test_llama_index_fails_open() -> None:
    inner = CountingLlama(embed_dim=4, model_name="llama-down")
    model = CachedEmbedding(inner, cache=EmbeddingsCache(url=DOWN))
    assert model.get_text_embedding_batch(["a", "a"]) == [pytest.approx(vector_for("a", 4))] * 2
    assert asyncio.run(model.aget_query_embedding("q")) == pytest.approx(
        vector_for("query: q", 4))


# -- OpenAI -----------------------------------------------------------------------------------


def test_openai_warm_calls_make_no_request(cache: EmbeddingsCache) -> None:
    with embeddings_server() as server:
        client = openai.OpenAI(api_key="test", base_url=server.base_url, max_retries=0)
        vectorizer = OpenAITextVectorizer("text-embedding-3-small", client=client,
                                          cache=cache, batch_size=3)
        texts = ["alpha", "beta", "alpha", "gamma", "delta"]
        first = vectorizer.embed_many(texts)
        assert [len(r["input"]) for r in server.requests] == [3, 1]  # 4 distinct, 3 a request
        assert first[0] == first[2] == pytest.approx(vector_for("alpha", 8), abs=1e-6)
        warm = vectorizer.embed_many(texts)
        assert warm == first and len(server.requests) == 2  # zero requests when warm
        assert vectorizer.embed("beta") == first[1] and len(server.requests) == 2
        assert vectorizer.embed("new", skip_cache=True) == pytest.approx(vector_for("new", 8))
        assert cache.get("new", "text-embedding-3-small") is None


def test_openai_dimensions_are_part_of_the_identity(cache: EmbeddingsCache) -> None:
    with embeddings_server() as server:
        client = openai.OpenAI(api_key="test", base_url=server.base_url, max_retries=0)
        small = OpenAITextVectorizer(client=client, dimensions=4, cache=cache)
        large = OpenAITextVectorizer(client=client, dimensions=16, cache=cache)
        assert len(small.embed("t")) == 4 and len(large.embed("t")) == 16
        assert len(small.embed("t")) == 4 and len(server.requests) == 2
        assert server.requests[0]["dimensions"] == 4 and server.requests[1]["dimensions"] == 16
        entry = cache.get("t", "text-embedding-3-small",
                          model_params={"options": {"dimensions": 4}})
        assert entry is not None and entry.embedding.shape == (4,)


async def test_openai_async_and_single_flight(cache: EmbeddingsCache) -> None:
    with embeddings_server() as server:
        client = openai.AsyncOpenAI(api_key="test", base_url=server.base_url, max_retries=0)
        vectorizer = OpenAITextVectorizer(async_client=client, cache=cache)
        results = await asyncio.gather(*(vectorizer.aembed_many(["same", f"t{i}"])
                                         for i in range(10)))
        assert server.texts_embedded == 11  # "same" once for all ten callers
        assert all(r[0] == results[0][0] for r in results)
        before = len(server.requests)
        assert await vectorizer.aembed("same") == results[0][0]
        assert len(server.requests) == before
        await client.close()
        await cache.aclose()


def test_openai_fails_open_and_splits_large_batches() -> None:
    with embeddings_server() as server:
        client = openai.OpenAI(api_key="test", base_url=server.base_url, max_retries=0)
        vectorizer = OpenAITextVectorizer(client=client, cache=EmbeddingsCache(url=DOWN))
        texts = [f"text {i}" for i in range(2500)]
        result = vectorizer.embed_many(texts)
        assert len(result) == 2500 and result[7] == pytest.approx(vector_for("text 7", 8))
        assert [len(r["input"]) for r in server.requests] == [2048, 452]  # the API's limit
    with pytest.raises(InvalidInputError, match="batch_size"):
        OpenAITextVectorizer(batch_size=5000)
    assert np.asarray(result).shape == (2500, 8)


@pytest.mark.parametrize(("module", "blocked", "extra"), [
    ("embmemo.integrations.langchain", "langchain_core", "langchain"),
    ("embmemo.integrations.llama_index", "llama_index.core", "llama-index"),
])
def test_a_missing_extra_names_its_install_command(
    monkeypatch: pytest.MonkeyPatch, module: str, blocked: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, blocked, None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ConfigError, match=re.escape(f"pip install 'embmemo[{extra}]'")):
        importlib.import_module(module)


def test_the_openai_vectorizer_without_openai_names_its_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(ConfigError, match=re.escape("pip install 'embmemo[openai]'")):
        OpenAITextVectorizer().embed("x")
