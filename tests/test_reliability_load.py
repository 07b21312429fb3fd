"""Issue 6, load: threads and asyncio tasks hammering one Redis-backed cache at once."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter

import numpy as np
from reliability_support import running, vector_for

from embmemo import EmbeddingsCache, cached_embedding

MODEL = "load-model"
TEXTS = [f"text {i}" for i in range(400)]


def test_threads_and_tasks_together_zero_errors_and_single_flight(namespace: str) -> None:
    with running() as server:
        # 500 tasks share 64 connections on an event loop that 8 busy threads starve of the
        # GIL, on a 2-core machine that may be running other tests: connecting and queueing
        # for a connection can then take longer than the 1 s default timeouts. This test is
        # about correctness under contention (on_error="raise" makes any failure visible),
        # so it gives the client generous timeouts; the fault tests cover the short ones.
        cache = EmbeddingsCache(name=namespace, url=server.url, connection_kwargs={
            "socket_timeout": 10, "socket_connect_timeout": 10, "pool_timeout": 20})
        computed: Counter[str] = Counter()
        lock = threading.Lock()

        def compute(batch: list[str]) -> np.ndarray:
            with lock:
                computed.update(batch)
            return np.stack([vector_for(t) for t in batch])

        @cached_embedding(model=MODEL, cache=cache, on_error="raise")
        def embed(batch: list[str]) -> np.ndarray:
            time.sleep(0.001)  # a model takes a while: concurrent misses overlap
            return compute(list(batch))

        @cached_embedding(model=MODEL, cache=cache, on_error="raise")  # the same entries
        async def aembed(batch: list[str]) -> np.ndarray:
            await asyncio.sleep(0.001)
            return compute(list(batch))

        failures: list[str] = []

        def verify(batch: list[str], result: np.ndarray, who: str) -> None:
            expected = np.stack([vector_for(t) for t in batch])
            if not np.array_equal(np.asarray(result), expected):
                failures.append(f"{who}: wrong vectors for {batch}")

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            for call in range(1000):
                batch = rng.sample(TEXTS, rng.randint(1, 4))
                if rng.random() < 0.2:
                    batch.append(batch[0])  # duplicates inside one call
                try:
                    verify(batch, embed(batch), f"thread {seed} call {call}")
                except BaseException as exc:  # counted, never lost in a thread
                    failures.append(f"thread {seed}: {type(exc).__name__}: {exc}")

        async def tasks() -> None:
            rng = random.Random(99)
            batches = [rng.sample(TEXTS, rng.randint(1, 4)) for _ in range(500)]

            async def one(index: int, batch: list[str]) -> None:
                try:
                    verify(batch, await aembed(batch), f"task {index}")
                except BaseException as exc:  # counted, never lost in a thread
                    failures.append(f"task {index}: {type(exc).__name__}: {exc}")

            await asyncio.wait_for(asyncio.gather(*(one(i, b) for i, b in enumerate(batches))),
                                   60)
            await cache.aclose()

        started = time.monotonic()
        threads = [threading.Thread(target=worker, args=(seed,), daemon=True)
                   for seed in range(8)]
        for thread in threads:
            thread.start()
        asyncio.run(tasks())
        for thread in threads:
            thread.join(60)
        assert not any(t.is_alive() for t in threads), "a worker thread hung"
        spent = time.monotonic() - started
        assert failures == [], failures[:5]
        assert set(computed) <= set(TEXTS)
        assert max(computed.values()) == 1, computed.most_common(5)  # single flight held
        assert len(computed) == len(TEXTS)  # (every text was asked for, so computed once)
        assert spent < 45, f"the load took {spent:.1f}s"
        assert len(cache.engine.flights) == 0
        cache.close()
