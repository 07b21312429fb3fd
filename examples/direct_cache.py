"""The explicit EmbeddingsCache, step by step (the flow of RedisVL's embeddings-cache guide).

Runs with no server on the embedded SQLite default; set EMBMEMO_URL=redis://localhost:6379
to run the same code against Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

import numpy as np

from embmemo import EmbeddingsCache

MODEL = "demo/hash-embedder"


def embed(text: str) -> np.ndarray:
    """A stand-in model: a deterministic 8-d vector per text."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).random(8, dtype=np.float32)


def main() -> None:
    cache = EmbeddingsCache(name="direct_demo")
    cache.clear()  # start fresh: this example's namespace only

    # Store, retrieve, check, drop.
    text = "What is machine learning?"
    key = cache.set(text=text, model_name=MODEL, embedding=embed(text),
                    metadata={"category": "ai", "source": "user_query"})
    print(f"Stored with key: {key[:15]}...")
    result = cache.get(text=text, model_name=MODEL)
    assert result is not None
    print(f"Found in cache: {result['text']} / {result['model_name']} / {result['metadata']}")
    print(f"Embedding shape: {np.array(result['embedding']).shape}")
    print(f"Exists: {cache.exists(text=text, model_name=MODEL)}, "
          f"other: {cache.exists(text='What is deep learning?', model_name=MODEL)}")
    cache.drop(text=text, model_name=MODEL)
    print(f"After dropping: {cache.exists(text=text, model_name=MODEL)}")

    # By key.
    key = cache.set(text=text, model_name=MODEL, embedding=embed(text))
    print(f"Exists by key: {cache.exists_by_key(key)}; "
          f"retrieved by key: {cache.get_by_key(key)['text']}")  # type: ignore[index]
    cache.drop_by_key(key)

    # Batches: one round trip each.
    texts = ["What is machine learning?", "How do neural networks work?",
             "What is deep learning?"]
    keys = cache.mset([{"text": t, "model_name": MODEL, "embedding": embed(t),
                        "metadata": {"type": "question"}} for t in texts])
    print(f"Stored {len(keys)} embeddings; all exist: {all(cache.mexists(texts, MODEL))}")
    print(f"Retrieved {len(cache.mget(texts, MODEL))}; by keys: {len(cache.mget_by_keys(keys))}")
    cache.mdrop(texts, MODEL)

    # TTL: a cache default, and a per-entry override.
    ttl_cache = EmbeddingsCache(name="direct_demo_ttl", ttl=2)
    short = ttl_cache.set(text="Short-lived entry", model_name=MODEL, embedding=embed("s"),
                          ttl=0.5)
    default = ttl_cache.set(text="Default TTL entry", model_name=MODEL, embedding=embed("d"))
    time.sleep(1)
    print(f"After 1 s: custom 0.5 s TTL alive: {ttl_cache.exists_by_key(short)}, "
          f"default 2 s TTL alive: {ttl_cache.exists_by_key(default)}")
    ttl_cache.clear()

    # Async twins.
    async def async_demo() -> None:
        async with EmbeddingsCache(name="direct_demo") as acache:
            key = await acache.aset(text="Async embedding", model_name=MODEL,
                                    embedding=embed("a"), metadata={"async": True})
            print(f"Async set successful? {await acache.aexists_by_key(key)}")
            entry = await acache.aget_by_key(key)
            print(f"Async get successful? {entry is not None and entry.text == 'Async embedding'}")
            await acache.adrop_by_key(key)

    asyncio.run(async_demo())
    print(f"cleared {cache.clear()} entries")


if __name__ == "__main__":
    main()
