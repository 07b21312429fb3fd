"""Moving caches: ``embmemo copy`` between backends, and ``import-redisvl`` from entries the
real ``redisvl`` package wrote, on real servers."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis
from redisvl.extensions.cache.embeddings import EmbeddingsCache as RedisVLCache

from embmemo import EmbeddingsCache
from embmemo.backends import Record
from embmemo.migrate import copy, import_redisvl

MODEL = "migrate-model"
COUNT = 10_000
CLI_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "embmemo", *args], capture_output=True,
                          text=True, env=CLI_ENV, timeout=300, check=False)


def vectors(count: int) -> np.ndarray:
    return np.random.default_rng(11).random((count, 16), dtype=np.float32)


def test_ten_thousand_entries_sqlite_to_redis_to_cluster_and_back(
    tmp_path: Path, redis_url: str, cluster_url: str, namespace: str
) -> None:
    texts = [f"document {i}" for i in range(COUNT)]
    data = vectors(COUNT)
    start = EmbeddingsCache(name=namespace, url=f"sqlite:///{tmp_path}/start.sqlite3")
    start.mset([{"text": t, "model_name": MODEL, "embedding": v,
                 "metadata": {"i": i} if i % 3 == 0 else None,
                 "ttl": 3600 if i % 2 else None} for i, (t, v) in enumerate(zip(texts, data))])
    hops = [start,
            EmbeddingsCache(name=namespace, url=redis_url),
            EmbeddingsCache(name=namespace + "c", url=cluster_url),
            EmbeddingsCache(name=namespace, url=f"sqlite:///{tmp_path}/back.sqlite3")]
    try:
        for source, dest in itertools.pairwise(hops):
            report = copy(source, dest)
            assert (report.copied, report.skipped, report.corrupt, report.expired) == (
                COUNT, 0, 0, 0)
        back = hops[-1]
        entries = back.mget(texts, MODEL)
        assert all(entry is not None for entry in entries)
        np.testing.assert_array_equal(np.stack([e.embedding for e in entries]), data)
        assert [e.metadata for e in entries[:6]] == [{"i": 0}, None, None, {"i": 3}, None,
                                                     None]
        left = back.store.backend().remaining_ttls([entries[1].key, entries[0].key])
        assert left[0] is not None and 3_500_000 < left[0] <= 3_600_000 and left[1] is None
        assert entries[1].ttl == 3600 and entries[0].ttl is None  # sliding keeps its TTL
        assert copy(hops[2], hops[3]).skipped == COUNT  # resumable: nothing twice
    finally:
        for cache in hops[1:3]:
            cache.clear()


def test_an_interrupted_copy_resumes_and_corrupt_records_stay_behind(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    source = EmbeddingsCache(name=namespace, url=f"sqlite:///{tmp_path}/s.sqlite3")
    keys = source.mset([{"text": f"t{i}", "model_name": MODEL, "embedding": v}
                        for i, v in enumerate(vectors(2500))])
    good = source.store.backend().get_many([keys[0]])[0]
    assert good is not None
    source.store.backend().set_many([Record(keys[1], good, None)])  # t0's record under t1
    dest = EmbeddingsCache(name=namespace, url=redis_url)
    dest.mset([{"text": f"t{i}", "model_name": MODEL, "embedding": v}  # a first, partial run
               for i, v in enumerate(vectors(2500)[:1200])])
    seen: list[tuple[int, int]] = []
    report = copy(source, dest, progress=lambda done, total: seen.append((done, total)))
    assert (report.copied, report.skipped, report.corrupt) == (1300, 1199, 1)
    assert seen[-1] == (2500, 2500) and len(seen) == 3
    dest.clear()


def test_copy_from_the_command_line(tmp_path: Path, redis_url: str, namespace: str) -> None:
    source = EmbeddingsCache(name=namespace, url=f"sqlite:///{tmp_path}/cli.sqlite3")
    source.mset([{"text": f"c{i}", "model_name": MODEL, "embedding": [1.0, float(i)]}
                 for i in range(50)])
    result = run_cli("--name", namespace, "copy", source.settings.url, redis_url)
    assert result.returncode == 0, result.stderr
    assert "copied 50, already there 0" in result.stdout
    dest = EmbeddingsCache(name=namespace, url=redis_url)
    assert dest.get("c7", MODEL) is not None
    assert "already there 50" in run_cli("--name", namespace, "copy", source.settings.url,
                                         redis_url).stdout
    dest.clear()


# -- from RedisVL -----------------------------------------------------------------------------


@pytest.fixture
def redisvl_entries(redis_url: str, namespace: str) -> tuple[str, list[str], np.ndarray]:
    """Entries the real redisvl package wrote, plus things in its namespace that are not."""
    name = namespace + "-rvl"
    cache = RedisVLCache(name=name, redis_url=redis_url, ttl=600)
    texts = [f"What is topic {i}?" for i in range(300)]
    data = vectors(300)
    cache.mset([{"content": t, "model_name": MODEL, "embedding": v.tolist(),
                 "metadata": {"n": i}} for i, (t, v) in enumerate(zip(texts, data))])
    forever = RedisVLCache(name=name, redis_url=redis_url)  # no TTL
    forever.set(content="no ttl here", model_name=MODEL, embedding=[1.0, 2.0])
    raw = redis.Redis.from_url(redis_url)
    raw.hset(f"{name}:{'a' * 64}", mapping={"model_name": MODEL, "embedding": "[1.0]"})
    raw.set(f"{name}:{'b' * 64}", b"not a hash")
    raw.close()
    return name, texts, data


def test_import_from_entries_redisvl_wrote(
    redisvl_entries: tuple[str, list[str], np.ndarray], redis_url: str, tmp_path: Path
) -> None:
    name, texts, data = redisvl_entries
    dest = EmbeddingsCache(name="imported", url=f"sqlite:///{tmp_path}/from-rvl.sqlite3")
    report = import_redisvl(redis_url, dest, name=name)
    assert (report.imported, report.skipped, report.without_text, report.invalid) == (
        301, 0, 1, 1)
    entries = dest.mget(contents=texts, model_name=MODEL)
    np.testing.assert_array_equal(np.stack([e.embedding for e in entries]), data)
    assert entries[5].metadata == {"n": 5} and entries[5]["content"] == texts[5]
    assert entries[5].ttl is not None and 590 < entries[5].ttl <= 600
    plain = dest.get(content="no ttl here", model_name=MODEL)
    assert plain is not None and plain.ttl is None
    assert import_redisvl(redis_url, dest, name=name).skipped == 301  # resumable


def test_import_redisvl_from_the_command_line(
    redisvl_entries: tuple[str, list[str], np.ndarray], redis_url: str, tmp_path: Path,
    namespace: str,
) -> None:
    name, texts, _ = redisvl_entries
    target = f"sqlite:///{tmp_path}/cli-rvl.sqlite3"
    result = run_cli("--name", name, "import-redisvl", "--from", redis_url, "--to", target,
                     "--dest-name", namespace)
    assert result.returncode == 0, result.stderr
    assert "imported 301" in result.stdout and "without their text (cannot be keyed) 1" in (
        result.stdout)
    assert EmbeddingsCache(name=namespace, url=target).get(texts[0], MODEL) is not None
