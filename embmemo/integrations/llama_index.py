"""``CachedEmbedding``: any LlamaIndex ``BaseEmbedding``, cached by embmemo.

``pip install "embmemo[llama-index]"``::

    from llama_index.embeddings.openai import OpenAIEmbedding
    from embmemo.integrations.llama_index import CachedEmbedding

    Settings.embed_model = CachedEmbedding(OpenAIEmbedding(model="text-embedding-3-small"))
"""

from __future__ import annotations

from typing import Any

from .adapter import CachedModel, Vector, model_name_of, require

require("llama_index.core", "llama-index")

from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from pydantic import PrivateAttr  # noqa: E402

from ..cache import EmbeddingsCache  # noqa: E402

_MAX_BATCH = 2048  # the most LlamaIndex allows: the wrapped model batches its own misses


class CachedEmbedding(BaseEmbedding):
    """A LlamaIndex embedding model that caches another one.

    Texts, batches of texts and queries, sync and async, are looked up in one batch
    each; only the misses reach ``embed_model`` (in its own ``embed_batch_size``).

    Args:
        embed_model: The ``BaseEmbedding`` that computes what is not cached.
        model: The model name entries are stored under (default: ``embed_model``'s
            ``model_name``; required when it is not set).
        cache: The ``EmbeddingsCache``; None builds one from the ``EMBMEMO_*`` settings.
        ttl: Time to live of new entries, in seconds.
        query_as_document: The wrapped model embeds a query exactly as a text, so both
            share entries (default: separate, as many models prefix queries).
        **kwargs: Other ``BaseEmbedding`` fields (``callback_manager``, ...).
    """

    embed_model: BaseEmbedding
    _cached: CachedModel = PrivateAttr()

    def __init__(
        self,
        embed_model: BaseEmbedding,
        *,
        model: str | None = None,
        cache: EmbeddingsCache | None = None,
        ttl: float | None = None,
        query_as_document: bool = False,
        **kwargs: Any,
    ) -> None:
        name = model_name_of(embed_model, model)
        kwargs.setdefault("embed_batch_size", _MAX_BATCH)
        super().__init__(embed_model=embed_model, model_name=name,  # type: ignore[call-arg]
                         **kwargs)
        self._cached = CachedModel(
            model=name, cache=cache, ttl=ttl, batch_size=None,
            dimensions=getattr(embed_model, "dimensions", None),
            query_as_document=query_as_document,
            documents=embed_model.get_text_embedding_batch,
            adocuments=embed_model.aget_text_embedding_batch,
            query=embed_model.get_query_embedding, aquery=embed_model.aget_query_embedding,
        )

    @classmethod
    def class_name(cls) -> str:
        return "EmbmemoCachedEmbedding"

    @property
    def cache(self) -> EmbeddingsCache:
        """The cache entries are read from and written to."""
        return self._cached.cache

    def _get_query_embedding(self, query: str) -> Vector:
        return self._cached.query(query)

    async def _aget_query_embedding(self, query: str) -> Vector:
        return await self._cached.aquery(query)

    def _get_text_embedding(self, text: str) -> Vector:
        return self._cached.documents([text])[0]

    async def _aget_text_embedding(self, text: str) -> Vector:
        return (await self._cached.adocuments([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Vector]:
        return self._cached.documents(texts)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Vector]:
        return await self._cached.adocuments(texts)
