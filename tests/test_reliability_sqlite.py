"""Issue 6, SQLite under load and faults: many processes, a killed writer, a broken disk."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import reliability_workers as workers
from reliability_support import Model, elapsed, reports_of, vector_for

from embmemo import BackendError, EmbeddingsCache, cached_embedding

MODEL = "sqlite-rel"
SPAWN = multiprocessing.get_context("spawn")


def test_eight_processes_share_one_file_without_locking_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.sqlite3"
    count, rounds = 8, 15
    results = dict(reports_of(workers.share_one_file,
                              [(url, w, count, rounds) for w in range(count)], timeout=60))
    assert sorted(results) == list(range(count))
    assert all(errors == [] for errors in results.values()), results
    cache = EmbeddingsCache(name="procs", url=url)
    texts = [f"w{w}-b{b}-{i}" for w in range(count) for b in range(rounds) for i in range(20)]
    entries = cache.mget(texts, workers.MODEL)
    assert sum(e is not None for e in entries) == len(texts)  # no entry lost
    for text, entry in zip(texts, entries):
        assert entry is not None and np.array_equal(entry.embedding, workers.vector(text))
    cache.close()


def test_processes_creating_a_new_file_together_all_succeed(tmp_path: Path) -> None:
    # Regression: two failure modes when several processes open a brand-new file at once:
    # "database is locked" (a deadlock switching to WAL, which SQLite does not wait out)
    # and "not an embmemo SQLite cache (it holds other tables)" (the header read in three
    # snapshots while another process committed the schema in between).
    fork = multiprocessing.get_context("fork")
    problems: list[str] = []
    for attempt in range(12):
        url = f"sqlite:///{tmp_path}/new-{attempt}.sqlite3"
        barrier, out = fork.Barrier(8), fork.Queue()
        procs = [fork.Process(target=workers.open_new_file_together, args=(url, barrier, out))
                 for _ in range(8)]
        for proc in procs:
            proc.start()
        try:
            problems += [p for p in (out.get(timeout=60) for _ in procs) if p]
        finally:
            for proc in procs:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
    assert problems == []


def test_a_writer_killed_mid_batch_leaves_whole_batches_only(tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite3"
    url = f"sqlite:///{path}"
    batch_size = 3000
    rng = random.Random(11)
    for _ in range(2):  # kill it twice, at different moments
        started = SPAWN.Event()
        proc = SPAWN.Process(target=workers.write_batches_forever,
                             args=(url, batch_size, started))
        proc.start()
        try:
            assert started.wait(60), "the writer never committed a batch"
            time.sleep(rng.uniform(0.05, 0.4))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(10)
        assert proc.exitcode == -signal.SIGKILL
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        metadata_batches = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    cache = EmbeddingsCache(name="killed", url=url)
    complete = 0
    for batch in range(10_000):
        present = cache.mexists([f"batch {batch} item {i}" for i in range(batch_size)],
                                workers.MODEL)
        if not any(present):
            break
        assert all(present), f"batch {batch} is partly there: {sum(present)}/{batch_size}"
        entry = cache.get(f"batch {batch} item {batch_size - 1}", workers.MODEL)
        assert entry is not None and entry.metadata == {"batch": batch}
        complete += 1
    assert complete >= 1 and metadata_batches == complete * batch_size
    cache.set("after the crash", MODEL, [1.0])  # the file is writable again right away
    assert cache.get("after the crash", MODEL) is not None
    cache.close()


# -- a broken disk -------------------------------------------------------------------------


def decorated(cache: EmbeddingsCache, model: Model):  # type: ignore[no-untyped-def]
    @cached_embedding(model=MODEL, cache=cache)
    def embed(texts: list[str]) -> np.ndarray:
        return model.compute(list(texts))

    return embed


def assert_fails_open_and_direct_api_raises(cache: EmbeddingsCache, match: str) -> None:
    model = Model()
    embed = decorated(cache, model)
    for i in range(5):
        texts = [f"t{i}", "same"]
        np.testing.assert_array_equal(embed(texts), np.stack([vector_for(t) for t in texts]))
    assert embed.cache_info().errors > 0  # type: ignore[attr-defined]
    for call in (lambda: cache.set("x", MODEL, [1.0]),
                 lambda: cache.mset([{"text": "y", "model_name": MODEL, "embedding": [2.0]}])):
        spent, error = elapsed(call)
        assert isinstance(error, BackendError), error
        assert str(cache.settings.url.removeprefix("sqlite:///")) in str(error)
        assert __import__("re").search(match, str(error)), str(error)
        assert spent < 10


def test_an_uncreatable_file_fails_open(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file where the cache directory should be")
    cache = EmbeddingsCache(url=f"sqlite:///{blocker}/cache.sqlite3")
    assert_fails_open_and_direct_api_raises(cache, "open failed")
    with pytest.raises(BackendError):
        cache.get("x", MODEL)


def test_a_full_disk_fails_open(tmp_path: Path) -> None:
    cache = EmbeddingsCache(url=f"sqlite:///{tmp_path}/full.sqlite3")
    cache.set("before", MODEL, vector_for("before"))
    backend = cache.store.backend()
    with backend._lock:  # type: ignore[attr-defined]
        conn = backend._connection()  # type: ignore[attr-defined]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")  # no room for one more page
    big = [{"text": f"big {i}", "model_name": MODEL, "embedding": np.ones(2048)}
           for i in range(50)]
    with pytest.raises(BackendError, match="full"):
        cache.mset(big)
    assert cache.mexists([f"big {i}" for i in range(50)], MODEL) == [False] * 50
    model = Model()
    embed = decorated(cache, model)
    texts = [f"huge text {i}" * 50 for i in range(40)]
    np.testing.assert_array_equal(embed(texts), np.stack([vector_for(t) for t in texts]))
    assert embed.cache_info().errors > 0  # type: ignore[attr-defined]
    assert cache.get("before", MODEL) is not None  # reads still work on a full disk
    cache.close()


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable, even for root (where chmod is not enough)."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        path.parent.chmod(0o555)
        try:
            yield
        finally:
            path.parent.chmod(0o755)
            path.chmod(0o644)
        return
    subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True, capture_output=True)


def test_a_read_only_file_fails_open(tmp_path: Path) -> None:
    path = tmp_path / "ro.sqlite3"
    writer = EmbeddingsCache(url=f"sqlite:///{path}")
    writer.set("stored", MODEL, vector_for("stored"))
    writer.set("expiring", MODEL, vector_for("expiring"), ttl=3600)
    writer.close()
    with read_only(path):
        cache = EmbeddingsCache(url=f"sqlite:///{path}")
        # Reads still work, even of entries whose TTL a read would slide (best effort).
        entries = cache.mget(["stored", "expiring"], MODEL)
        assert [e is not None for e in entries] == [True, True]
        np.testing.assert_array_equal(entries[1].embedding, vector_for("expiring"))
        assert_fails_open_and_direct_api_raises(cache, "(?i)read-?only|permitted|denied")
        cache.close()
