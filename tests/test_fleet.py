"""Many processes on one backend: each missing text computed once (``coordinate=True``)."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fleet_workers import MODEL, embed_shared_texts, vector

from embmemo import EmbeddingsCache, cached_embedding

SPAWN = multiprocessing.get_context("spawn")
TEXTS = 2000
WORKERS = 4


def run_fleet(url: str, name: str, coordinate: bool) -> tuple[Counter[str], list[Any]]:
    """Four spawned processes walking the same texts in the same order at once."""
    start = SPAWN.Barrier(WORKERS)
    out = SPAWN.Queue()
    procs = [SPAWN.Process(target=embed_shared_texts,
                           args=(url, name, coordinate, TEXTS, w, start, out))
             for w in range(WORKERS)]
    for proc in procs:
        proc.start()
    try:
        results = [out.get(timeout=180) for _ in procs]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    computed: Counter[str] = Counter()
    for _, texts, errors, _ in results:
        assert errors == []
        computed.update(texts)
    assert set(computed) == {f"shared text {i}" for i in range(TEXTS)}
    return computed, [info for *_, info in results]


@pytest.fixture(params=["cluster", "sqlite"])
def fleet_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/fleet.sqlite3"
    return str(request.getfixturevalue("cluster_url"))


def test_a_fleet_computes_each_text_once_with_coordinate(fleet_url: str, namespace: str,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    without, _ = run_fleet(fleet_url, namespace + "a", coordinate=False)
    coordinated, infos = run_fleet(fleet_url, namespace + "b", coordinate=True)
    factor_without = sum(without.values()) / TEXTS
    factor_with = sum(coordinated.values()) / TEXTS
    with capsys.disabled():
        print(f"\n{fleet_url.split(':')[0]}: each text computed {factor_without:.2f} times "
              f"without coordinate, {factor_with:.3f} with")
    assert factor_with <= 1.01
    assert factor_without > 1.5  # the duplicate work coordinate=True removes
    # Most texts came by waiting for another process (CacheInfo.waited); the rest were
    # there already when this one looked, or came from its own in-process flights.
    waited = sum(info[5] for info in infos)
    assert waited >= TEXTS * (WORKERS - 1) * 0.75
    EmbeddingsCache(name=namespace + "a", url=fleet_url).clear()
    EmbeddingsCache(name=namespace + "b", url=fleet_url).clear()


def test_a_crashed_owner_is_replaced_after_its_lease_lapses(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    from embmemo.engine import flow

    monkeypatch.setattr(flow, "LEASE_SECONDS", 0.3)
    url = f"sqlite:///{tmp_path}/lease.sqlite3"
    cache = EmbeddingsCache(name="lease", url=url, coordinate=True)
    # Another process took the lease and died: nobody will ever write the entry.
    backend = cache.store.backend()
    assert backend.lease_many([cache.store.scheme.lease_key(cache.key("q", MODEL))],
                              300) == [True]
    calls: list[list[str]] = []

    @cached_embedding(model=MODEL, cache=cache)
    def embed(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return np.stack([vector(t) for t in texts])

    result = embed(["q", "r"])
    assert np.array_equal(result, np.stack([vector("q"), vector("r")]))
    assert sorted(t for call in calls for t in call) == ["q", "r"]  # q once its lease lapsed
    assert embed.cache_info().waited == 0


def test_a_failing_owner_releases_its_leases_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/release.sqlite3"
    cache = EmbeddingsCache(name="release", url=url, coordinate=True)

    @cached_embedding(model=MODEL, cache=cache)
    def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("model down")

    with pytest.raises(RuntimeError):
        broken(["q"])
    lease = cache.store.scheme.lease_key(cache.key("q", MODEL))
    assert cache.store.backend().lease_many([lease], 1000) == [True]  # it was given up


async def test_a_cancelled_wait_for_another_process_leaves_nothing_stuck(tmp_path: Path) -> None:
    import asyncio

    url = f"sqlite:///{tmp_path}/cancel.sqlite3"
    cache = EmbeddingsCache(name="cancel", url=url, coordinate=True)
    lease = cache.store.scheme.lease_key(cache.key("q", MODEL))
    assert cache.store.backend().lease_many([lease], 60_000) == [True]  # another process's

    @cached_embedding(model=MODEL, cache=cache)
    async def embed(texts: list[str]) -> np.ndarray:
        return np.stack([vector(t) for t in texts])

    waiting = asyncio.create_task(embed(["q"]))
    await asyncio.sleep(0.2)  # polling for the other process's entry
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    cache.store.backend().release_many([lease])  # the other process gives up
    result = await asyncio.wait_for(embed(["q"]), 5)  # nothing left claimed in process
    assert np.array_equal(result[0], vector("q"))


def test_with_the_backend_down_nobody_waits() -> None:
    import time

    cache = EmbeddingsCache(name="down", url="redis://127.0.0.1:1/0", coordinate=True)

    @cached_embedding(model=MODEL, cache=cache)
    def embed(texts: list[str]) -> np.ndarray:
        return np.stack([vector(t) for t in texts])

    started = time.monotonic()
    assert np.array_equal(embed(["q", "r"])[1], vector("r"))
    assert time.monotonic() - started < 2
    assert embed.cache_info().errors == 2
