"""Issue 6, security: least privilege (ACL), TLS verification, secrets, inert stored data."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import redis
from reliability_support import (
    Model,
    TLSRedisServer,
    make_tls_files,
    paused,
    running,
    tls_binary,
    vector_for,
)
from servers import RedisServer, free_port

from embmemo import BackendError, EmbeddingsCache, cached_embedding

MODEL = "sec-model"

# What embmemo needs, and nothing else. AUTH and HELLO need no grant (every user may run
# them); PING is not sent (health checks are off). CLIENT SETNAME: the "embmemo" name.
REQUIRED_RULES = ("+set", "+mget", "+exists", "+unlink", "+scan", "+pexpire",
                  "+client|setname", "+client|id", "+client|tracking", "+subscribe")
# The in-process tier's invalidation connection subscribes to this channel.
CHANNEL_RULE = "&__redis__:invalidate"
# redis-py also sends these on connect and ignores their errors; a server that knows them
# logs a denial, so they are granted where the server accepts the rule (Redis 7.0 refuses
# rules for subcommands it does not have, and then never logs them either).
OPTIONAL_RULES = ("+client|setinfo", "+client|maint_notifications")


def create_user(admin: redis.Redis, name: str, password: str, key_pattern: str) -> list[str]:
    """A user limited to ``key_pattern`` and the commands above; the rules it got."""
    rules = list(REQUIRED_RULES)
    admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}",
                          f"~{key_pattern}", "resetchannels", CHANNEL_RULE, "-@all", *rules)
    for rule in OPTIONAL_RULES:
        try:
            admin.execute_command("ACL", "SETUSER", name, rule)
        except redis.ResponseError:
            continue
        rules.append(rule)
    return rules


@pytest.fixture
def restricted(namespace: str) -> Iterator[tuple[RedisServer, redis.Redis, str]]:
    with running() as server, server.client() as admin:
        rules = create_user(admin, "embmemo", "acl-pw", f"{namespace}:*")
        assert set(REQUIRED_RULES) <= set(rules)
        admin.acl_log_reset()
        yield server, admin, f"redis://embmemo:acl-pw@127.0.0.1:{server.port}/0"


async def test_every_method_works_as_a_least_privilege_user(
    restricted: tuple[RedisServer, redis.Redis, str], namespace: str
) -> None:
    _, admin, url = restricted
    outside = {
        "other:" + "a" * 64: b"other app",
        f"{namespace}2:" + "b" * 64: b"sibling namespace",
        f"{namespace}:v2:" + "c" * 64: b"nested namespace",
        f"{namespace}:config": b"not an entry",
    }
    for key, value in outside.items():
        admin.set(key, value)
    cache = EmbeddingsCache(name=namespace, url=url, ttl=60)
    sliding = EmbeddingsCache(name=namespace, url=url, ttl=0.8)
    strict = EmbeddingsCache(name=namespace, url=url, refresh_ttl_on_read=False)
    texts = [f"t{i}" for i in range(30)]
    items = [{"text": t, "model_name": MODEL, "embedding": vector_for(t)} for t in texts]

    # sync
    key = sliding.set("slides", MODEL, vector_for("slides"))
    time.sleep(0.25)  # due for its TTL again
    admin.pexpire(key, 300)
    assert sliding.get("slides", MODEL) is not None  # MGET, then PEXPIRE as this user
    assert admin.pttl(key) > 500
    key = cache.set("one", MODEL, vector_for("one"), metadata={"k": "v"}, ttl=30)
    assert cache.exists("one", MODEL) and cache.get_by_key(key) is not None
    assert cache.exists_by_key(key)
    keys = cache.mset(items)
    assert [e.text for e in cache.mget(texts, MODEL)] == texts  # type: ignore[union-attr]
    assert [e.text for e in strict.mget_by_keys(keys)] == texts  # type: ignore[union-attr]
    assert cache.mexists(texts, MODEL) == [True] * 30 and cache.mexists_by_keys(keys)[0]
    cache.drop("one", MODEL)
    cache.drop_by_key(keys[0])
    cache.mdrop(texts[1:5], MODEL)
    cache.mdrop_by_keys(keys[5:10])
    assert cache.clear() == 21  # and the sliding one

    # async
    key = await cache.aset("one", MODEL, vector_for("one"), ttl=30)
    assert await cache.aget("one", MODEL) is not None
    assert await cache.aget_by_key(key) is not None
    assert await cache.aexists("one", MODEL) and await cache.aexists_by_key(key)
    keys = await cache.amset(items)
    assert len([e for e in await cache.amget(texts, MODEL) if e]) == 30
    assert len([e for e in await cache.amget_by_keys(keys) if e]) == 30
    assert await cache.amexists(texts, MODEL) == [True] * 30
    assert await cache.amexists_by_keys(keys) == [True] * 30
    await cache.adrop("one", MODEL)
    await cache.adrop_by_key(keys[0])
    await cache.amdrop(texts[1:3], MODEL)
    await cache.amdrop_by_keys(keys[3:5])
    assert await cache.aclear() == 25

    # the decorator, sync and async
    model = Model()

    @cached_embedding(model=MODEL, cache=cache, on_error="raise")
    def embed(batch: list[str]) -> np.ndarray:
        return model.compute(list(batch))

    embed(["d1", "d2"])
    embed(["d1", "d2"])

    @cached_embedding(model=MODEL + "-a", cache=cache, on_error="raise")
    async def aembed(batch: list[str]) -> np.ndarray:
        return model.compute(list(batch))

    await aembed(["d1"])
    await aembed(["d1"])
    assert model.calls == 3
    embed.cache_clear()  # type: ignore[attr-defined]
    await cache.aclose()
    strict.close()

    assert admin.acl_log() == []  # nothing was denied: the grants above are sufficient
    for key, value in outside.items():
        assert admin.get(key) == value, key  # untouched by clear() and everything else


def test_the_restricted_user_cannot_reach_other_keys(
    restricted: tuple[RedisServer, redis.Redis, str], namespace: str
) -> None:
    _, admin, url = restricted
    admin.set("other:" + "a" * 64, b"other app")
    with redis.Redis.from_url(url) as user:
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.get("other:" + "a" * 64)
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.flushdb()
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.keys("*")
    # A cache named for a namespace the user may not touch fails closed, clearly.
    foreign = EmbeddingsCache(name="other", url=url)
    with pytest.raises(BackendError, match="NoPermission"):
        foreign.get("t", MODEL)
    with pytest.raises(BackendError) as caught:
        foreign.clear()  # SCAN is keyless; the UNLINK of another app's key is refused
    assert "acl-pw" not in str(caught.value)
    assert admin.get("other:" + "a" * 64) == b"other app"
    admin.acl_log_reset()


# -- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(tls_files: dict[str, str]) -> Iterator[TLSRedisServer]:
    binary = tls_binary(tls_files)
    if binary is None:  # a skip here; in CI (CI=true) conftest turns any skip into a failure
        pytest.skip("no redis-server build with TLS found (set EMBMEMO_TEST_REDIS_SERVER)")
    server = TLSRedisServer(binary, tls_files["cert"], tls_files["key"], tls_files["ca"])
    server.start()
    try:
        yield server
    finally:
        server.stop()


def tls_cache(url: str, namespace: str, **kwargs: object) -> EmbeddingsCache:
    settings = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0, **kwargs}
    return EmbeddingsCache(name=namespace, url=url, connection_kwargs=settings)


async def test_tls_with_the_right_ca_works(tls_server: TLSRedisServer,
                                           tls_files: dict[str, str], namespace: str) -> None:
    for host in ("127.0.0.1", "localhost"):
        cache = tls_cache(f"rediss://{host}:{tls_server.port}/0", namespace,
                          ssl_ca_certs=tls_files["ca"])
        cache.set(host, MODEL, vector_for(host))
        np.testing.assert_array_equal(cache.get(host, MODEL).embedding,  # type: ignore[union-attr]
                                      vector_for(host))
        assert (await cache.aget(host, MODEL)) is not None
        kwargs = cache.store.backend().redis().connection_pool.connection_kwargs  # type: ignore[attr-defined]
        assert kwargs["ssl_cert_reqs"] == "required" and kwargs["ssl_check_hostname"] is True
        await cache.aclose()


@pytest.mark.parametrize("case", ["wrong CA", "no CA (system store)"])
async def test_tls_verification_failures_are_clear_backend_errors(
    tls_server: TLSRedisServer, tls_files: dict[str, str], namespace: str, case: str
) -> None:
    extra = {"ssl_ca_certs": tls_files["foreign_ca"]} if case == "wrong CA" else {}
    cache = tls_cache(tls_server.url, namespace, **extra)
    with pytest.raises(BackendError, match=r"(?i)certificate verify failed"):
        cache.get("t", MODEL)
    with pytest.raises(BackendError, match=r"(?i)certificate verify failed"):
        await asyncio.wait_for(cache.aset("t", MODEL, [1.0]), 10)
    await cache.aclose()


@pytest.fixture(scope="module")
def tls_server_for_another_name(tls_files: dict[str, str],
                                tls_server: TLSRedisServer) -> Iterator[TLSRedisServer]:
    server = TLSRedisServer(tls_server.binary, tls_files["other_cert"], tls_files["other_key"],
                            tls_files["ca"], check_hostname=False)  # names other.example
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_tls_host_name_is_checked(tls_server: TLSRedisServer,
                                        tls_server_for_another_name: TLSRedisServer,
                                        tls_files: dict[str, str], namespace: str) -> None:
    # A valid certificate from the trusted CA, but for other.example: refused.
    cache = tls_cache(tls_server_for_another_name.url, namespace, ssl_ca_certs=tls_files["ca"])
    with pytest.raises(BackendError, match=r"(?i)hostname|IP address mismatch|match"):
        cache.get("t", MODEL)
    with pytest.raises(BackendError, match=r"(?i)hostname|IP address mismatch|match"):
        await asyncio.wait_for(cache.aget("t", MODEL), 10)
    await cache.aclose()
    # The right certificate reached through a name it does not list: refused as well.
    renamed = tls_cache(f"rediss://127.0.0.2:{tls_server.port}/0", namespace,
                        ssl_ca_certs=tls_files["ca"])
    with pytest.raises(BackendError):
        renamed.get("t", MODEL)
    # Opting out is explicit (and then works), never the default.
    opted_out = tls_cache(tls_server_for_another_name.url, namespace,
                          ssl_ca_certs=tls_files["ca"], ssl_check_hostname=False)
    assert opted_out.get("t", MODEL) is None
    unverified = tls_cache(tls_server.url, namespace, ssl_cert_reqs="none")
    assert unverified.get("t", MODEL) is None


def test_plain_connection_to_a_tls_port_fails_fast(tls_server: TLSRedisServer,
                                                   namespace: str) -> None:
    cache = EmbeddingsCache(name=namespace, url=f"redis://127.0.0.1:{tls_server.port}/0",
                            connection_kwargs={"socket_timeout": 0.5,
                                               "socket_connect_timeout": 0.5})
    with pytest.raises(BackendError):
        cache.get("t", MODEL)


# -- secrets -----------------------------------------------------------------------------

SECRET = "Pw-s3cr3t+/x"  # in a URL: quoted
SECRET_IN_URL = "Pw-s3cr3t%2B%2Fx"


def _decorated(cache: EmbeddingsCache):  # type: ignore[no-untyped-def]
    model = Model()

    @cached_embedding(model=MODEL, cache=cache)
    def embed(batch: list[str]) -> np.ndarray:
        return model.compute(list(batch))

    return embed


def _exception_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)


async def test_passwords_never_appear_in_reprs_logs_or_errors(
    caplog: pytest.LogCaptureFixture, namespace: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="embmemo")
    caplog.set_level(logging.DEBUG, logger="redis")
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with running(password=SECRET) as server:
        good = f"redis://default:{SECRET_IN_URL}@127.0.0.1:{server.port}/0"
        wrong = f"redis://default:{SECRET_IN_URL}wrong@127.0.0.1:{server.port}/0"
        down = f"redis://default:{SECRET_IN_URL}@127.0.0.1:{free_port()}/0"
        fast = {"socket_timeout": 0.2, "socket_connect_timeout": 0.2}
        caches = {
            "good": EmbeddingsCache(name=namespace, url=good, connection_kwargs=fast),
            "wrong": EmbeddingsCache(name=namespace, url=wrong, connection_kwargs=fast),
            "down": EmbeddingsCache(name=namespace, url=down, connection_kwargs=fast),
            "kwarg": EmbeddingsCache(name=namespace, url=f"redis://127.0.0.1:{server.port}/0",
                                     connection_kwargs={**fast, "password": SECRET + "x"}),
        }
        for cache in caches.values():
            texts += [repr(cache), str(cache), cache.url, repr(cache.store.backend()),
                      repr(cache.store.async_backend()), str(cache.stats())]
            cache.engine.breaker.cooldown = 60  # the decorator warns once, then the breaker
        assert caches["good"].set("t", MODEL, [1.0])
        for label, cache in caches.items():
            if label == "good":
                continue
            for call in (partial(cache.get, "t", MODEL), partial(cache.set, "t", MODEL, [1.0]),
                         cache.clear):
                with pytest.raises(BackendError) as caught:
                    call()
                texts.append(_exception_text(caught.value))
            with pytest.raises(BackendError) as caught:
                await cache.aget("t", MODEL)
            texts.append(_exception_text(caught.value))
            embed = _decorated(cache)
            np.testing.assert_array_equal(embed(["a"]), vector_for("a")[np.newaxis])
            strict = cached_embedding(model=MODEL, cache=cache, on_error="raise")(
                lambda text: [1.0])
            cache.engine.breaker.record_success()
            with pytest.raises(BackendError) as caught:
                strict("s")
            texts.append(_exception_text(caught.value))
        with paused(server):  # hung: a timeout error, through the same scrubbing
            with pytest.raises(BackendError) as caught:
                caches["good"].get("t", MODEL)
            texts.append(_exception_text(caught.value))
        for cache in caches.values():
            await cache.aclose()
    assert any("cache unavailable" in r.getMessage() for r in caplog.records)
    texts += [r.getMessage() for r in caplog.records]
    texts += [repr(r.args) for r in caplog.records]
    texts += [caplog.text]
    for text in texts:
        for secret in (SECRET, SECRET_IN_URL, "s3cr3t"):
            assert secret not in text, text


# -- stored data is data -----------------------------------------------------------------


def test_metadata_round_trips_as_plain_json_only(tmp_path: Path, namespace: str) -> None:
    hostile = {"__class__": "os.system", "__reduce__": ["os.system", ["echo owned"]],
               "py/object": "subprocess.Popen", "$type": "System.Diagnostics.Process",
               "!!python/object": None, "nested": {"__class__": {"__module__": "os"}}}
    with running() as server, server.client() as raw:
        for url in (server.url, f"sqlite:///{tmp_path}/meta.sqlite3", "memory://meta"):
            cache = EmbeddingsCache(name=namespace, url=url)
            key = cache.set("hostile", MODEL, [1.0], metadata=hostile)
            entry = cache.get("hostile", MODEL)
            assert entry is not None
            assert type(entry.metadata) is dict and entry.metadata == hostile
            assert type(entry.metadata["nested"]) is dict
            json.dumps(entry.metadata)  # plain JSON types all the way down
            if url.startswith("redis"):
                stored = raw.get(key)
                assert json.dumps(hostile, separators=(",", ":")).encode() in stored
            cache.clear()
