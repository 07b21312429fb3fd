"""Process entry points for the fleet tests (importable by multiprocessing spawn)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from embmemo import EmbeddingsCache, cached_embedding

MODEL = "fleet-model"
DIM = 16


def vector(text: str) -> np.ndarray:
    seed = sum(text.encode()) * 31 + len(text)
    return np.random.default_rng(seed).random(DIM, dtype=np.float32)


def embed_shared_texts(url: str, name: str, coordinate: bool, count: int, worker: int,
                       start: Any, out: Any) -> None:
    """Walk the same ``count`` texts in batches of 50 (20 ms per model call), in the same
    order as every other worker; report the texts computed here and any wrong vector."""
    computed: list[str] = []
    errors: list[str] = []
    try:
        cache = EmbeddingsCache(name=name, url=url, coordinate=coordinate)

        @cached_embedding(model=MODEL, cache=cache)
        def embed(texts: list[str]) -> np.ndarray:
            time.sleep(0.02)
            computed.extend(texts)
            return np.stack([vector(t) for t in texts])

        texts = [f"shared text {i}" for i in range(count)]
        start.wait()
        for first in range(0, count, 50):
            batch = texts[first:first + 50]
            result = embed(batch)
            for text, row in zip(batch, result):
                if not np.array_equal(row, vector(text)):
                    errors.append(f"wrong vector for {text}")
        info = embed.cache_info()
        cache.close()
    except BaseException as exc:  # reported to the parent
        errors.append(f"{type(exc).__name__}: {exc}")
        info = None
    out.put((worker, computed, errors, info and tuple(info)))
