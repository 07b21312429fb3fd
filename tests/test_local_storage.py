"""Bounded local storage (SQLite, memory://) and the in-process first tier."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from local_workers import DIM, MODEL, serve_changes, vector, write_under_limit
from reliability_support import reports_of

from embmemo import BackendError, ConfigError, EmbeddingsCache, cached_embedding
from embmemo.config import DEFAULT_MAX_SIZE, Settings, parse_size

SPAWN = multiprocessing.get_context("spawn")
ENTRY = DIM * 4 + 200  # about the bytes of one stored entry


def items(texts: list[str]) -> list[dict[str, Any]]:
    return [{"text": t, "model_name": MODEL, "embedding": vector(t)} for t in texts]


def present(cache: EmbeddingsCache, texts: list[str]) -> list[bool]:
    return [e is not None for e in cache.mget(texts, MODEL)]


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "size"), [
    ("0", 0), ("512", 512), ("512B", 512), ("1kb", 1000), ("1KiB", 1024), ("1.5GB", 1_500_000_000),
    (" 512 MiB ", 512 << 20), ("2gib", 2 << 30), ("1TiB", 1 << 40), (4096, 4096),
])
def test_sizes_read_as_bytes(text: object, size: int) -> None:
    assert parse_size(text, "max_size") == size


@pytest.mark.parametrize("bad", ["", "-1", "12 parsecs", "MiB", "1e9", "1..5GB", -5, 1.5, True,
                                 None, "0x10"])
def test_a_bad_size_is_a_config_error_naming_the_setting(bad: object) -> None:
    with pytest.raises(ConfigError, match="EMBMEMO_LOCAL_CACHE"):
        parse_size(bad, "EMBMEMO_LOCAL_CACHE")


def test_the_embedded_default_file_has_a_limit_an_explicit_url_has_none() -> None:
    assert Settings.resolve(env={}).max_size == DEFAULT_MAX_SIZE == 1 << 30
    assert Settings.resolve(url="sqlite:///tmp/x.sqlite3", env={}).max_size is None
    assert Settings.resolve(url="sqlite:///tmp/x.sqlite3?max_size=64MiB",
                            env={}).max_size == 64 << 20
    assert Settings.resolve(url="memory://x?max_size=1000", env={}).max_size == 1000
    env = {"EMBMEMO_MAX_SIZE": "2GiB"}
    assert Settings.resolve(url="sqlite:///tmp/x.sqlite3", env=env).max_size == 2 << 30
    assert Settings.resolve(env={"EMBMEMO_MAX_SIZE": "none"}).max_size is None
    # The argument wins over the URL, which wins over the environment.
    assert Settings.resolve(url="memory://x?max_size=1000", max_size="2KB",
                            env=env).max_size == 2000


@pytest.mark.parametrize(("kwargs", "env", "message"), [
    ({"url": "redis://localhost/0", "max_size": "1GiB"}, {}, "maxmemory"),
    ({"url": "redis://localhost/0"}, {"EMBMEMO_MAX_SIZE": "1GiB"}, "EMBMEMO_MAX_SIZE"),
    ({"url": "sqlite:///tmp/x.sqlite3?max_size=0"}, {}, "must be positive"),
    ({"url": "sqlite:///tmp/x.sqlite3?maxsize=1MiB"}, {}, "unknown option"),
    ({"url": "memory://x?max_size=lots"}, {}, "max_size"),
    ({"local_cache": "-1"}, {}, "local_cache"),
    ({}, {"EMBMEMO_LOCAL_CACHE": "a lot"}, "EMBMEMO_LOCAL_CACHE"),
])
def test_bad_limit_settings_are_config_errors(kwargs: dict[str, Any], env: dict[str, str],
                                              message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.resolve(env=env, **kwargs)


def test_a_local_cache_on_redis_cluster_is_refused_not_ignored(cluster_url: str) -> None:
    assert "Tiered" not in repr(EmbeddingsCache(url=cluster_url).store.backend())
    cache = EmbeddingsCache(url=cluster_url, local_cache="1MiB")
    with pytest.raises(ConfigError, match="local_cache"):
        cache.get("x", MODEL)


# -- size limits ------------------------------------------------------------------------------


def test_memory_evicts_least_recently_used_first() -> None:
    cache = EmbeddingsCache(name="lru", url=f"memory://lru-{os.getpid()}?max_size={20 * ENTRY}")
    first = [f"first {i}" for i in range(10)]
    second = [f"second {i}" for i in range(10)]
    cache.mset(items(first))
    cache.mset(items(second))
    cache.mget(first[:5], MODEL)  # used again: now more recent than all of `second`
    cache.mset(items([f"third {i}" for i in range(8)]))
    assert present(cache, first[:5]) == [True] * 5
    assert present(cache, first[5:]) == [False] * 5  # the least recently used went first
    assert sum(present(cache, second)) == 7  # and then only as many as needed
    size = cache.store.backend().storage_size()
    assert size.used <= size.limit == 20 * ENTRY
    cache.clear()
    assert cache.store.backend().storage_size().used == 0


def test_memory_limit_holds_with_four_threads_writing() -> None:
    cache = EmbeddingsCache(name="lru", url=f"memory://threads-{os.getpid()}?max_size={50 * ENTRY}")
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for batch in range(30):
                texts = [f"t{worker}-{batch}-{i}" for i in range(5)]
                cache.mset(items(texts))
                assert all(present(cache, texts))  # the newest are never the ones evicted
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert cache.store.backend().storage_size().used <= 50 * ENTRY
    cache.clear()


def test_sqlite_evicts_least_recently_used_and_stays_within_one_batch(tmp_path: Path) -> None:
    path = tmp_path / "limited.sqlite3"
    limit = 150 * ENTRY
    cache = EmbeddingsCache(name="lru", url=f"sqlite:///{path}?max_size={limit}", local_cache=0)
    conn = sqlite3.connect(path)

    def stored(texts: list[str]) -> list[bool]:  # looked at without touching the entries
        keys = [cache.key(t, MODEL) for t in texts]
        found = {k for (k,) in conn.execute(
            f"SELECT key FROM entries WHERE key IN ({','.join('?' * len(keys))})", keys)}
        return [k in found for k in keys]

    old = [f"old {i}" for i in range(60)]
    cache.mset(items(old))
    time.sleep(1.1)  # recency is kept in whole seconds
    cache.mget(old[:20], MODEL)  # used again: now more recent than old[20:]
    new: list[str] = []
    for batch in range(10):
        fresh = [f"new {batch}-{i}" for i in range(20)]
        cache.mset(items(fresh))
        new += fresh
        batch_bytes = sum(len(t) + ENTRY for t in fresh)
        assert os.path.getsize(path) <= limit + batch_bytes  # never more than one batch over
        if not all(stored(old[20:])):
            break
    assert not all(stored(old[20:])), "the limit never took effect"
    assert stored(old[:20]) == [True] * 20  # recently read: kept
    assert all(stored(new))  # only entries not used since were evicted
    size = cache.store.backend().storage_size()
    assert size.limit == limit and size.used <= limit
    conn.close()


def test_sqlite_limit_with_four_processes_loses_nothing_recent(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    # 1,600 entries written into room for about 480: a writer's own newest batch goes only
    # if the others write some 45 batches between its write and its read-back.
    limit = 600 * ENTRY
    url = f"sqlite:///{path}?max_size={limit}"
    results = dict(reports_of(write_under_limit, [(url, w, 40) for w in range(4)]))
    assert results == {w: [] for w in range(4)}  # no "database is locked", no lost write
    cache = EmbeddingsCache(name="limit", url=url, local_cache=0)
    assert cache.store.backend().storage_size().used <= limit
    texts = [f"w{w}-b{b}-{i}" for w in range(4) for b in range(40) for i in range(10)]
    kept = [(t, e) for t, e in zip(texts, cache.mget(texts, MODEL)) if e is not None]
    assert all(np.array_equal(e.embedding, vector(t)) for t, e in kept)
    assert 300 <= len(kept) <= 600  # evicted down to the limit, not far below it
    assert os.path.getsize(path) <= limit + 4 * 10 * ENTRY


def test_clear_gives_the_space_back_to_the_file_system(tmp_path: Path) -> None:
    path = tmp_path / "big.sqlite3"
    cache = EmbeddingsCache(name="big", url=f"sqlite:///{path}", local_cache=0)
    for batch in range(10):
        cache.mset(items([f"{batch}-{i}" for i in range(100)]))
    cache.close()
    full = os.path.getsize(path)
    assert full > 3_000_000
    cache.clear()
    assert os.path.getsize(path) < full / 20
    assert os.path.getsize(str(path) + "-wal") == 0


def test_a_file_of_the_previous_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    cache = EmbeddingsCache(name="v1", url=f"sqlite:///{path}", local_cache=0)
    cache.mset(items(["kept"]))
    cache.close()
    conn = sqlite3.connect(path, isolation_level=None)  # turn it back into a 0.2 file
    conn.execute("PRAGMA auto_vacuum = NONE")
    conn.execute("VACUUM")
    conn.execute("DROP INDEX entries_used_at")
    conn.execute("ALTER TABLE entries DROP COLUMN used_at")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    cache = EmbeddingsCache(name="v1", url=f"sqlite:///{path}?max_size=10MiB", local_cache=0)
    assert cache.get("kept", MODEL) is not None
    cache.mset(items(["new"]))
    cache.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (2,)
    assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
    # Both stamped: "new" when written, "kept" as a hit (with that write).
    assert conn.execute("SELECT count(*) FROM entries WHERE used_at > 0").fetchone() == (2,)
    conn.close()


def test_stats_shows_the_size_and_the_limit(tmp_path: Path) -> None:
    from test_cli import run_cli

    url = f"sqlite:///{tmp_path}/s.sqlite3?max_size=64MiB"
    EmbeddingsCache(name="s", url=url).mset(items(["a", "b"]))
    result = run_cli("--url", url, "--name", "s", "stats")
    assert result.returncode == 0, result.stderr
    assert "limit 64.0 MiB" in result.stdout, result.stdout


# -- the in-process tier ----------------------------------------------------------------------


def wait_local(cache: EmbeddingsCache, text: str) -> None:
    """Read until the tier serves ``text`` (its invalidation connection comes up in the
    background)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        before = cache.stats().local_hits
        cache.get(text, MODEL)
        if cache.stats().local_hits > before:
            return
        time.sleep(0.01)
    raise AssertionError("the in-process tier never served the entry")


@pytest.fixture(params=["redis", "sqlite"])
def tier_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tier.sqlite3"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def second_process(tier_url: str, namespace: str) -> Iterator[Callable[..., None]]:
    """Changes made by another process: each call returns once that process is done."""
    parent, child = SPAWN.Pipe()
    proc = SPAWN.Process(target=serve_changes, args=(tier_url, namespace, child))
    proc.start()

    def change(*request: Any) -> None:
        parent.send(request)
        assert parent.poll(30) and parent.recv() == "done"

    yield change
    parent.send(("stop",))
    proc.join(30)


def test_the_tier_sees_changes_made_by_another_process(
        tier_url: str, namespace: str, second_process: Callable[..., None]) -> None:
    cache = EmbeddingsCache(name=namespace, url=tier_url, local_cache="8MiB")
    second_process("set", "query", 1.0, None)
    wait_local(cache, "query")
    second_process("set", "query", 2.0, None)  # an overwrite
    entry = cache.get("query", MODEL)
    assert entry is not None and np.array_equal(entry.embedding, vector("query", 2.0))
    wait_local(cache, "query")
    second_process("drop", "query")
    assert cache.get("query", MODEL) is None
    second_process("set", "query", 3.0, None)
    second_process("set", "other", 1.0, None)
    wait_local(cache, "other")
    second_process("clear")
    assert cache.get("other", MODEL) is None
    assert cache.get("query", MODEL) is None
    second_process("set", "short", 1.0, 0.5)
    wait_local(cache, "short")
    time.sleep(0.6)
    assert cache.get("short", MODEL) is None  # expired: never served from the tier
    assert cache.stats().local_hits >= 4
    cache.clear()


def test_the_tier_follows_this_process_writes(tier_url: str, namespace: str) -> None:
    cache = EmbeddingsCache(name=namespace, url=tier_url, local_cache="8MiB")
    other = EmbeddingsCache(name=namespace, url=tier_url, local_cache="8MiB")
    cache.set("q", MODEL, vector("q"))
    wait_local(cache, "q")
    wait_local(other, "q")
    cache.set("q", MODEL, vector("q", 5.0))  # overwritten by the same cache object
    entry = cache.get("q", MODEL)
    assert entry is not None and np.array_equal(entry.embedding, vector("q", 5.0))
    other_entry = other.get("q", MODEL)  # and by another object of this process
    assert other_entry is not None and np.array_equal(other_entry.embedding, vector("q", 5.0))
    cache.drop("q", MODEL)
    assert cache.get("q", MODEL) is None and other.get("q", MODEL) is None
    cache.clear()


def test_a_mutated_result_never_changes_what_the_next_caller_gets(tier_url: str,
                                                                 namespace: str) -> None:
    cache = EmbeddingsCache(name=namespace, url=tier_url, local_cache="8MiB")
    cache.set("q", MODEL, vector("q"), metadata={"source": "a"})
    wait_local(cache, "q")
    first = cache.get("q", MODEL)
    assert first is not None
    with pytest.raises(ValueError, match="read-only"):
        first.embedding[0] = 42.0
    first["score"] = 0.5  # a field the caller adds stays with that caller's entry
    first.metadata["source"] = "changed"
    second = cache.get("q", MODEL)
    assert second is not None and "score" not in second
    assert second.metadata == {"source": "a"}
    assert np.array_equal(second.embedding, vector("q"))

    @cached_embedding(model=MODEL, cache=cache)
    def embed(texts: list[str]) -> np.ndarray:
        return np.stack([vector(t) for t in texts])

    embed(["q", "r"])
    wait_local(cache, "r")
    result = embed(["q", "r"])
    result[:] = 0  # the caller's own array
    assert np.array_equal(embed(["q", "r"]), np.stack([vector("q"), vector("r")]))
    assert embed.cache_info().local_hits >= 2
    cache.clear()


async def test_async_reads_use_a_coherent_tier_too(tier_url: str, namespace: str,
                                                   second_process: Callable[..., None]) -> None:
    cache = EmbeddingsCache(name=namespace, url=tier_url, local_cache="8MiB")
    second_process("set", "q", 1.0, None)
    deadline = time.monotonic() + 10
    while cache.stats().local_hits == 0 and time.monotonic() < deadline:
        assert (await cache.aget("q", MODEL)) is not None
        await asyncio.sleep(0.01)
    assert cache.stats().local_hits > 0
    second_process("set", "q", 4.0, None)
    entry = await cache.aget("q", MODEL)
    assert entry is not None and np.array_equal(entry.embedding, vector("q", 4.0))
    await cache.aclear()
    await cache.aclose()


def test_a_lost_invalidation_connection_turns_the_tier_off_until_it_is_back(
        redis_url: str, namespace: str) -> None:
    cache = EmbeddingsCache(name=namespace, url=redis_url, local_cache="8MiB")
    writer = EmbeddingsCache(name=namespace, url=redis_url, local_cache=0)
    writer.set("q", MODEL, vector("q"))
    wait_local(cache, "q")
    admin = redis.Redis.from_url(redis_url)
    killed = admin.client_kill_filter(_type="pubsub")  # every invalidation connection
    assert killed >= 1
    writer.set("q", MODEL, vector("q", 7.0))  # its news cannot arrive any more
    entry = cache.get("q", MODEL)
    assert entry is not None and np.array_equal(entry.embedding, vector("q", 7.0))
    wait_local(cache, "q")  # reconnected: the tier works again
    admin.flushdb()  # a server emptied under us
    # The news goes out in the same pass of the server's loop as FLUSHDB's reply, but may
    # leave microseconds after it; another process telling us would take longer than one
    # more round trip on the same connection.
    admin.ping()
    assert cache.get("q", MODEL) is None
    admin.close()


def test_a_forked_child_starts_with_an_empty_tier(tier_url: str, namespace: str) -> None:
    cache = EmbeddingsCache(name=namespace, url=tier_url, local_cache="8MiB")
    cache.set("q", MODEL, vector("q"))
    wait_local(cache, "q")
    fork = multiprocessing.get_context("fork")
    parent, child = fork.Pipe()

    def in_child() -> None:
        before = cache.stats().local_hits
        entry = cache.get("q", MODEL)
        ok = entry is not None and np.array_equal(entry.embedding, vector("q"))
        child.send((ok, cache.stats().local_hits - before))

    proc = fork.Process(target=in_child)
    proc.start()
    assert parent.poll(30)
    ok, local = parent.recv()
    proc.join(10)
    assert ok and local == 0  # read from the backend, not from the parent's copy
    wait_local(cache, "q")  # the parent's tier is untouched
    cache.clear()


def test_memory_needs_no_tier_and_local_cache_zero_turns_it_off(tmp_path: Path) -> None:
    assert "Tiered" not in repr(EmbeddingsCache(url="memory://x", local_cache="1MiB")
                                .store.backend())
    url = f"sqlite:///{tmp_path}/off.sqlite3"
    assert "Tiered" in repr(EmbeddingsCache(url=url).store.backend())
    assert "Tiered" not in repr(EmbeddingsCache(url=url, local_cache=0).store.backend())


def test_a_damaged_value_never_enters_the_tier(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/damaged.sqlite3"
    cache = EmbeddingsCache(name="d", url=url, local_cache="1MiB")
    cache.set("q", MODEL, vector("q"))
    key = cache.key("q", MODEL)
    conn = sqlite3.connect(tmp_path / "damaged.sqlite3", isolation_level=None)
    (value,) = conn.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
    conn.execute("UPDATE entries SET value = ? WHERE key = ?",
                 (value[:-1] + bytes([value[-1] ^ 1]), key))  # its CRC no longer checks out
    conn.close()
    for _ in range(3):
        assert cache.get("q", MODEL) is None
    info = cache.stats()
    assert info.corrupt == 3 and info.local_hits == 0


def test_a_user_without_the_tiers_grants_gets_one_warning_and_no_tier(
        namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    from reliability_support import running

    with running() as server, server.client() as admin:
        admin.execute_command("ACL", "SETUSER", "plain", "on", ">pw", f"~{namespace}:*",
                              "resetchannels", "-@all", "+set", "+mget", "+exists",
                              "+unlink", "+scan", "+pexpire", "+client|setname")
        admin.acl_log_reset()
        url = f"redis://plain:pw@127.0.0.1:{server.port}/0"
        cache = EmbeddingsCache(name=namespace, url=url, local_cache="1MiB")
        cache.set("q", MODEL, vector("q"))
        for _ in range(30):  # across several reconnection intervals' worth of reads
            entry = cache.get("q", MODEL)
            assert entry is not None and np.array_equal(entry.embedding, vector("q"))
            time.sleep(0.05)
        time.sleep(1.2)
        assert cache.get("q", MODEL) is not None
        assert cache.stats().local_hits == 0
        assert len(admin.acl_log()) <= 2  # asked once, not once a second
        warnings = [r for r in caplog.records if "refused invalidations" in r.getMessage()]
        assert len(warnings) == 1 and "local_cache=0" in warnings[0].getMessage()
        cache.close()


def test_a_silent_invalidation_connection_is_given_up(namespace: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from reliability_support import paused, running

    from embmemo.backends import tracking

    monkeypatch.setattr(tracking, "HEARTBEAT", 0.2)
    with running() as server:
        cache = EmbeddingsCache(name=namespace, url=server.url, local_cache="1MiB",
                                connection_kwargs={"socket_timeout": 0.3})
        cache.set("q", MODEL, vector("q"))
        wait_local(cache, "q")
        with paused(server):  # no PONG comes back: as if the network path had died
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                before = cache.stats().local_hits
                try:
                    cache.get("q", MODEL)
                except BackendError:  # the read went to the hung server
                    break
                assert cache.stats().local_hits > before
                time.sleep(0.05)
            else:
                raise AssertionError("the tier kept vouching for a silent connection")
        wait_local(cache, "q")  # reconnected once the server answers again
        cache.close()
