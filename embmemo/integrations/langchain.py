"""``CachedEmbeddings``: any LangChain ``Embeddings``, cached by embmemo.

``pip install "embmemo[langchain]"``. Unlike LangChain's ``CacheBackedEmbeddings`` it
caches queries too, keys entries by model (and ``dimensions``), and stores vectors as
checked binary records rather than JSON::

    from langchain_openai import OpenAIEmbeddings
    from embmemo.integrations.langchain import CachedEmbeddings

    embeddings = CachedEmbeddings(OpenAIEmbeddings(model="text-embedding-3-small"))
    vectorstore = FAISS.from_texts(texts, embeddings)   # misses only reach OpenAI
"""

from __future__ import annotations

from .adapter import CachedModel, Vector, model_name_of, require

require("langchain_core", "langchain")

from langchain_core.embeddings import Embeddings  # noqa: E402

from ..cache import EmbeddingsCache  # noqa: E402


class CachedEmbeddings(Embeddings):
    """A LangChain ``Embeddings`` that caches another one.

    Args:
        embeddings: The ``Embeddings`` that computes what is not cached.
        model: The model name entries are stored under (default: the wrapped object's
            ``model`` or ``model_name``; required when it has neither).
        cache: The ``EmbeddingsCache``; None builds one from the ``EMBMEMO_*`` settings.
        ttl: Time to live of new entries, in seconds.
        cache_queries: Cache ``embed_query`` too (LangChain's ``CacheBackedEmbeddings``
            does not).
        batch_size: Send misses to the wrapped model at most this many at a time.
        query_as_document: The wrapped model embeds a query exactly as a document, so
            both share entries (default: separate, as many models prefix queries).
    """

    def __init__(
        self,
        embeddings: Embeddings,
        *,
        model: str | None = None,
        cache: EmbeddingsCache | None = None,
        ttl: float | None = None,
        cache_queries: bool = True,
        batch_size: int | None = None,
        query_as_document: bool = False,
    ) -> None:
        self.embeddings = embeddings
        self.model = model_name_of(embeddings, model)
        self.cache_queries = cache_queries
        self.cached = CachedModel(
            model=self.model, cache=cache, ttl=ttl, batch_size=batch_size,
            dimensions=getattr(embeddings, "dimensions", None),
            query_as_document=query_as_document,
            documents=embeddings.embed_documents, adocuments=embeddings.aembed_documents,
            query=embeddings.embed_query, aquery=embeddings.aembed_query,
        )
        self._ttl = ttl

    @property
    def cache(self) -> EmbeddingsCache:
        """The cache entries are read from and written to."""
        return self.cached.cache

    @property
    def ttl(self) -> float | None:
        """The time to live of new entries (this object's, else the cache's default)."""
        return self._ttl if self._ttl is not None else self.cache.ttl

    def embed_documents(self, texts: list[str]) -> list[Vector]:
        """Embeddings of ``texts``; only the distinct misses reach the wrapped model."""
        return self.cached.documents(texts)

    def embed_query(self, text: str) -> Vector:
        """The embedding of a query, cached unless ``cache_queries=False``."""
        if not self.cache_queries:
            return self.embeddings.embed_query(text)
        return self.cached.query(text)

    async def aembed_documents(self, texts: list[str]) -> list[Vector]:
        """Async ``embed_documents`` (the cache is read asynchronously)."""
        return await self.cached.adocuments(texts)

    async def aembed_query(self, text: str) -> Vector:
        """Async ``embed_query``."""
        if not self.cache_queries:
            return await self.embeddings.aembed_query(text)
        return await self.cached.aquery(text)

    def __repr__(self) -> str:
        return f"CachedEmbeddings({self.embeddings!r}, model={self.model!r}, cache={self.cache!r})"

