"""Process entry points for the reliability tests (importable by multiprocessing spawn)."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from embmemo import EmbeddingsCache

MODEL = "proc-model"


def vector(text: str, dim: int = 16) -> np.ndarray:
    seed = sum(text.encode()) * 31 + len(text)
    return np.random.default_rng(seed).random(dim, dtype=np.float32)


def share_one_file(url: str, worker: int, workers: int, rounds: int, out: Any) -> None:
    """Write own entries in batches, read everyone's, report errors and wrong vectors."""
    errors: list[str] = []
    try:
        cache = EmbeddingsCache(name="procs", url=url, ttl=3600)
        for batch in range(rounds):
            texts = [f"w{worker}-b{batch}-{i}" for i in range(20)] + [f"shared-{batch}"]
            cache.mset([{"text": t, "model_name": MODEL, "embedding": vector(t)} for t in texts])
            other = (worker + 1 + batch) % workers
            probe = [f"w{other}-b{b}-0" for b in range(batch + 1)] + texts
            for text, entry in zip(probe, cache.mget(probe, MODEL)):
                if entry is not None and not np.array_equal(entry.embedding, vector(text)):
                    errors.append(f"wrong vector for {text}")
                if entry is None and text in texts:
                    errors.append(f"own entry {text} missing right after writing it")
            cache.exists(f"shared-{batch}", MODEL)
        cache.close()
    except BaseException as exc:  # reported to the parent
        errors.append(f"{type(exc).__name__}: {exc}")
    out.put((worker, errors))


def write_batches_forever(url: str, batch_size: int, started: Any) -> None:
    """Huge msets in a loop, each batch tagged in its metadata, until killed."""
    cache = EmbeddingsCache(name="killed", url=url)
    rows = np.random.default_rng(os.getpid()).random((batch_size, 384), dtype=np.float32)
    batch = 0
    while True:
        cache.mset([{"text": f"batch {batch} item {i}", "model_name": MODEL,
                     "embedding": rows[i], "metadata": {"batch": batch}}
                    for i in range(batch_size)])
        batch += 1
        started.set()
        time.sleep(0)


def open_new_file_together(url: str, barrier: Any, out: Any) -> None:
    """Open (and so create) a fresh cache file at the same moment as the other workers."""
    try:
        barrier.wait(30)
        cache = EmbeddingsCache(name="opened", url=url, ttl=3600)
        text = f"pid {os.getpid()}"
        cache.set(text, MODEL, vector(text))
        found = cache.get(text, MODEL)
        out.put(None if found is not None else f"{text}: not found after set")
    except BaseException as exc:  # reported to the parent
        out.put(f"{type(exc).__name__}: {exc}")
