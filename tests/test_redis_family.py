"""Redis as users run it: replicas, full servers, two event loops, malformed URLs.

Each test is a case found by using the cache the way a service under load does, on real
redis-server processes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from reliability_support import Model, running, vector_for, wait_until
from servers import RedisServer

from embmemo import BackendError, ConfigError, EmbeddingsCache, cached_embedding

MODEL = "family-model"


# -- replicas -------------------------------------------------------------------------------


@pytest.fixture
def replicated() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A primary and a read-only replica of it."""
    with running() as primary, running("--replicaof", "127.0.0.1", "0") as replica:
        with replica.client() as raw:
            raw.replicaof("127.0.0.1", primary.port)
            assert wait_until(lambda: raw.info("replication")["master_link_status"] == "up")
        yield primary, replica


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_hits_read_from_a_replica_stay_hits(
    replicated: tuple[RedisServer, RedisServer], namespace: str, asynchronous: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    primary, replica = replicated
    texts = [f"replicated {i}" for i in range(150)]
    writer = EmbeddingsCache(name=namespace, url=primary.url, ttl=0.8)
    writer.mset([{"text": t, "model_name": MODEL, "embedding": vector_for(t)} for t in texts])
    with replica.client() as raw:
        assert wait_until(lambda: raw.dbsize() == 150)
    time.sleep(0.25)  # every entry is due for its TTL again: the replica refuses PEXPIRE
    reader = EmbeddingsCache(name=namespace, url=replica.url)
    model = Model()

    @cached_embedding(model=MODEL, cache=reader)
    def embed(batch: list[str]) -> np.ndarray:
        return model.compute(list(batch))

    @cached_embedding(model=MODEL, cache=reader)
    async def aembed(batch: list[str]) -> np.ndarray:
        return model.compute(list(batch))

    if asynchronous:
        entries = asyncio.run(reader.amget(texts, MODEL))
        result = asyncio.run(aembed(texts))
        info = aembed.cache_info()  # type: ignore[attr-defined]
    else:
        entries = reader.mget(texts, MODEL)
        result = embed(texts)
        info = embed.cache_info()  # type: ignore[attr-defined]
    assert all(entry is not None for entry in entries)
    np.testing.assert_array_equal(result, np.stack([vector_for(t) for t in texts]))
    assert (info.hits, info.errors, model.calls) == (150, 0, 0)
    assert "TTL refresh skipped" in caplog.text and "read only replica" in caplog.text
    writer.clear()


# -- a full server ----------------------------------------------------------------------------


def test_a_write_that_fills_the_server_says_how_much_was_written(namespace: str) -> None:
    with running("--maxmemory", "3mb", "--maxmemory-policy", "noeviction") as server:
        cache = EmbeddingsCache(name=namespace, url=server.url)
        items = [{"text": f"fill {i}", "model_name": MODEL, "embedding": np.ones(768)}
                 for i in range(2000)]
        with pytest.raises(BackendError) as caught:
            cache.mset(items)
        message = str(caught.value)
        assert "of 2000 entries were written" in message and "not atomic" in message
        written = int(message.split("at least ")[1].split(" of ")[0])
        with server.client() as raw:
            assert 0 < written <= raw.dbsize() < 2000
        with pytest.raises(BackendError, match="of 2000 entries were written"):
            asyncio.run(cache.amset(items))


# -- event loops ------------------------------------------------------------------------------


def client_count(raw: redis.Redis) -> int:
    """Connections embmemo has open (its clients name themselves)."""
    return sum(1 for client in raw.client_list() if client.get("name") == "embmemo")


def test_two_loops_at_once_keep_one_pool_each(redis_server: RedisServer, namespace: str) -> None:
    cache = EmbeddingsCache(name=namespace, url=redis_server.url,
                            connection_kwargs={"max_connections": 8})
    cache.set("shared", MODEL, [1.0, 2.0])
    errors: list[BaseException] = []
    with redis_server.client() as raw:
        baseline = client_count(raw)
        peak = [0]

        def loop_thread() -> None:
            async def work() -> None:
                for i in range(1000):
                    assert await cache.aget("shared", MODEL) is not None
                    if i % 100 == 0:
                        peak[0] = max(peak[0], client_count(raw))
                        await asyncio.sleep(0)

            try:
                asyncio.run(work())
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=loop_thread) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert peak[0] - baseline <= 2 * 8  # two loops, one pool of at most 8 each
        # Each loop's client was closed when asyncio.run shut the loop down.
        assert wait_until(lambda: client_count(raw) <= baseline, timeout=5)


def test_alternating_loops_reuse_their_clients(redis_server: RedisServer,
                                               namespace: str) -> None:
    # local_cache=0: the tier's invalidation connection would be one more, and hits would
    # never reach a loop's client.
    cache = EmbeddingsCache(name=namespace, url=redis_server.url, local_cache=0)
    cache.set("x", MODEL, [1.0])
    loops = [asyncio.new_event_loop() for _ in range(2)]
    try:
        with redis_server.client() as raw:
            before = raw.info("stats")["total_connections_received"]
            for i in range(200):
                assert loops[i % 2].run_until_complete(cache.aget("x", MODEL)) is not None
            opened = raw.info("stats")["total_connections_received"] - before
        assert opened <= 2  # a client per loop, kept: not one per switch
    finally:
        for loop in loops:
            loop.run_until_complete(cache.aclose())
            loop.close()


# -- URLs -------------------------------------------------------------------------------------

SECRET = "s3cr/et#pa?ss@word"


@pytest.mark.parametrize("url", [
    f"redis://default:{SECRET}@127.0.0.1:notaport/0",
    f"redis://default:{SECRET}@127.0.0.1:99999/0",
    f"redis://default:{SECRET}@127.0.0.1:6379/abc",
    f"redis://default:{SECRET}@:6379/0",
    f"redis://default:{SECRET}@h1:1,h2:2/0",
    f"unix://default:{SECRET}@relative/path.sock",
    f"rediss+cluster://default:{SECRET}@h:1/3",
    f"redis+cluster://default:{SECRET}@h:0",
    f"postgres://default:{SECRET}@h/db",
])
def test_a_malformed_url_is_a_config_error_that_shows_no_secret(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError) as caught:
        EmbeddingsCache(url=url)
    message = str(caught.value)
    assert "s3cr" not in message and "word" not in message and "***" in message
    assert message.startswith("url:")
    monkeypatch.setenv("EMBMEMO_URL", url)
    with pytest.raises(ConfigError, match=r"^EMBMEMO_URL:") as caught:
        EmbeddingsCache().get("t", MODEL)  # the environment is read at first use
    assert "s3cr" not in str(caught.value)


def test_a_password_with_unencoded_reserved_characters_works_and_never_shows(
    namespace: str,
) -> None:
    with running(password=SECRET) as server:
        url = f"redis://default:{SECRET}@127.0.0.1:{server.port}/0"
        cache = EmbeddingsCache(name=namespace, url=url)
        for shown in (repr(cache), str(cache), cache.url, repr(cache.store.backend())):
            assert "s3cr" not in shown and "word" not in shown
        assert cache.url == f"redis://default:***@127.0.0.1:{server.port}/0"
        cache.set("t", MODEL, [1.0])
        assert cache.get("t", MODEL) is not None
        assert asyncio.run(cache.aget("t", MODEL)) is not None
        wrong = EmbeddingsCache(name=namespace, url=url.replace("word", "w0rd"))
        with pytest.raises(BackendError) as caught:
            wrong.get("t", MODEL)
        assert "s3cr" not in str(caught.value)


def test_the_database_number_is_used(redis_server: RedisServer, namespace: str) -> None:
    cache = EmbeddingsCache(name=namespace, url=f"redis://127.0.0.1:{redis_server.port}/3")
    key = cache.set("in db 3", MODEL, [1.0])
    with redis.Redis(port=redis_server.port, db=3) as db3, \
            redis.Redis(port=redis_server.port, db=0) as db0:
        assert db3.exists(key) and not db0.exists(key)
    cache.clear()
