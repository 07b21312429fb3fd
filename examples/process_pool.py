"""Embed a corpus with a pool of worker processes that share one cache.

A decorated function goes to worker processes like any module-level function; each
worker connects on first use. With ``coordinate=True`` a text that several workers miss
at once is computed by one of them while the others wait for its entry. Point it at Redis
Cluster (or any backend) with ``EMBMEMO_URL=redis+cluster://host:7000``; without it, the
embedded SQLite file is shared.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from embmemo import EmbeddingsCache, cached_embedding

cache = EmbeddingsCache(name="process-pool-example", coordinate=True)


@cached_embedding(model="toy-hash-v1", cache=cache)
def embed(texts: list[str]) -> np.ndarray:
    """Stands in for a real model: a deterministic 64-d vector per text."""
    rows = [np.frombuffer(hashlib.sha256(t.encode()).digest() * 8, dtype=np.uint8)
            for t in texts]
    return np.stack(rows).astype(np.float32) / 255


def main() -> None:
    corpus = [f"document {i % 300}" for i in range(1200)]  # every text four times
    chunks = [corpus[start:start + 100] for start in range(0, len(corpus), 100)]
    spawn = multiprocessing.get_context("spawn")  # safe with threads and any platform
    with ProcessPoolExecutor(4, mp_context=spawn) as pool:
        matrices = list(pool.map(embed, chunks))
    vectors = np.concatenate(matrices)
    assert np.array_equal(vectors, embed(corpus))  # the same, now all from the cache
    print(f"embedded {len(corpus)} texts ({len(set(corpus))} distinct) in {len(chunks)} "
          f"chunks on 4 processes; {embed.cache_info().hits} hits on the re-read")
    cache.clear()


if __name__ == "__main__":
    main()
