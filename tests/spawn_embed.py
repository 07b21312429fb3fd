"""Decorated at module level, configured by EMBMEMO_* only: imported by spawned processes."""

from __future__ import annotations

from embmemo import EmbeddingsCache, cached_embedding


@cached_embedding(model="spawned-model")
def embed_lengths(texts: list[str]) -> list[list[float]]:
    """A stand-in model: the length of each text and a constant."""
    return [[float(len(text)), 0.5] for text in texts]


def store_with(cache: EmbeddingsCache, text: str) -> str:
    """Write through a cache that arrived pickled; return the key it wrote."""
    key = cache.set(text, "spawned-model", [1.0, 2.0, 3.0])
    cache.close()
    return key
