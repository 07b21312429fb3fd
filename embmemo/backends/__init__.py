"""Backend registry: URL scheme -> backend classes, imported only when used."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..config import url_scheme
from ..errors import ConfigError
from .base import AsyncBackend, Backend, Record

__all__ = [
    "AsyncBackend",
    "Backend",
    "Record",
    "describe_client",
    "open_async_backend",
    "open_backend",
    "wrap_client",
]

_REDIS_HINT = "redis-py: pip install 'redis>=5.0.1'"
_SQLITE_HINT = "the sqlite3 module, which this Python was built without"

# scheme -> (module, sync class, async class, what is missing if the import fails)
_REGISTRY: dict[str, tuple[str, str, str, str]] = {
    "memory": ("memory", "MemoryBackend", "AsyncMemoryBackend", ""),
    "redis": ("redis", "RedisBackend", "AsyncRedisBackend", _REDIS_HINT),
    "rediss": ("redis", "RedisBackend", "AsyncRedisBackend", _REDIS_HINT),
    "unix": ("redis", "RedisBackend", "AsyncRedisBackend", _REDIS_HINT),
    "redis+cluster": ("cluster", "ClusterBackend", "AsyncClusterBackend", _REDIS_HINT),
    "rediss+cluster": ("cluster", "ClusterBackend", "AsyncClusterBackend", _REDIS_HINT),
    "sqlite": ("sqlite", "SQLiteBackend", "AsyncSQLiteBackend", _SQLITE_HINT),
}


def _backend_class(url: str, asynchronous: bool) -> tuple[str, Any]:
    scheme = url_scheme(url)
    module_name, sync_name, async_name, requirement = _REGISTRY[scheme]
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ImportError as exc:
        raise ConfigError(f"the {scheme}:// backend needs {requirement} ({exc})") from None
    return scheme, getattr(module, async_name if asynchronous else sync_name)


def _build(
    url: str, asynchronous: bool, timeout: float, connection_kwargs: Mapping[str, Any] | None
) -> Any:
    scheme, cls = _backend_class(url, asynchronous)
    if scheme == "memory":
        parts = urlsplit(url)
        return cls(url, parts.netloc + parts.path)
    return cls(url, timeout=timeout, connection_kwargs=connection_kwargs)


def open_backend(
    url: str, *, timeout: float, connection_kwargs: Mapping[str, Any] | None = None
) -> Backend:
    """The synchronous backend for ``url``; never connects (the first call does)."""
    backend: Backend = _build(url, False, timeout, connection_kwargs)
    return backend


def open_async_backend(
    url: str, *, timeout: float, connection_kwargs: Mapping[str, Any] | None = None
) -> AsyncBackend:
    """The asynchronous backend for ``url``; never connects (the first call does)."""
    backend: AsyncBackend = _build(url, True, timeout, connection_kwargs)
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
    scheme = "redis+cluster" if _is_cluster_client(client) else "redis"
    _, cls = _backend_class(scheme + "://", asynchronous)
    return cls(url, client, timeout=timeout, connection_kwargs=connection_kwargs)
