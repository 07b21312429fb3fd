"""LangChain: cache any `Embeddings` with one wrapper, queries included.

`CountingEmbeddings` stands in for a paid model (OpenAIEmbeddings, CohereEmbeddings, ...)
and counts what it is asked to embed; its vectors are random, so which document matches
means nothing here. The vector store is LangChain's own in-memory one.
Needs `pip install "embmemo[langchain]"`.
"""

from __future__ import annotations

from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import InMemoryVectorStore

from embmemo import EmbeddingsCache
from embmemo.integrations.langchain import CachedEmbeddings


class CountingEmbeddings(DeterministicFakeEmbedding):
    """A stand-in model: deterministic vectors, and a count of texts embedded."""

    embedded: int = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.embedded += len(texts)
        return super().embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        self.embedded += 1
        return super().embed_query(text)


def main() -> None:
    model = CountingEmbeddings(size=64)
    cache = EmbeddingsCache(name="langchain_demo")
    cache.clear()  # start fresh: this example's namespace only
    embeddings = CachedEmbeddings(model, model="fake-64", cache=cache)
    docs = ["Redis is an in-memory data store.", "SQLite is a file database.",
            "Embeddings map text to vectors.", "Redis is an in-memory data store."]
    for run in (1, 2):
        store = InMemoryVectorStore.from_texts(docs, embeddings)
        hit = store.similarity_search("What maps text to vectors?", k=1)[0].page_content
        print(f"run {run}: searched ({hit[:20]!r}...); texts the model embedded so far: "
              f"{model.embedded}")
    assert model.embedded == 4  # 3 distinct documents and 1 query, all in the first run


if __name__ == "__main__":
    main()
