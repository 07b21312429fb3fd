"""Process entry points for the local storage and first tier tests (spawn-importable)."""

from __future__ import annotations

from typing import Any

import numpy as np

from embmemo import EmbeddingsCache

MODEL = "local-model"
DIM = 768


def vector(text: str, scale: float = 1.0) -> np.ndarray:
    seed = sum(text.encode()) * 31 + len(text)
    return np.random.default_rng(seed).random(DIM, dtype=np.float32) * np.float32(scale)


def serve_changes(url: str, name: str, conn: Any) -> None:
    """A second process changing the cache on request: ("set", text, scale, ttl),
    ("drop", text), ("clear",); answers "done" after each, then "bye"."""
    cache = EmbeddingsCache(name=name, url=url, local_cache=0)
    while True:
        request = conn.recv()
        if request[0] == "stop":
            break
        if request[0] == "set":
            _, text, scale, ttl = request
            cache.set(text, MODEL, vector(text, scale), ttl=ttl)
        elif request[0] == "drop":
            cache.drop(request[1], MODEL)
        elif request[0] == "clear":
            cache.clear()
        conn.send("done")
    cache.close()
    conn.send("bye")


def write_under_limit(url: str, worker: int, batches: int, out: Any) -> None:
    """Write fresh 768-d entries under a size limit, reading some back; report errors."""
    errors: list[str] = []
    try:
        cache = EmbeddingsCache(name="limit", url=url, local_cache=0)
        for batch in range(batches):
            texts = [f"w{worker}-b{batch}-{i}" for i in range(10)]
            cache.mset([{"text": t, "model_name": MODEL, "embedding": vector(t)}
                        for t in texts])
            for text, entry in zip(texts, cache.mget(texts, MODEL)):
                if entry is None:
                    errors.append(f"{text} missing right after it was written")
                elif not np.array_equal(entry.embedding, vector(text)):
                    errors.append(f"wrong vector for {text}")
        cache.close()
    except BaseException as exc:  # reported to the parent
        errors.append(f"{type(exc).__name__}: {exc}")
    out.put((worker, errors))
