"""The lookup engine behind @cached_embedding, attacked: re-entry, waiters and mutation,
fork, closed event loops, cancelled breaker trials, strict mode, storage dtypes, results
that must not depend on cache state, and pickling. Real redis-server processes throughout.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import logging
import multiprocessing
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from reliability_support import Model, in_forked_child, paused, running, vector_for, wait_until

from embmemo import (
    BackendError,
    EmbeddingOutputError,
    EmbeddingsCache,
    InvalidInputError,
    cached_embedding,
)
from embmemo.engine import CircuitOpenError, flight
from embmemo.engine.breaker import CircuitBreaker

MODEL = "engine-model"
BOUND = 2.0  # seconds a call that must not hang gets, on a loaded 2-core machine


@pytest.fixture
def cache(redis_url: str, namespace: str) -> Iterator[EmbeddingsCache]:
    made = EmbeddingsCache(name=namespace, url=redis_url)
    yield made
    made.clear()
    made.close()


def in_thread(action: Callable[[], Any], timeout: float = BOUND) -> Any:
    """Run ``action`` in a daemon thread; fail (instead of hanging) if it takes too long."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = action()
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"the call did not return within {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# -- 1. re-entry ----------------------------------------------------------------------------


def reentrant_class(cache: EmbeddingsCache, model: Model) -> Any:
    class Embeddings:
        @cached_embedding(model=MODEL, cache=cache)
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            if len(texts) > 2:
                return self.embed_documents(texts[:2]) + self.embed_documents(texts[2:])
            return model.compute(list(texts)).tolist()  # type: ignore[no-any-return]

        @cached_embedding(model=MODEL, cache=cache)
        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

        @cached_embedding(model=MODEL, cache=cache)
        async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
            if len(texts) > 2:
                first, rest = await asyncio.gather(self.aembed_documents(texts[:2]),
                                                   self.aembed_documents(texts[2:]))
                return first + rest
            await asyncio.sleep(0)
            return model.compute(list(texts)).tolist()  # type: ignore[no-any-return]

        @cached_embedding(model=MODEL, cache=cache)
        async def aembed_query(self, text: str) -> list[float]:
            return (await self.aembed_documents([text]))[0]

    return Embeddings()


def test_reentrant_calls_return_promptly_sync(cache: EmbeddingsCache) -> None:
    model = Model()
    embeddings = reentrant_class(cache, model)
    query = in_thread(lambda: embeddings.embed_query("what is ml?"))
    assert query == pytest.approx(vector_for("what is ml?").tolist())
    texts = [f"doc {i}" for i in range(7)]
    documents = in_thread(lambda: embeddings.embed_documents(texts))
    np.testing.assert_allclose(documents, np.stack([vector_for(t) for t in texts]))
    assert in_thread(lambda: embeddings.embed_documents(texts)) == documents  # now all hits
    assert embeddings.embed_query("what is ml?") == query
    assert len(cache.engine.flights) == 0


async def test_reentrant_calls_return_promptly_async(cache: EmbeddingsCache) -> None:
    model = Model()
    embeddings = reentrant_class(cache, model)
    query = await asyncio.wait_for(embeddings.aembed_query("async query"), BOUND)
    assert query == pytest.approx(vector_for("async query").tolist())
    texts = [f"adoc {i}" for i in range(7)]
    documents = await asyncio.wait_for(embeddings.aembed_documents(texts), BOUND)
    np.testing.assert_allclose(documents, np.stack([vector_for(t) for t in texts]))
    assert await asyncio.wait_for(embeddings.aembed_documents(texts), BOUND) == documents
    assert len(cache.engine.flights) == 0
    await cache.aclose()


async def test_a_call_reached_through_to_thread_computes_instead_of_waiting(
    cache: EmbeddingsCache,
) -> None:
    @cached_embedding(model=MODEL, cache=cache)
    def embed_sync(texts: list[str]) -> np.ndarray:
        return np.stack([vector_for(t) for t in texts])

    @cached_embedding(model=MODEL, cache=cache)
    async def embed(texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(embed_sync, texts)  # the same keys, another thread

    result = await asyncio.wait_for(embed(["threaded"]), BOUND)
    np.testing.assert_array_equal(result[0], vector_for("threaded"))
    await cache.aclose()


# -- 2. every caller gets its own result ----------------------------------------------------


async def test_an_owner_mutating_its_result_never_changes_a_waiters(
    cache: EmbeddingsCache,
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    @cached_embedding(model=MODEL, cache=cache)
    async def embed(texts: list[str]) -> np.ndarray:
        started.set()
        await release.wait()
        return np.stack([vector_for(t) for t in texts])

    async def owner() -> np.ndarray:
        out = await embed(["shared"])
        out /= np.linalg.norm(out)  # in place, before any other task runs
        out *= 0
        return out

    owning = asyncio.create_task(owner())
    await started.wait()
    waiting = asyncio.create_task(embed(["shared"]))
    assert await wait_for_waiter(cache)
    release.set()
    owned, waited = await asyncio.wait_for(asyncio.gather(owning, waiting), BOUND)
    assert not owned.any()
    np.testing.assert_array_equal(waited[0], vector_for("shared"))
    await cache.aclose()


async def wait_for_waiter(cache: EmbeddingsCache) -> bool:
    """Until a task waits on the in-flight text (the engine's registry shows it)."""
    for _ in range(200):
        if cache.engine.flights.waiting_tasks():
            return True
        await asyncio.sleep(0.005)
    return False


def test_threads_never_share_result_objects(cache: EmbeddingsCache) -> None:
    barrier = threading.Barrier(2)

    @cached_embedding(model=MODEL, cache=cache)
    def embed(texts: list[str]) -> np.ndarray:
        time.sleep(0.3)  # the other thread claims meanwhile and waits
        return np.stack([vector_for(t) for t in texts])

    def call(index: int) -> np.ndarray:
        barrier.wait()
        if index:
            time.sleep(0.05)  # the second caller finds the text in flight
        out = embed(["threaded shared"])
        out *= 0  # every caller scribbles on what it got, at once
        return out

    for round_ in range(3):
        cache.clear()
        barrier.reset()
        results: list[np.ndarray] = []

        def record(index: int, into: list[np.ndarray] = results) -> None:
            into.append(call(index))

        threads = [threading.Thread(target=record, args=(i,)) for i in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5)
        assert len(results) == 2, round_
        assert results[0] is not results[1]
        assert not np.shares_memory(results[0], results[1])
    fresh = embed(["threaded shared"])
    np.testing.assert_array_equal(fresh[0], vector_for("threaded shared"))


def test_mutating_a_warm_result_leaves_the_next_result_intact(cache: EmbeddingsCache) -> None:
    @cached_embedding(model=MODEL, cache=cache)
    def embed(texts: list[str]) -> list[list[float]]:
        return [vector_for(t).tolist() for t in texts]

    first = embed(["x", "x"])
    first[0][0] = 99.0
    assert first[1][0] != 99.0  # a repeated text gives two objects
    again = embed(["x"])
    again[0][0] = -1.0
    assert embed(["x"])[0] == pytest.approx(vector_for("x").tolist())


# -- 3. fork --------------------------------------------------------------------------------


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_fork_child_computes_a_text_in_flight_in_its_parent(
    cache: EmbeddingsCache, asynchronous: bool
) -> None:
    inside, release = threading.Event(), threading.Event()

    def compute(texts: list[str]) -> np.ndarray:
        if "slow" in texts and threading.current_thread() is not threading.main_thread():
            inside.set()
            release.wait(10)
        return np.stack([vector_for(t) for t in texts])

    if asynchronous:
        async def compute_async(texts: list[str]) -> np.ndarray:
            return compute(texts)

        decorated = cached_embedding(model=MODEL, cache=cache)(compute_async)

        def embed(texts: list[str]) -> np.ndarray:
            return asyncio.run(decorated(texts))  # type: ignore[no-any-return]
    else:
        embed = cached_embedding(model=MODEL, cache=cache)(compute)

    owner = threading.Thread(target=lambda: embed(["slow"]))
    owner.start()
    try:
        assert inside.wait(5)

        def child() -> bool:
            started = time.monotonic()
            result = embed(["slow", "child"])
            return bool(time.monotonic() - started < BOUND
                        and np.array_equal(result[0], vector_for("slow")))

        assert in_forked_child(child) == 0
    finally:
        release.set()
        owner.join(5)
    np.testing.assert_array_equal(embed(["slow"])[0], vector_for("slow"))


def test_a_fork_child_starts_with_a_closed_breaker(namespace: str) -> None:
    with running() as server:
        cache = EmbeddingsCache(name=namespace, url=server.url,
                                connection_kwargs={"socket_timeout": 0.2})
        cache.engine.breaker.cooldown = 60
        embed = cached_embedding(model=MODEL, cache=cache)(
            lambda texts: np.stack([vector_for(t) for t in texts]))
        with paused(server):
            for i in range(3):
                embed([f"down {i}"])
        assert cache.engine.breaker.is_open

        def child() -> bool:
            embed(["child after fork"])
            return cache.exists("child after fork", MODEL)

        assert in_forked_child(child) == 0
        assert cache.engine.breaker.is_open  # the parent's own state is untouched


# -- 4. closed event loops ------------------------------------------------------------------


def test_a_waiter_from_a_closed_loop_leaves_the_owner_intact(cache: EmbeddingsCache) -> None:
    inside, release = threading.Event(), threading.Event()

    @cached_embedding(model=MODEL, cache=cache)
    async def embed(texts: list[str]) -> np.ndarray:
        inside.set()
        await asyncio.to_thread(release.wait, 10)
        return np.stack([vector_for(t) for t in texts])

    owner_result: dict[str, Any] = {}

    def owner() -> None:
        try:
            owner_result["value"] = asyncio.run(embed(["loops"]))
        except BaseException as exc:  # reported below
            owner_result["error"] = exc

    owning = threading.Thread(target=owner)
    owning.start()
    assert inside.wait(5)

    async def impatient() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(embed(["loops"]), 0.2)

    asyncio.run(impatient())  # its loop is closed now
    inside.clear()
    release.set()
    owning.join(5)
    assert "error" not in owner_result, owner_result.get("error")
    np.testing.assert_array_equal(owner_result["value"][0], vector_for("loops"))


def test_two_loops_in_two_threads_compute_a_shared_text_once(cache: EmbeddingsCache) -> None:
    model = Model()

    @cached_embedding(model=MODEL, cache=cache)
    async def embed(texts: list[str]) -> np.ndarray:
        await asyncio.sleep(0.2)
        return model.compute(list(texts))

    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(asyncio.run(embed(["two loops"]))))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(results) == 2 and model.computed["two loops"] == 1
    for result in results:
        np.testing.assert_array_equal(result[0], vector_for("two loops"))


async def test_a_sync_call_never_blocks_on_an_owner_of_its_own_loop(
    cache: EmbeddingsCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flight, "WAIT_LIMIT", 3.0)  # a regression fails, never hangs
    inside = asyncio.Event()

    @cached_embedding(model=MODEL, cache=cache)
    async def embed(texts: list[str]) -> np.ndarray:
        inside.set()
        await asyncio.sleep(0.5)
        return np.stack([vector_for(t) for t in texts])

    @cached_embedding(model=MODEL, cache=cache)
    def embed_blocking(texts: list[str]) -> np.ndarray:
        return np.stack([vector_for(t) for t in texts])

    owner = asyncio.create_task(embed(["same loop"]))
    await inside.wait()
    started = time.monotonic()
    result = embed_blocking(["same loop"])  # blocking the loop would block the owner too
    assert time.monotonic() - started < BOUND
    np.testing.assert_array_equal(result[0], vector_for("same loop"))
    await asyncio.wait_for(owner, BOUND)
    await cache.aclose()


# -- 5. a cancelled breaker trial -----------------------------------------------------------


async def test_a_cancelled_breaker_trial_lets_caching_resume(namespace: str) -> None:
    with running() as server:
        cache = EmbeddingsCache(name=namespace, url=server.url,
                                connection_kwargs={"socket_timeout": 0.3,
                                                   "socket_connect_timeout": 0.3})
        cache.engine.breaker.cooldown = 0.5
        model = Model()

        @cached_embedding(model=MODEL, cache=cache)
        async def embed(texts: list[str]) -> np.ndarray:
            return model.compute(list(texts))

        await embed(["warm"])
        with paused(server):
            for i in range(3):
                await embed([f"down {i}"])
            assert cache.engine.breaker.is_open
            await asyncio.sleep(0.6)  # the cooldown ends: the next call is the trial
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(embed(["trial"]), 0.1)  # cancelled mid-read
        # The abandoned trial re-armed at once: this call is the new trial, and succeeds.
        await embed(["resumed"])
        assert await cache.aexists("resumed", MODEL), "caching did not resume"
        assert not cache.engine.breaker.is_open
        await cache.aclose()


def test_a_trial_without_an_answer_is_given_up_after_a_cooldown() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=0.05)
    breaker.record_failure()
    assert breaker.allow() is None
    time.sleep(0.06)
    trial = breaker.allow()
    assert trial is not None and trial.trial
    assert breaker.allow() is None  # one trial at a time
    time.sleep(0.06)
    second = breaker.allow()  # the first never answered: given up
    assert second is not None and second.trial and second is not trial
    breaker.abandon(trial)  # a stale trial cannot cancel the current one
    assert breaker.allow() is None
    breaker.abandon(second)
    assert breaker.allow() is not None  # abandoned: the next caller may try at once
    breaker.record_success()
    assert not breaker.is_open


# -- 6. on_error="raise" --------------------------------------------------------------------


def test_strict_mode_raises_on_every_call_while_the_server_is_down() -> None:
    model = Model()
    cache = EmbeddingsCache(url="redis://127.0.0.1:1/0")

    @cached_embedding(model=MODEL, cache=cache, on_error="raise")
    def embed(texts: list[str]) -> np.ndarray:
        return model.compute(list(texts))

    errors = []
    for i in range(6):
        with pytest.raises(BackendError) as caught:
            embed([f"t{i}"])
        errors.append(caught.value)
    assert model.calls == 0  # nothing computed: no paid call the user did not want
    assert any(isinstance(e, CircuitOpenError) for e in errors[3:])
    assert "on_error='raise'" in str(next(e for e in errors if isinstance(e, CircuitOpenError)))


async def test_strict_mode_raises_on_every_async_call_while_the_server_is_down() -> None:
    model = Model()
    cache = EmbeddingsCache(url="redis://127.0.0.1:1/0")

    @cached_embedding(model=MODEL, cache=cache, on_error="raise")
    async def embed(text: str) -> list[float]:
        return model.compute([text])[0].tolist()  # type: ignore[no-any-return]

    for i in range(6):
        with pytest.raises(BackendError):
            await embed(f"t{i}")
    assert model.calls == 0


# -- 7. values the cache cannot store -------------------------------------------------------


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_float16_overflow_returns_the_result_uncached(
    redis_url: str, namespace: str, asynchronous: bool
) -> None:
    cache = EmbeddingsCache(name=namespace, url=redis_url, dtype="float16")
    calls: list[list[str]] = []

    def compute(texts: list[str]) -> list[list[float]]:
        calls.append(list(texts))
        return [[1e6 if t == "huge" else 0.5, 0.25] for t in texts]

    if asynchronous:
        @cached_embedding(model=MODEL, cache=cache)
        async def aembed(texts: list[str]) -> list[list[float]]:
            return compute(texts)

        def embed(texts: list[str]) -> list[list[float]]:
            return asyncio.run(aembed(texts))  # type: ignore[no-any-return]
        info = aembed.cache_info  # type: ignore[attr-defined]
    else:
        embed = cached_embedding(model=MODEL, cache=cache)(compute)
        info = embed.cache_info  # type: ignore[attr-defined]

    assert embed(["huge", "small"]) == [[1e6, 0.25], [0.5, 0.25]]
    assert info().errors == 1
    assert cache.mexists(["huge", "small"], MODEL) == [False, True]
    assert embed(["huge", "small"]) == [[1e6, 0.25], [0.5, 0.25]]
    assert calls[-1] == ["huge"]
    strict = cached_embedding(model=MODEL + "-strict", cache=cache, on_error="raise")(compute)
    with pytest.raises(InvalidInputError, match="float16"):
        strict(["huge"])
    cache.clear()


# -- 8. results never depend on cache state -------------------------------------------------

RESULT_CASES = {
    "float64-lists": "[[float(len(t)) / 3, 0.1, 1e-3] for t in texts]",
    "float32-array": "np.stack([np.arange(4, dtype=np.float32) / (len(t) + 1) for t in texts])",
    "float64-array": "np.array([[len(t) / 7, 0.3] for t in texts])",
    "int8-array": "np.array([[len(t), -3, 127] for t in texts], dtype=np.int8)",
    "uint8-array": "np.array([[len(t), 200, 255] for t in texts], dtype=np.uint8)",
    "int32-rows": "[np.array([len(t), -70000], dtype=np.int32) for t in texts]",
    "python-ints": "[[len(t), -1, 40000] for t in texts]",
    "numpy-scalars": "[list(np.float64([len(t) / 3, 0.1])) for t in texts]",
    "float16-tuples": "tuple(tuple(np.float16([len(t) / 3, 0.1])) for t in texts)",
}

SCRIPT = """
import asyncio, pickle, sys
import numpy as np
from embmemo import EmbeddingsCache, cached_embedding
cache = EmbeddingsCache(name=sys.argv[1], url=sys.argv[2])
def compute(texts):
    if sys.argv[3] == "warm":
        raise SystemExit("a warm process must not compute")
    return {expression}
async def compute_async(texts):
    return compute(texts)
if sys.argv[4] == "async":
    decorated = cached_embedding(model="cold-warm", cache=cache)(compute_async)
    embed = lambda texts: asyncio.run(decorated(texts))
else:
    embed = cached_embedding(model="cold-warm", cache=cache)(compute)
batch = embed(["a", "bbb", "a"])
single = embed("bbb")
sys.stdout.buffer.write(pickle.dumps((batch, single)))
"""


def _describe(value: Any) -> Any:
    """A value's full type structure and exact contents, comparable with ==."""
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_describe(item) for item in value])
    return (type(value).__name__, repr(value))


@pytest.mark.parametrize(("case", "mode"), [
    *((case, "sync") for case in sorted(RESULT_CASES)),
    *((case, "async") for case in ("float64-lists", "int8-array", "python-ints")),
])
def test_cold_equals_warm_exactly_in_a_fresh_process(
    case: str, mode: str, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    script = tmp_path / "cold_warm.py"
    script.write_text(SCRIPT.format(expression=RESULT_CASES[case]))

    def run(state: str) -> Any:
        done = subprocess.run([sys.executable, str(script), namespace, redis_url, state, mode],
                              capture_output=True, check=False, timeout=60)
        assert done.returncode == 0, done.stderr.decode()
        return pickle.loads(done.stdout)  # our own child's output

    cold, warm = run("cold"), run("warm")
    assert _describe(cold) == _describe(warm)
    EmbeddingsCache(name=namespace, url=redis_url).clear()


def test_cold_equals_warm_in_one_process(cache: EmbeddingsCache) -> None:
    @cached_embedding(model=MODEL, cache=cache)
    def embed(texts: list[str]) -> np.ndarray:
        return np.array([[len(t) / 3, 0.1] for t in texts])  # float64, stored as float32

    cold = embed(["t", "tt"])
    warm = embed(["t", "tt"])
    assert cold.dtype == warm.dtype == np.float64
    assert np.array_equal(cold, warm)
    assert cold[0][0] != 1 / 3 and cold[0][0] == np.float32(1 / 3)


def test_integer_embeddings_are_stored_in_their_own_dtype(cache: EmbeddingsCache) -> None:
    @cached_embedding(model=MODEL, cache=cache)
    def embed(texts: list[str]) -> np.ndarray:
        return np.array([[1, -2, 127]] * len(texts))  # int64 values that fit int8

    embed(["quantized"])
    entry = cache.get("quantized", MODEL)
    assert entry is not None and entry.embedding.dtype == np.int8
    assert entry.embedding.tolist() == [1, -2, 127]
    raw = redis.Redis.from_url(cache.settings.url)
    header, crc = 80, 4  # one byte per dimension, not four:
    assert raw.strlen(entry.key) == header + 3 + len("quantized") + len(MODEL) + crc
    raw.close()


@pytest.mark.parametrize("form", ["lists", "ndarray"])
def test_a_changed_dimension_is_an_error_that_says_how_to_fix_it(
    cache: EmbeddingsCache, form: str
) -> None:
    dimension = [4]

    @cached_embedding(model=MODEL, cache=cache)
    def embed(texts: list[str]) -> Any:
        rows = [[float(len(t))] * dimension[0] for t in texts]
        return rows if form == "lists" else np.array(rows)

    embed(["old"])
    dimension[0] = 8
    with pytest.raises(EmbeddingOutputError) as caught:
        embed(["old", "new"])
    message = str(caught.value)
    assert "8-d" in message and "4-d" in message and "mdrop" in message
    assert f"{MODEL}-v2" in message
    assert not cache.exists("new", MODEL)  # nothing from that call was written


# -- 9. pickling ----------------------------------------------------------------------------


def test_a_decorated_function_and_a_cache_go_to_a_spawned_process_pool(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBMEMO_URL", redis_url)  # the children read the same settings
    monkeypatch.setenv("EMBMEMO_NAME", namespace)
    module = importlib.reload(importlib.import_module("spawn_embed"))
    embed = module.embed_lengths
    assert pickle.loads(pickle.dumps(embed)) is embed  # by reference, like the function
    cache = EmbeddingsCache(name=namespace, url=redis_url, ttl=60)
    copy = pickle.loads(pickle.dumps(cache))
    assert (copy.name, copy.url, copy.ttl, copy.dtype) == (cache.name, cache.url, 60.0, "float32")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert pool.submit(embed, ["a", "bb"]).result(60) == [[1.0, 0.5], [2.0, 0.5]]
        key = pool.submit(module.store_with, cache, "pickled cache").result(60)
    assert embed(["bb", "a"]) == [[2.0, 0.5], [1.0, 0.5]]
    assert embed.cache_info().hits == 2  # computed and stored by the child
    entry = cache.get_by_key(key)
    assert entry is not None and entry.ttl == 60.0
    cache.clear()


def test_pickling_a_cache_built_from_a_client_is_a_clear_error(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    with pytest.raises(TypeError, match="built from a Redis client"):
        pickle.dumps(EmbeddingsCache(redis_client=client))
    client.close()


class Embedder:
    """A callable object: pickled by value, decorated again on the other side."""

    def __call__(self, texts: list[str]) -> list[list[float]]:
        return [[float(len(t))] for t in texts]


def test_a_decorated_callable_object_pickles_by_value(redis_url: str, namespace: str) -> None:
    cache = EmbeddingsCache(name=namespace, url=redis_url)
    embed = cached_embedding(model=MODEL, cache=cache, ttl=30)(Embedder())
    assert embed(["four"]) == [[4.0]]
    copy = pickle.loads(pickle.dumps(embed))
    assert copy is not embed and copy(["four"]) == [[4.0]]
    assert copy.cache_info().hits == 1 and copy.cache.name == namespace
    cache.clear()


# -- 10. smaller ----------------------------------------------------------------------------


def test_the_bare_decorator_is_a_clear_error_at_decoration() -> None:
    def embed(texts: list[str]) -> list[list[float]]:
        return [[1.0] for _ in texts]

    with pytest.raises(TypeError, match=r'@cached_embedding\(model="your-model-name"\)'):
        cached_embedding(embed)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model="):
        cached_embedding()
    assert cached_embedding("positional", cache=EmbeddingsCache(url="memory://"))(embed)(
        ["x"]) == [[1.0]]


def test_warnings_are_rate_limited_per_cache(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="embmemo")
    for port in (1, 2):
        cache = EmbeddingsCache(url=f"redis://127.0.0.1:{port}/0")
        embed = cached_embedding(model=MODEL, cache=cache)(lambda texts: [[1.0] for _ in texts])
        embed(["a"])
        embed(["b"])
    warnings = [r.getMessage() for r in caplog.records if "computing instead" in r.getMessage()]
    assert len(warnings) == 2  # one per cache: the second outage is not muted by the first
    assert "127.0.0.1:1" in warnings[0] and "127.0.0.1:2" in warnings[1]


def test_counters_and_flights_are_clean_after_many_cancellations(
    cache: EmbeddingsCache,
) -> None:
    async def main() -> None:
        @cached_embedding(model=MODEL, cache=cache)
        async def embed(texts: list[str]) -> np.ndarray:
            await asyncio.sleep(0.002)
            return np.stack([vector_for(t) for t in texts])

        tasks = [asyncio.create_task(embed([f"c{i % 5}", "shared"])) for i in range(50)]
        await asyncio.sleep(0.001)
        for task in tasks[::2]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        result = await asyncio.wait_for(embed(["shared", "c1"]), BOUND)
        np.testing.assert_array_equal(result[0], vector_for("shared"))
        await cache.aclose()

    asyncio.run(main())
    assert wait_until(lambda: len(cache.engine.flights) == 0, timeout=BOUND)


class Client:
    """A module-level class: its decorated methods pickle like bound methods."""

    @cached_embedding(model=MODEL, cache=EmbeddingsCache(url="memory://pickled-methods"))
    def embed(self, texts: list[str]) -> list[list[float]]:
        return [[float(len(t))] for t in texts]

    @cached_embedding(model=MODEL + "-cls", cache=EmbeddingsCache(url="memory://pickled-methods"))
    @classmethod
    def embed_cls(cls, texts: list[str]) -> list[list[float]]:
        return [[-float(len(t))] for t in texts]


def test_decorated_methods_pickle_and_copy_like_plain_ones() -> None:
    client = Client()
    assert pickle.loads(pickle.dumps(client.embed))(["abc"]) == [[3.0]]
    assert pickle.loads(pickle.dumps(Client.embed_cls))(["abc"]) == [[-3.0]]
    assert pickle.loads(pickle.dumps(client.embed_cls))(["ab"]) == [[-2.0]]
    function = importlib.import_module("spawn_embed").embed_lengths
    assert copy.copy(function) is function and copy.deepcopy(function) is function
