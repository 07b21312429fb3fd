"""Issue 6 on Redis Cluster: a primary killed mid-run costs bounded time, never a result."""

from __future__ import annotations

import time

import numpy as np
import pytest
from servers import RedisClusterProcesses

from embmemo import BackendError, EmbeddingsCache, cached_embedding

MODEL = "cluster-fault-model"


def vector_for(text: str) -> np.ndarray:
    return np.random.default_rng(sum(text.encode())).random(8, dtype=np.float32)


def test_a_killed_primary_fails_open_and_the_direct_api_raises(namespace: str) -> None:
    cluster = RedisClusterProcesses(3).start()
    try:
        cache = EmbeddingsCache(name=namespace, url=cluster.url,
                                connection_kwargs={"socket_timeout": 0.3,
                                                   "socket_connect_timeout": 0.3})
        computed: list[str] = []

        @cached_embedding(model=MODEL, cache=cache)
        def embed(texts: list[str]) -> np.ndarray:
            computed.extend(texts)
            return np.stack([vector_for(t) for t in texts])

        texts = [f"text {i}" for i in range(60)]  # keys on every primary
        np.testing.assert_array_equal(embed(texts), np.stack([vector_for(t) for t in texts]))
        assert embed(texts).shape == (60, 8) and len(computed) == 60
        cluster.servers[1].kill()
        started = time.monotonic()
        for _ in range(10):
            result = embed(texts)
            np.testing.assert_array_equal(result, np.stack([vector_for(t) for t in texts]))
        assert time.monotonic() - started < 15  # the breaker makes most of these free
        assert embed.cache_info().errors > 0  # type: ignore[attr-defined]
        started = time.monotonic()
        with pytest.raises(BackendError):
            cache.mget(texts, MODEL)
        assert time.monotonic() - started < 10
    finally:
        cluster.stop()
