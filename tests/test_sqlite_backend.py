"""The sqlite:// backend: semantics, file safety, threads, fork, processes and async."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest

from embmemo import BackendError, ConfigError, EmbeddingsCache
from embmemo.backends import Record, open_async_backend, open_backend
from embmemo.backends import sqlite as sqlite_module
from embmemo.backends.base import AsyncAdapter, Refresh
from embmemo.backends.sqlite import SQLiteBackend

HEX = "0123456789abcdef" * 4


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _backend(tmp_path: Path) -> SQLiteBackend:
    return SQLiteBackend(_url(tmp_path / "cache.sqlite3"), timeout=1.0)


def _raw(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_round_trip_through_the_backend(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    backend.set_many([Record("a", b"1", None), Record("b", b"\x00" * 3200, 60_000)])
    backend.set_many([Record("a", b"one", None)])  # upsert
    values = backend.get_many(["b", "missing", "a", "a"])
    assert values == [b"\x00" * 3200, None, b"one", b"one"]
    assert backend.exists_many(["a", "missing", "b"]) == [True, False, True]
    assert backend.delete_many(["a", "missing", "a"]) == 1
    assert backend.get_many(["a", "b"]) == [None, b"\x00" * 3200]
    backend.close()


def test_batches_larger_than_one_statement_keep_key_order(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    backend.set_many([Record(f"k{i}", str(i).encode(), None) for i in range(0, 1300, 2)])
    keys = [f"k{i}" for i in reversed(range(1300))]
    expected = [str(i).encode() if i % 2 == 0 else None for i in reversed(range(1300))]
    assert backend.get_many(keys) == expected
    assert backend.exists_many(keys) == [value is not None for value in expected]
    assert backend.delete_many(keys) == 650


def test_round_trip_through_embeddings_cache(tmp_path: Path) -> None:
    with EmbeddingsCache(name="emb", ttl=60, url=_url(tmp_path / "c.sqlite3")) as cache:
        key = cache.set("hello", "m", [1.0, 2.0], metadata={"k": "v"}, ttl=30)
        entry = cache.get("hello", "m")
        assert entry is not None
        assert entry.key == key
        assert entry.ttl == 30
        assert entry.metadata == {"k": "v"}
        np.testing.assert_array_equal(entry.embedding, np.array([1.0, 2.0], dtype=np.float32))
        keys = cache.mset([{"text": t, "model_name": "m", "embedding": [float(i)]}
                           for i, t in enumerate(["x", "y", "z"])])
        got = cache.mget(["z", "nope", "x"], "m")
        assert [e.text if e else None for e in got] == ["z", None, "x"]
        assert got[0] is not None
        assert got[0].ttl == 60
        assert cache.exists("y", "m")
        assert cache.mexists_by_keys(keys) == [True] * 3
        cache.drop("y", "m")
        assert not cache.exists("y", "m")
        assert cache.get_by_key(keys[0]) is not None
        assert cache.clear() == 3
        assert cache.mget(["hello", "x", "z"], "m") == [None, None, None]


async def test_async_embeddings_cache_over_sqlite(tmp_path: Path) -> None:
    cache = EmbeddingsCache(name="emb", url=_url(tmp_path / "c.sqlite3"))
    await cache.aset("hi", "m", [0.5])
    entry = await cache.aget("hi", "m")
    assert entry is not None
    assert entry.text == "hi"
    assert await cache.aclear() == 1
    await cache.aclose()


def test_expired_rows_are_invisible_then_purged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _backend(tmp_path)
    backend.set_many([Record("short", b"s", 50), Record("forever", b"f", None)])
    time.sleep(0.1)
    assert backend.get_many(["short", "forever"]) == [None, b"f"]
    assert backend.exists_many(["short"]) == [False]
    assert backend.delete_many(["short"]) == 0
    assert _raw(backend_path(backend), "SELECT count(*) FROM entries") == [(2,)]  # not yet purged
    monkeypatch.setattr(sqlite_module, "_PURGE_EVERY_SECONDS", 0.0)
    backend.set_many([Record("new", b"n", None)])
    rows = _raw(backend_path(backend), "SELECT key FROM entries ORDER BY key")
    assert rows == [("forever",), ("new",)]


def backend_path(backend: SQLiteBackend) -> Path:
    return Path(backend.path)


def test_refresh_slides_only_live_entries_written_with_a_ttl(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    backend.set_many(
        [Record("ttl", b"t", 10_000), Record("none", b"n", None), Record("gone", b"g", 1)]
    )
    path = backend_path(backend)
    sql = "SELECT key, expires_at, ttl_ms FROM entries ORDER BY key"
    before = dict((k, e) for k, e, _ in _raw(path, sql))
    time.sleep(0.05)
    assert backend.get_many(["ttl", "none", "gone"]) == [b"t", b"n", None]
    assert dict((k, e) for k, e, _ in _raw(path, sql)) == before  # a read writes nothing
    backend.refresh_many([Refresh("ttl", 10_000), Refresh("none", 10_000),
                          Refresh("gone", 10_000), Refresh("never", 10_000)])
    after = {k: (e, t) for k, e, t in _raw(path, sql)}
    assert after["ttl"][0] > before["ttl"] + 0.04  # type: ignore[operator]
    assert after["ttl"][1] == 10_000
    assert after["none"] == (None, None)  # never gains a TTL
    assert after["gone"][0] == before["gone"]  # an expired entry is not revived


def test_clear_deletes_only_exact_entry_keys(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    kept = [f"emb:v2:{HEX}", f"emb2:{HEX}", "emb:config", f"emb:{HEX.upper()}",
            f"emb:{HEX[:-1]}", f"emb:{HEX}0", f"other:{HEX}", f"emb:{HEX[:-1]}g"]
    doomed = [f"emb:{HEX}", f"emb:{HEX[::-1]}"]
    backend.set_many([Record(k, os.urandom(8), None) for k in kept + doomed])
    backend.set_many([Record(f"emb:{'0' * 64}", b"expired", 1)])
    time.sleep(0.01)
    assert backend.clear("emb", "emb:" + "[0-9a-f]" * 64) == 2
    assert backend.exists_many(kept) == [True] * len(kept)
    assert backend.exists_many(doomed) == [False, False]
    assert _raw(backend_path(backend), "SELECT count(*) FROM entries") == [(len(kept),)]


def test_files_are_created_private_and_only_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "new" / "c.sqlite3"
    backend = open_backend(_url(path), timeout=1.0)
    assert isinstance(backend, SQLiteBackend)
    assert not path.parent.exists()  # construction touches nothing
    old_umask = os.umask(0o022)
    try:
        backend.exists_many(["x"])
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for name in ("c.sqlite3", "c.sqlite3-wal", "c.sqlite3-shm"):  # WAL sidecars follow the db
        assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600
    assert _raw(path, "PRAGMA journal_mode") == [("wal",)]
    backend.close()


def test_a_non_sqlite_file_is_reported_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    junk = b"not a database" * 100
    path.write_bytes(junk)
    backend = SQLiteBackend(_url(path), timeout=1.0)
    with pytest.raises(BackendError, match=r"is not an embmemo SQLite cache"):
        backend.get_many(["k"])
    with pytest.raises(BackendError, match=str(path)):
        backend.set_many([Record("k", b"v", None)])
    assert path.read_bytes() == junk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.sqlite3"]


def test_another_apps_database_and_a_newer_schema_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite3"
    _raw(other, "CREATE TABLE notes (body TEXT)")
    with pytest.raises(BackendError, match="holds other tables"):
        SQLiteBackend(_url(other), timeout=1.0).exists_many(["k"])
    assert _raw(other, "SELECT name FROM sqlite_master") == [("notes",)]

    backend = _backend(tmp_path)
    backend.set_many([Record("k", b"v", None)])
    backend.close()
    _raw(backend_path(backend), "PRAGMA user_version = 99")
    with pytest.raises(BackendError, match="newer"):
        backend.get_many(["k"])
    assert _raw(backend_path(backend), "SELECT value FROM entries") == [(b"v",)]


def test_an_unwritable_location_raises_backend_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    backend = SQLiteBackend(_url(blocker / "c.sqlite3"), timeout=1.0)
    with pytest.raises(BackendError, match=str(blocker)):
        backend.set_many([Record("k", b"v", None)])


def test_a_failed_batch_writes_nothing_and_leaves_no_transaction(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    bad = [Record(f"k{i}", b"v", None) for i in range(10)] + [Record("bad", None, None)]  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="write failed"):
        backend.set_many(bad)
    assert backend.exists_many([f"k{i}" for i in range(10)]) == [False] * 10
    assert backend._conn is not None
    assert not backend._conn.in_transaction
    backend.set_many([Record("k0", b"ok", None)])
    assert backend.get_many(["k0"]) == [b"ok"]


def test_settings(tmp_path: Path) -> None:
    url = _url(tmp_path / "c.sqlite3")
    with pytest.raises(ConfigError, match="socket_timeout"):
        SQLiteBackend(url, timeout=1.0, connection_kwargs={"socket_timeout": 1})
    with pytest.raises(ConfigError, match="busy_timeout"):
        SQLiteBackend(url, timeout=1.0, connection_kwargs={"busy_timeout": -1})
    with pytest.raises(ConfigError):
        SQLiteBackend("sqlite://", timeout=1.0)
    floored = SQLiteBackend(url, timeout=0.5, connection_kwargs={})
    floored.exists_many(["k"])
    assert floored._conn is not None
    assert floored._conn.execute("PRAGMA busy_timeout").fetchone() == (5000,)
    given = SQLiteBackend(url, timeout=0.5, connection_kwargs={"busy_timeout": 7.5})
    given.exists_many(["k"])
    assert given._conn is not None
    assert given._conn.execute("PRAGMA busy_timeout").fetchone() == (7500,)
    assert floored.url == url


def test_close_is_idempotent_and_the_backend_reopens(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    backend.close()
    backend.set_many([Record("k", b"v", None)])
    backend.close()
    backend.close()
    assert backend._conn is None
    assert backend.get_many(["k"]) == [b"v"]


def test_threads_share_one_backend(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for i in range(150):
                backend.set_many([Record(f"t{thread}-{i}", f"{thread}/{i}".encode(), 60_000)])
                assert backend.get_many([f"t{thread}-{i}", f"t{(thread + 1) % 8}-0"])[0] == (
                    f"{thread}/{i}".encode()
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    keys = [f"t{n}-{i}" for n in range(8) for i in range(150)]
    assert backend.get_many(keys) == [f"{k[1:].replace('-', '/')}".encode() for k in keys]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    backend.set_many([Record("parent", b"p", None)])
    parent_conn = backend._conn
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = False
        try:
            backend.set_many([Record("child", b"c", None)])
            ok = backend.get_many(["parent"]) == [b"p"] and backend._conn is not parent_conn
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert backend._conn is parent_conn
    assert backend.get_many(["child", "parent"]) == [b"c", b"p"]
    backend.set_many([Record("parent2", b"p2", None)])
    assert backend.exists_many(["parent2"]) == [True]


def write_entries(url: str, worker: int) -> int:
    """Process-pool worker: 200 entries through EmbeddingsCache, in small batches."""
    with EmbeddingsCache(name="mp", url=url) as cache:
        for start in range(0, 200, 10):
            cache.mset([{"text": f"w{worker}-{i}", "model_name": "m", "embedding": [float(i)]}
                        for i in range(start, start + 10)])
    return worker


def test_processes_write_one_file_concurrently(tmp_path: Path) -> None:
    url = _url(tmp_path / "shared.sqlite3")
    with ProcessPoolExecutor(4, mp_context=get_context("spawn")) as pool:
        assert sorted(pool.map(write_entries, [url] * 4, range(4))) == [0, 1, 2, 3]
    with EmbeddingsCache(name="mp", url=url) as cache:
        texts = [f"w{w}-{i}" for w in range(4) for i in range(200)]
        assert cache.mexists(texts, "m") == [True] * 800
        assert cache.clear() == 800


async def test_every_async_method(tmp_path: Path) -> None:
    backend = open_async_backend(_url(tmp_path / "c.sqlite3"), timeout=1.0)
    assert isinstance(backend, AsyncAdapter) and backend.in_thread
    assert backend.url == _url(tmp_path / "c.sqlite3")
    await backend.set_many([Record(f"emb:{HEX}", b"a", 60_000), Record("emb:config", b"c", None)])
    assert await backend.get_many([f"emb:{HEX}", "x", "emb:config"]) == [b"a", None, b"c"]
    assert await backend.exists_many(["emb:config", "x"]) == [True, False]
    assert await backend.delete_many(["emb:config", "x"]) == 1
    assert await backend.clear("emb", "") == 1
    assert await backend.get_many([f"emb:{HEX}"]) == [None]
    await backend.close()
    await backend.close()
    assert await backend.exists_many(["x"]) == [False]  # reopens after close
    await backend.close()
