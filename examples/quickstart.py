"""Quickstart: one decorator, and repeated texts stop costing anything.

Runs as is, with no server: entries go to the embedded SQLite file in your user cache
directory (set EMBMEMO_URL=redis://localhost:6379 to use Redis instead). Run it twice:
the second run computes nothing.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from embmemo import cached_embedding


@cached_embedding(model="toy-hash-embedder-v1")
def embed(texts: list[str]) -> np.ndarray:
    """A stand-in for a paid API or a local model: slow, deterministic."""
    time.sleep(0.05 * len(texts))
    rows = [np.frombuffer(hashlib.sha256(t.encode()).digest(), dtype=np.uint8) for t in texts]
    return np.stack(rows).astype(np.float32) / 255.0


if __name__ == "__main__":
    queries = ["What is machine learning?", "How do neural networks work?",
               "What is machine learning?"]
    started = time.perf_counter()
    vectors = embed(queries)
    print(f"first call:  {vectors.shape} in {time.perf_counter() - started:.3f}s")
    started = time.perf_counter()
    again = embed(queries)
    print(f"second call: {again.shape} in {time.perf_counter() - started:.3f}s (all cached)")
    assert np.array_equal(vectors, again)
    info = embed.cache_info()
    print(f"hits={info.hits} misses={info.misses} hit rate={info.hit_rate:.0%}")
    print(f"stored in {embed.cache.url}")
