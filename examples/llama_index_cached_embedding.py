"""LlamaIndex: cache any embedding model with one wrapper.

`CountingEmbedding` stands in for a paid model (OpenAIEmbedding, ...) and counts what it
is asked to embed. Needs `pip install "embmemo[llama-index]"`.
"""

from __future__ import annotations

import hashlib

from llama_index.core.embeddings import BaseEmbedding

from embmemo import EmbeddingsCache
from embmemo.integrations.llama_index import CachedEmbedding


class CountingEmbedding(BaseEmbedding):
    """A stand-in model: deterministic vectors, and a count of texts embedded."""

    embedded: int = 0

    def _vector(self, text: str) -> list[float]:
        self.embedded += 1
        return [b / 255 for b in hashlib.sha256(text.encode()).digest()]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector("query: " + query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)


def main() -> None:
    model = CountingEmbedding(model_name="sha256-stand-in")
    cache = EmbeddingsCache(name="llama_index_demo")
    cache.clear()  # start fresh: this example's namespace only
    embed_model = CachedEmbedding(model, cache=cache)
    chunks = ["Nodes are chunks of documents.", "An index stores nodes.",
              "Nodes are chunks of documents."]
    for run in (1, 2):
        vectors = embed_model.get_text_embedding_batch(chunks)
        embed_model.get_query_embedding("What is a node?")
        print(f"run {run}: {len(vectors)} vectors of {len(vectors[0])} numbers; texts the "
              f"model embedded so far: {model.embedded}")
    assert model.embedded == 3  # 2 distinct chunks and 1 query, all in the first run


if __name__ == "__main__":
    main()
