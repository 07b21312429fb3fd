"""Decorating a method of an API client: the model and `dimensions` are part of the key.

`FakeEmbeddingsAPI` is a local stand-in for a paid remote API, so the example runs
offline; it counts what it is asked to embed, to show what the cache saves.
"""

from __future__ import annotations

import hashlib

from embmemo import EmbeddingsCache, cached_embedding

CACHE = EmbeddingsCache(name="api_client_demo")


class FakeEmbeddingsAPI:
    """Pretends to be a remote service: returns lists of floats, bills per text."""

    def __init__(self) -> None:
        self.billed_texts = 0

    def create(self, model: str, input: list[str], dimensions: int) -> list[list[float]]:
        self.billed_texts += len(input)
        return [[b / 255 for b in hashlib.sha512(f"{model}:{t}".encode()).digest()[:dimensions]]
                for t in input]


class EmbeddingClient:
    """Your existing client class; one line added above `embed`."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.api = FakeEmbeddingsAPI()

    @cached_embedding(model=lambda self: self.model, cache=CACHE, ignore=("timeout",))
    def embed(self, texts: list[str], dimensions: int = 16,
              timeout: float = 10.0) -> list[list[float]]:
        return self.api.create(model=self.model, input=texts, dimensions=dimensions)


def main() -> None:
    CACHE.clear()
    client = EmbeddingClient("text-embedding-3-small")
    docs = ["refund policy", "shipping times", "refund policy", "warranty"]

    first = client.embed(docs)
    print(f"first call: {len(first)} vectors, billed {client.api.billed_texts} texts")
    client.embed(docs, timeout=30.0)  # timeout is ignored: same entries
    print(f"same texts again: billed {client.api.billed_texts} texts in total")
    small = client.embed(docs, dimensions=8)  # another dimension: another entry
    print(f"dimensions=8: {len(small[0])}-d vectors, billed {client.api.billed_texts} in total")
    other = EmbeddingClient("text-embedding-3-large")
    other.embed(["refund policy"])
    print(f"another model: billed {other.api.billed_texts} text(s) on its own client")
    print(f"cache_info: {client.embed.cache_info()}")
    assert client.api.billed_texts == 6  # 3 distinct texts x 2 dimension settings
    CACHE.clear()


if __name__ == "__main__":
    main()
