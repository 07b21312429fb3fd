"""A fleet on a real Redis Cluster with replicas: failover and resharding under load,
reads from replicas, a process pool. Each test forms its own cluster (they break them);
they run once, not per backend."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from redis.cluster import LoadBalancingStrategy, RedisCluster
from servers import RedisClusterProcesses

from embmemo import EmbeddingsCache, cached_embedding

MODEL = "fleet-model"
DIM = 16


def vector(text: str) -> np.ndarray:
    seed = sum(text.encode()) * 31 + len(text)
    return np.random.default_rng(seed).random(DIM, dtype=np.float32)


CACHE_CLUSTER = ("--cluster-require-full-coverage", "no",
                 "--cluster-allow-reads-when-down", "yes")
"""What README recommends for a cluster that holds a cache: the healthy primaries keep
serving while one is being replaced (by default the whole cluster refuses)."""


@pytest.fixture
def replicated() -> Iterator[RedisClusterProcesses]:
    """Three primaries, a replica each, a one-second node timeout (quick failovers)."""
    for attempt in range(3):  # forming six nodes on a busy machine can time out: again
        cluster = RedisClusterProcesses(3, 1, 1000, *CACHE_CLUSTER)
        try:
            cluster.start()
            break
        except RuntimeError:
            cluster.stop()
            if attempt == 2:
                raise
    try:
        yield cluster
    finally:
        cluster.stop()


def stats(cluster: RedisClusterProcesses, command: str) -> dict[int, int]:
    """Calls of ``command`` per server port (INFO commandstats)."""
    calls = {}
    for server in cluster.servers:
        with server.client() as client:
            calls[server.port] = client.info("commandstats").get(
                f"cmdstat_{command}", {}).get("calls", 0)
    return calls


def reset_stats(cluster: RedisClusterProcesses) -> None:
    for server in cluster.servers:
        with server.client() as client:
            client.config_resetstat()


def wait_replicated(cluster: RedisClusterProcesses) -> None:
    for server in cluster.servers[:cluster.primaries]:
        with server.client() as client:
            client.execute_command("WAIT", 1, 2000)


@pytest.mark.parametrize("option", [{"read_from_replicas": True},
                                    {"load_balancing_strategy":
                                     LoadBalancingStrategy.ROUND_ROBIN_REPLICAS}],
                         ids=["read_from_replicas", "replicas_only"])
def test_replicas_serve_reads_and_hits_stay_hits(replicated: RedisClusterProcesses,
                                                 namespace: str, option: dict[str, Any]) -> None:
    cache = EmbeddingsCache(name=namespace, url=replicated.url, ttl=4,
                            connection_kwargs=option)
    texts = [f"replica text {i}" for i in range(300)]
    cache.mset([{"text": t, "model_name": MODEL, "embedding": vector(t)} for t in texts])
    wait_replicated(replicated)
    time.sleep(1.1)  # a quarter of the TTL: every hit is due to slide
    reset_stats(replicated)
    entries = cache.mget(texts, MODEL)
    assert all(e is not None and np.array_equal(e.embedding, vector(t))
               for t, e in zip(texts, entries))
    info = cache.stats()
    assert info.hits == 300 and info.errors == 0
    reads = stats(replicated, "mget")
    replicas = [s.port for s in replicated.servers[replicated.primaries:]]
    primaries = [s.port for s in replicated.servers[:replicated.primaries]]
    assert sum(reads[port] for port in replicas) > 0
    if "load_balancing_strategy" in option:
        assert sum(reads[port] for port in primaries) == 0
    slides = stats(replicated, "pexpire")  # (replicas count the ones replicated to them)
    assert sum(slides[port] for port in primaries) == 300  # refreshes go to the primaries
    first = replicated.servers[0]
    with RedisCluster(host="127.0.0.1", port=first.port) as raw:
        assert 3000 < raw.pttl(cache.key(texts[0], MODEL)) <= 4000  # slid on the primary


class Load:
    """A thread calling a decorated function on batches of cached texts and recording,
    per call: when, how long, how many of its texts were hits; and any wrong vector."""

    def __init__(self, embed: Any, texts: list[str], batch: int = 60) -> None:
        self.embed, self.texts, self.batch = embed, texts, batch
        self.calls: list[tuple[float, float, float]] = []  # (start, seconds, hit rate)
        self.wrong = 0
        self.failures: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        rng = np.random.default_rng(7)
        try:
            while not self.stop.is_set():
                batch = [self.texts[i] for i in rng.choice(len(self.texts), self.batch,
                                                           replace=False)]
                before = self.embed.cache_info().misses
                started = time.monotonic()
                result = self.embed(batch)
                spent = time.monotonic() - started
                computed = self.embed.cache_info().misses - before
                self.calls.append((started, spent, 1 - computed / len(batch)))
                self.wrong += sum(not np.array_equal(row, vector(t))
                                  for t, row in zip(batch, result))
        except BaseException as exc:
            self.failures.append(exc)

    def hit_rate(self, start: float, end: float) -> float:
        rates = [rate for begun, _, rate in self.calls if start <= begun <= end]
        return float(np.mean(rates)) if rates else float("nan")


def decorated(cache: EmbeddingsCache, asynchronous: bool = False) -> Any:
    """A decorated embed function; an async one is called on a loop of its own, so
    either is called the same way from a thread."""
    if not asynchronous:
        @cached_embedding(model=MODEL, cache=cache)
        def embed(texts: list[str]) -> np.ndarray:
            return np.stack([vector(t) for t in texts])

        return embed

    @cached_embedding(model=MODEL, cache=cache)
    async def aembed(texts: list[str]) -> np.ndarray:
        return np.stack([vector(t) for t in texts])

    loop = asyncio.new_event_loop()

    def call(texts: list[str]) -> np.ndarray:
        return loop.run_until_complete(aembed(texts))

    call.cache_info = aembed.cache_info  # type: ignore[attr-defined]
    return call


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_primary_failover_under_load_keeps_the_healthy_nodes_hits(
        replicated: RedisClusterProcesses, namespace: str,
        capsys: pytest.CaptureFixture[str], asynchronous: bool) -> None:
    cache = EmbeddingsCache(name=namespace, url=replicated.url)
    embed = decorated(cache, asynchronous)
    texts = [f"failover text {i}" for i in range(600)]
    embed(texts)
    wait_replicated(replicated)
    load = Load(embed, texts)
    load.thread.start()
    time.sleep(1.0)
    victim = replicated.servers[1]
    killed = time.monotonic()
    victim.kill()
    healed = _wait_for_failover(replicated, victim)
    time.sleep(2.0)
    load.stop.set()
    load.thread.join(30)
    assert not load.thread.is_alive() and load.failures == []
    assert load.wrong == 0
    during = load.hit_rate(killed, healed)
    after = load.hit_rate(healed + 1.0, time.monotonic())  # the new map read meanwhile
    worst = max(seconds for _, seconds, _ in load.calls)
    with capsys.disabled():
        mode = "async" if asynchronous else "sync"
        print(f"\nfailover ({mode}): {healed - killed:.1f} s to a new primary; hit rate during it "
              f"{during:.0%}, after {after:.0%}; worst call {worst * 1000:.0f} ms; "
              f"{len(load.calls)} calls, 0 wrong vectors")
    assert during >= 0.5  # two thirds of the keys live on healthy primaries
    assert after >= 0.95
    assert worst < 5.0


def _wait_for_failover(cluster: RedisClusterProcesses, victim: Any) -> float:
    """When a replica took over the victim's slots."""
    survivor = next(s for s in cluster.servers[:cluster.primaries] if s is not victim)
    deadline = time.monotonic() + 30
    with survivor.client() as client:
        while time.monotonic() < deadline:
            info = client.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" in text and all(
                    int(port) != victim.port
                    for *_, (_, port, *_) in [s[:3] for s in client.execute_command(
                        "CLUSTER", "SLOTS")]):
                return time.monotonic()
            time.sleep(0.05)
    raise AssertionError("no replica took over")


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_resharding_a_hash_tagged_namespace_under_load_fails_nothing(
        replicated: RedisClusterProcesses, capsys: pytest.CaptureFixture[str],
        asynchronous: bool) -> None:
    name = "{fleet}"  # every key of the namespace in one slot
    cache = EmbeddingsCache(name=name, url=replicated.url)
    embed = decorated(cache, asynchronous)
    cached = [f"moving text {i}" for i in range(1500)]
    for start in range(0, len(cached), 500):
        embed(cached[start:start + 500])
    slot = redis.cluster.key_slot(b"fleet")  # type: ignore[attr-defined]
    source = replicated.primary_of(slot)
    target = next(s for s in replicated.servers[:replicated.primaries] if s is not source)
    fresh = iter(range(10**9))

    class Mixed(Load):  # cached texts and new ones in each batch: both sides of a move
        def run(self) -> None:
            rng = np.random.default_rng(3)
            try:
                while not self.stop.is_set():
                    batch = [cached[i] for i in rng.choice(len(cached), 40, replace=False)]
                    batch += [f"new text {next(fresh)}" for _ in range(10)]
                    started = time.monotonic()
                    result = self.embed(batch)
                    self.calls.append((started, time.monotonic() - started, 0.0))
                    self.wrong += sum(not np.array_equal(row, vector(t))
                                      for t, row in zip(batch, result))
            except BaseException as exc:
                self.failures.append(exc)

    load = Mixed(embed, cached)
    load.thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    moved = _move_slot(slot, source, target, replicated)
    took = time.monotonic() - started
    time.sleep(0.5)
    load.stop.set()
    load.thread.join(30)
    assert not load.thread.is_alive() and load.failures == []
    info = embed.cache_info()
    worst = max(seconds for _, seconds, _ in load.calls)
    with capsys.disabled():
        mode = "async" if asynchronous else "sync"
        print(f"\nresharding ({mode}): {moved} keys of one slot moved in {took:.2f} s "
              "under load; "
              f"{len(load.calls)} calls, {info.errors} errors, worst call "
              f"{worst * 1000:.0f} ms, 0 wrong vectors")
    assert load.wrong == 0
    assert info.errors == 0  # TRYAGAIN waited out, nothing failed open
    assert cache.engine.breaker.allow() is not None  # the breaker stayed closed
    assert all(e is not None for e in cache.mget(cached, MODEL))


def _move_slot(slot: int, source: Any, target: Any, cluster: RedisClusterProcesses) -> int:
    """Migrate one slot key batch by key batch, as redis-cli --cluster reshard does."""
    with source.client() as src, target.client() as dst:
        source_id = src.execute_command("CLUSTER", "MYID").decode()
        target_id = dst.execute_command("CLUSTER", "MYID").decode()
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        moved = 0
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000,
                                "KEYS", *keys)
            moved += len(keys)
            time.sleep(0.01)  # a migration that takes a while, as a big slot's does
        for server in cluster.servers[:cluster.primaries]:
            with server.client() as client:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    return moved


def test_a_spawn_process_pool_shares_the_cluster(replicated: RedisClusterProcesses,
                                                 tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBMEMO_")}
    env.update(EMBMEMO_URL=replicated.url, XDG_CACHE_HOME=str(tmp_path))
    example = Path(__file__).parent.parent / "examples" / "process_pool.py"
    result = subprocess.run([sys.executable, str(example)], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "embedded 1200 texts (300 distinct)" in result.stdout
    assert "300 hits on the re-read" in result.stdout
