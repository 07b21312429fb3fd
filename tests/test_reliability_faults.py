"""Issue 6, faults: real redis-server processes down, killed, hung, slowed and forked.

The promise under test: a cache is never why an app fails or returns a wrong vector. The
decorator fails open within one short timeout and then costs next to nothing (breaker);
the direct API raises BackendError within its timeout instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import redis
from reliability_support import (
    Model,
    client_count,
    elapsed,
    in_forked_child,
    paused,
    running,
    vector_for,
    wait_until,
)
from servers import RedisServer, free_port

from embmemo import BackendError, EmbeddingsCache, cached_embedding

MODEL = "rel-model"
TIMEOUT = 0.2
FAST = {"socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT}
# One call against a dead or hung server waits for its read once (there is no write-back
# after a failed read), plus scheduling slack on a loaded 2-core machine.
ONE_CALL_BOUND = TIMEOUT + 0.6


def decorated(cache: EmbeddingsCache, model: Model) -> Callable[[list[str]], np.ndarray]:
    @cached_embedding(model=MODEL, cache=cache)
    def embed(texts: list[str]) -> np.ndarray:
        return model.compute(list(texts))

    return embed  # type: ignore[return-value]


def check(embed: Callable[[list[str]], np.ndarray], texts: list[str]) -> None:
    np.testing.assert_array_equal(embed(texts), np.stack([vector_for(t) for t in texts]))


def assert_breaker_makes_calls_cheap(embed: Callable[[list[str]], np.ndarray]) -> None:
    spent, error = elapsed(lambda: [check(embed, [f"cheap {i}", "same"]) for i in range(50)])
    assert error is None, error
    assert spent < 1.0, f"50 calls with the breaker open took {spent:.2f}s"


def direct_calls(cache: EmbeddingsCache) -> dict[str, Callable[[], object]]:
    return {
        "get": lambda: cache.get("t", MODEL),
        "set": lambda: cache.set("t", MODEL, [1.0, 2.0]),
        "exists": lambda: cache.exists("t", MODEL),
        "drop": lambda: cache.drop("t", MODEL),
        "mget": lambda: cache.mget(["a", "b"], MODEL),
        "clear": cache.clear,
    }


def assert_direct_api_raises_quickly(cache: EmbeddingsCache, bound: float) -> None:
    for name, call in direct_calls(cache).items():
        spent, error = elapsed(call)
        assert isinstance(error, BackendError), (name, error)
        assert spent < bound, f"{name} took {spent:.2f}s"
        assert cache.url in str(error)


async def assert_async_api_raises_quickly(cache: EmbeddingsCache, bound: float) -> None:
    calls = {
        "aget": cache.aget("t", MODEL),
        "aset": cache.aset("t", MODEL, [1.0]),
        "aexists": cache.aexists("t", MODEL),
        "aclear": cache.aclear(),
    }
    for name, coroutine in calls.items():
        started = time.monotonic()
        with pytest.raises(BackendError):
            await asyncio.wait_for(coroutine, bound + 5)  # a hang fails, never blocks
        assert time.monotonic() - started < bound, name


def test_server_down_at_start_then_started(namespace: str) -> None:
    port = free_port()
    cache = EmbeddingsCache(name=namespace, url=f"redis://127.0.0.1:{port}/0",
                            connection_kwargs=FAST)
    cache.engine.breaker.cooldown = 0.3
    model = Model()
    embed = decorated(cache, model)
    spent, error = elapsed(lambda: check(embed, ["first", "second"]))
    assert error is None and spent < ONE_CALL_BOUND
    assert_breaker_makes_calls_cheap(embed)
    assert_direct_api_raises_quickly(cache, bound=1.0)
    server = RedisServer(port=port).start()
    try:
        def cached_again() -> bool:
            check(embed, ["after start"])
            return cache.exists("after start", MODEL)

        assert wait_until(cached_again, timeout=10, interval=0.1)
        before = model.calls
        check(embed, ["after start", "first"])
        check(embed, ["after start", "first"])
        assert model.calls == before + 1  # "first" computed once more, then a hit
    finally:
        server.stop()


def test_server_killed_mid_run_and_restarted(namespace: str) -> None:
    with running() as server:
        cache = EmbeddingsCache(name=namespace, url=server.url, connection_kwargs=FAST)
        cache.engine.breaker.cooldown = 0.3
        model = Model()
        embed = decorated(cache, model)
        check(embed, ["a", "b"])
        check(embed, ["a", "b"])
        assert model.calls == 2
        direct = EmbeddingsCache(name=namespace, url=server.url, connection_kwargs=FAST)
        assert direct.get("a", MODEL) is not None  # pooled connections now go stale
        server.kill()
        spent, error = elapsed(lambda: check(embed, ["a", "c"]))
        assert error is None and spent < ONE_CALL_BOUND, (error, spent)
        assert_breaker_makes_calls_cheap(embed)
        assert_direct_api_raises_quickly(direct, bound=1.0)
        asyncio.run(assert_async_api_raises_quickly(direct, bound=1.0))
        server.start()
        # The pooled connections are dead; the one retry on a dropped connection covers it.
        assert direct.set("back", MODEL, [3.0]) == direct.key("back", MODEL)
        assert direct.get("back", MODEL) is not None

        def cached_again() -> bool:
            check(embed, ["resumed"])
            return cache.exists("resumed", MODEL)

        assert wait_until(cached_again, timeout=10, interval=0.1)
        assert not cache.engine.breaker.is_open
        before = model.calls
        check(embed, ["resumed"])
        assert model.calls == before


def test_hung_server_costs_one_timeout_then_the_breaker_answers(namespace: str,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    monkeypatch.setenv("EMBMEMO_TIMEOUT", str(TIMEOUT))  # the environment sets the timeout
    with running() as server:
        cache = EmbeddingsCache(name=namespace, url=server.url)
        cache.engine.breaker.cooldown = 0.3
        model = Model()
        embed = decorated(cache, model)
        check(embed, ["x", "y"])
        with paused(server):
            for fresh in ("z", "w", "v"):  # each costs one read timeout (no write-back after)
                spent, error = elapsed(lambda: check(embed, ["x", fresh]))  # noqa: B023
                assert error is None and spent < ONE_CALL_BOUND, (error, spent)
            assert cache.engine.breaker.is_open
            assert_breaker_makes_calls_cheap(embed)
            assert_direct_api_raises_quickly(cache, bound=TIMEOUT + 0.8)
            asyncio.run(assert_async_api_raises_quickly(cache, bound=TIMEOUT + 0.8))
        # SIGCONT: the server answers again; no stale reply is read as a new one.
        assert cache.get("x", MODEL) is not None
        np.testing.assert_array_equal(cache.get("x", MODEL).embedding,  # type: ignore[union-attr]
                                      vector_for("x"))

        def cached_again() -> bool:
            check(embed, ["after resume"])
            return cache.exists("after resume", MODEL)

        assert wait_until(cached_again, timeout=10, interval=0.1)


async def test_async_decorator_fails_open_on_a_hung_server(namespace: str) -> None:
    with running() as server:
        cache = EmbeddingsCache(name=namespace, url=server.url, connection_kwargs=FAST)
        cache.engine.breaker.cooldown = 0.3
        model = Model()

        @cached_embedding(model=MODEL, cache=cache)
        async def embed(text: str) -> list[float]:
            return [float(x) for x in model.compute([text])[0]]

        assert await embed("warm") == pytest.approx(vector_for("warm").tolist())
        with paused(server):
            started = time.monotonic()
            results = await asyncio.wait_for(
                asyncio.gather(*(embed(f"hung {i}") for i in range(50))), 10)
            assert time.monotonic() - started < 2.0
            for i, result in enumerate(results):
                assert result == pytest.approx(vector_for(f"hung {i}").tolist())
        for _ in range(100):
            await asyncio.sleep(0.1)
            await embed("async resumed")
            if await cache.aexists("async resumed", MODEL):
                break
        else:
            pytest.fail("caching did not resume after SIGCONT")
        await cache.aclose()


# -- async cancellation -----------------------------------------------------------------


async def test_cancelled_reads_and_writes_never_cross_replies(namespace: str) -> None:
    pool_size = 4
    with running() as server, server.client() as raw:
        cache = EmbeddingsCache(name=namespace, url=server.url,
                                connection_kwargs={"max_connections": pool_size})
        big = [{"text": f"big {i}", "model_name": MODEL, "embedding": vector_for(f"big {i}", 512)}
               for i in range(200)]
        await cache.amset(big)
        baseline = client_count(raw)
        rng = random.Random(6)
        loop = asyncio.get_running_loop()
        cancelled = 0
        for i in range(150):
            if i % 10 == 0:  # a hiccup: replies arrive late, all at once
                server.pause()
                loop.call_later(rng.uniform(0.002, 0.01), server.resume)
            work = asyncio.gather(
                cache.amget([f"big {j}" for j in range(200)], MODEL),  # a large, slow reply
                cache.aset(f"w{i}", MODEL, vector_for(f"w{i}")),
                cache.amget([f"w{i}", f"w{i - 1}"], MODEL),
            )
            try:
                await asyncio.wait_for(work, rng.choice([0.0005, 0.001, 0.002, 0.005]))
            except asyncio.TimeoutError:
                cancelled += 1
        server.resume()
        assert cancelled > 0
        # Every later operation gets its own answer, sequential and concurrent.
        texts = [f"after {i}" for i in range(100)]
        for text in texts[:50]:
            await asyncio.wait_for(cache.aset(text, MODEL, vector_for(text)), 5)
            entry = await asyncio.wait_for(cache.aget(text, MODEL), 5)
            assert entry is not None and entry.text == text
            np.testing.assert_array_equal(entry.embedding, vector_for(text))
        await asyncio.wait_for(asyncio.gather(
            *(cache.aset(t, MODEL, vector_for(t)) for t in texts[50:])), 10)
        entries = await asyncio.wait_for(asyncio.gather(
            *(cache.aget(t, MODEL) for t in texts)), 10)
        for text, entry in zip(texts, entries):
            assert entry is not None and entry.text == text
            np.testing.assert_array_equal(entry.embedding, vector_for(text))
        got = await cache.amget([f"big {j}" for j in range(200)], MODEL)
        assert [e.text if e else None for e in got] == [f"big {j}" for j in range(200)]
        # No leak: at most the pool's connections stay open (idle), none beyond.
        assert client_count(raw) <= baseline + pool_size
        await cache.aclose()
        assert wait_until(lambda: client_count(raw) == 0, timeout=5)


async def test_cancelled_decorated_calls_leave_single_flight_usable(namespace: str) -> None:
    with running() as server:
        cache = EmbeddingsCache(name=namespace, url=server.url)
        model = Model()

        @cached_embedding(model=MODEL, cache=cache)
        async def embed(texts: list[str]) -> np.ndarray:
            await asyncio.sleep(0.001)
            return model.compute(list(texts))

        for i in range(60):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(embed([f"c{i}", "shared"]), 0.0005 * (i % 4 + 1))
        # A cancelled owner must not leave "shared" claimed forever (waiters would hang).
        result = await asyncio.wait_for(embed(["shared", "fresh"]), 5)
        np.testing.assert_array_equal(result, np.stack([vector_for("shared"),
                                                        vector_for("fresh")]))
        assert len(cache.engine.flights) == 0
        await cache.aclose()


# -- fork and event loops -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_fork_child_gets_fresh_connections_and_parent_keeps_working(
    kind: str, namespace: str, tmp_path: Path
) -> None:
    with running() as server:
        url = server.url if kind == "redis" else f"sqlite:///{tmp_path}/fork.sqlite3"
        cache = EmbeddingsCache(name=namespace, url=url)
        model = Model()
        embed = decorated(cache, model)
        check(embed, ["parent"])
        cache.set("before fork", MODEL, vector_for("before fork"))
        asyncio.run(cache.aset("async before fork", MODEL, vector_for("x")))

        def child() -> bool:
            entry = cache.get("before fork", MODEL)
            ok = entry is not None and bool(np.array_equal(entry.embedding,
                                                           vector_for("before fork")))
            for i in range(20):
                cache.set(f"child {i}", MODEL, vector_for(f"child {i}"))
            got = cache.mget([f"child {i}" for i in range(20)], MODEL)
            ok = ok and all(e is not None and np.array_equal(e.embedding, vector_for(e.text))
                            for e in got)
            check(embed, ["parent", "child text"])

            async def async_part() -> bool:
                await cache.aset("child async", MODEL, vector_for("child async"))
                found = await cache.aget("child async", MODEL)
                return found is not None

            ok = ok and asyncio.run(asyncio.wait_for(async_part(), 10))
            return ok

        assert in_forked_child(child) == 0
        # The parent's own connections were not disturbed by the child.
        entry = cache.get("child 7", MODEL)
        assert entry is not None
        np.testing.assert_array_equal(entry.embedding, vector_for("child 7"))
        check(embed, ["parent", "child text", "after fork"])
        assert cache.get("child async", MODEL) is not None
        assert asyncio.run(cache.aget("child async", MODEL)) is not None
        cache.close()


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_one_cache_from_two_event_loops_never_hangs(kind: str, namespace: str,
                                                    tmp_path: Path) -> None:
    with running() as server:
        url = server.url if kind == "redis" else f"sqlite:///{tmp_path}/loops.sqlite3"
        cache = EmbeddingsCache(name=namespace, url=url)
        model = Model()

        @cached_embedding(model=MODEL, cache=cache)
        async def embed(texts: list[str]) -> np.ndarray:
            return model.compute(list(texts))

        async def use(label: str) -> None:
            await cache.aset(label, MODEL, vector_for(label))
            entry = await cache.aget(label, MODEL)
            assert entry is not None and entry.text == label
            result = await embed([label, "shared"])
            np.testing.assert_array_equal(result, np.stack([vector_for(label),
                                                            vector_for("shared")]))

        for label in ("loop one", "loop two", "loop three"):
            asyncio.run(asyncio.wait_for(use(label), 10))
        assert model.computed["shared"] == 1
        asyncio.run(asyncio.wait_for(cache.aclose(), 10))


# -- pool exhaustion ---------------------------------------------------------------------


def test_pool_exhaustion_waits_a_bounded_time_then_fails_open(namespace: str) -> None:
    kwargs = {"max_connections": 2, "pool_timeout": 0.2, "socket_timeout": 0.5}
    with running() as server:
        cache = EmbeddingsCache(name=namespace, url=server.url, connection_kwargs=kwargs)
        pool = cache.store.backend().redis().connection_pool  # type: ignore[attr-defined]
        assert isinstance(pool, redis.BlockingConnectionPool) and pool.timeout == 0.2
        model = Model()
        embed = decorated(cache, model)
        check(embed, ["warm"])
        with paused(server), ThreadPoolExecutor(16) as pool_threads:
            started = time.monotonic()
            texts = [[f"p{i}", "warm"] for i in range(64)]
            results = list(pool_threads.map(embed, texts))
            assert time.monotonic() - started < 4.0
            for batch, result in zip(texts, results):
                np.testing.assert_array_equal(result, np.stack([vector_for(t) for t in batch]))

            direct = EmbeddingsCache(name=namespace, url=server.url, connection_kwargs=kwargs)

            def one(i: int) -> tuple[float, BaseException | None]:
                return elapsed(lambda: direct.get(f"d{i}", MODEL))

            outcomes = list(pool_threads.map(one, range(16)))
            for spent, error in outcomes:
                assert isinstance(error, BackendError)
                assert spent < 0.5 + 1.0  # socket timeout, or the pool timeout
            assert any("No connection available" in str(e) for _, e in outcomes)
        assert cache.get("warm", MODEL) is not None


async def test_async_pool_exhaustion_fails_open_or_raises(namespace: str) -> None:
    kwargs = {"max_connections": 2, "pool_timeout": 0.2, "socket_timeout": 0.5}
    with running() as server:
        cache = EmbeddingsCache(name=namespace, url=server.url, connection_kwargs=kwargs)
        model = Model()

        @cached_embedding(model=MODEL, cache=cache)
        async def embed(text: str) -> list[float]:
            return [float(x) for x in model.compute([text])[0]]

        await embed("warm")
        with paused(server):
            started = time.monotonic()
            results = await asyncio.wait_for(
                asyncio.gather(*(embed(f"a{i}") for i in range(200))), 10)
            assert time.monotonic() - started < 3.0
            for i, result in enumerate(results):
                assert result == pytest.approx(vector_for(f"a{i}").tolist())
            direct = EmbeddingsCache(name=namespace, url=server.url, connection_kwargs=kwargs)

            async def one(i: int) -> float:
                begun = time.monotonic()
                with pytest.raises(BackendError):
                    await direct.aget(f"d{i}", MODEL)
                return time.monotonic() - begun

            spent = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(30))), 10)
            assert max(spent) < 1.5
        assert await cache.aget("warm", MODEL) is not None
        await cache.aclose()
        await direct.aclose()
