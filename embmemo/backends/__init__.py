"""Backend registry: URL scheme -> backend classes, imported only when used."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..errors import ConfigError
from ..urls import scheme_of
from .base import AsyncAdapter, AsyncBackend, Backend, Record, Refresh, StorageSize

__all__ = [
    "AsyncBackend",
    "Backend",
    "Record",
    "Refresh",
    "StorageSize",
    "async_twin",
    "describe_client",
    "open_async_backend",
    "open_backend",
    "wrap_client",
]

_REDIS_HINT = "redis-py: pip install 'redis>=5.0.1'"
_SQLITE_HINT = "the sqlite3 module, which this Python was built without"


class _Entry(NamedTuple):
    module: str
    sync_class: str
    async_class: str | None
    """None: the sync class under ``AsyncAdapter``."""
    threaded: bool
    """For ``AsyncAdapter``: run calls in worker threads (they block on I/O or locks)."""
    requirement: str


_REGISTRY: dict[str, _Entry] = {
    "memory": _Entry("memory", "MemoryBackend", None, False, ""),
    "sqlite": _Entry("sqlite", "SQLiteBackend", None, True, _SQLITE_HINT),
    "redis": _Entry("redis", "RedisBackend", "AsyncRedisBackend", False, _REDIS_HINT),
    "rediss": _Entry("redis", "RedisBackend", "AsyncRedisBackend", False, _REDIS_HINT),
    "unix": _Entry("redis", "RedisBackend", "AsyncRedisBackend", False, _REDIS_HINT),
    "redis+cluster": _Entry("cluster", "ClusterBackend", "AsyncClusterBackend", False,
                            _REDIS_HINT),
    "rediss+cluster": _Entry("cluster", "ClusterBackend", "AsyncClusterBackend", False,
                             _REDIS_HINT),
}


def _module(scheme: str) -> tuple[_Entry, Any]:
    entry = _REGISTRY.get(scheme)
    if entry is None:
        raise ConfigError(f"no backend for the scheme {scheme!r}")
    try:
        return entry, importlib.import_module(f"{__name__}.{entry.module}")
    except ImportError as exc:
        raise ConfigError(f"the {scheme}:// backend needs {entry.requirement} ({exc})") from None


def _build(
    url: str, asynchronous: bool, timeout: float, connection_kwargs: Mapping[str, Any] | None,
    max_size: int | None,
) -> Any:
    scheme = scheme_of(url)
    entry, module = _module(scheme)
    if scheme == "memory":
        backend: Any = module.MemoryBackend(url, max_size)
    elif scheme == "sqlite":
        backend = module.SQLiteBackend(url, timeout=timeout, connection_kwargs=connection_kwargs,
                                       max_size=max_size)
    else:
        name = entry.async_class if asynchronous and entry.async_class else entry.sync_class
        backend = getattr(module, name)(url, timeout=timeout, connection_kwargs=connection_kwargs)
    if asynchronous and entry.async_class is None:
        return AsyncAdapter(backend, in_thread=entry.threaded)
    return backend


def open_backend(
    url: str, *, timeout: float, connection_kwargs: Mapping[str, Any] | None = None,
    max_size: int | None = None,
) -> Backend:
    """The synchronous backend for ``url``; never connects (the first call does).
    ``max_size``: the size limit of local storage (SQLite, memory)."""
    backend: Backend = _build(url, False, timeout, connection_kwargs, max_size)
    return backend


def open_async_backend(
    url: str, *, timeout: float, connection_kwargs: Mapping[str, Any] | None = None,
    max_size: int | None = None,
) -> AsyncBackend:
    """The asynchronous backend for ``url``; never connects (the first call does)."""
    backend: AsyncBackend = _build(url, True, timeout, connection_kwargs, max_size)
    return backend


def _is_cluster_client(client: Any) -> bool:
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.cluster import RedisCluster

    return isinstance(client, (RedisCluster, AsyncRedisCluster))


def describe_client(client: Any) -> str:
    """A URL naming the server of a given client (for display; holds no password)."""
    if _is_cluster_client(client):
        nodes = client.get_nodes() if hasattr(client, "get_nodes") else []
        hosts = ",".join(f"{n.host}:{n.port}" for n in nodes[:3]) or "given-client"
        return f"redis+cluster://{hosts}"
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {}) if pool is not None else {}
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"redis://{host}:{port}/{kwargs.get('db', 0)}"


def wrap_client(
    client: Any,
    asynchronous: bool,
    *,
    timeout: float,
    connection_kwargs: Mapping[str, Any] | None = None,
) -> Any:
    """A backend over a Redis or Redis Cluster client the caller created (and owns)."""
    url = describe_client(client)
    entry, module = _module("redis+cluster" if _is_cluster_client(client) else "redis")
    name = entry.async_class if asynchronous else entry.sync_class
    return getattr(module, name or entry.sync_class)(
        url, client, timeout=timeout, connection_kwargs=connection_kwargs)


def async_twin(client: Any, *, timeout: float,
               connection_kwargs: Mapping[str, Any] | None = None) -> AsyncBackend:
    """An async backend connecting like a caller's sync ``redis.Redis`` (RedisVL serves the
    async methods of a cache given only a sync client too); embmemo owns what it makes."""
    if _is_cluster_client(client):
        raise ConfigError("this cache was given only a sync RedisCluster client; pass "
                          "async_redis_client= (a redis.asyncio.cluster.RedisCluster) to "
                          "use the async methods")
    _, module = _module("redis")
    backend: AsyncBackend = module.AsyncRedisBackend(
        describe_client(client), template=client, timeout=timeout,
        connection_kwargs=connection_kwargs)
    return backend
