"""Redis storage: ``redis://``, ``rediss://`` (TLS), ``unix://``, or a client you pass in.

The operations are the Redis family's plans (``redis_plans``): a batch read is a few MGETs
sent together, one round trip for up to 8 MiB of replies, parsed one MGET at a time while
the server answers the next. This module adds what is particular to one server: every
command goes to it, and a batch goes out on one pooled connection, all commands written
before any reply is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.retry import Retry as SyncRetry

from ..errors import ConfigError
from ..urls import parse_redis_url
from .redis_common import (
    AsyncRedisFamily,
    LoopClients,
    RedisFamily,
    SyncRedisFamily,
    checked_out,
    checked_out_async,
    client_kwargs,
    packed,
    read_replies,
    read_replies_async,
    resolve_retry,
    tls_defaults,
)
from .redis_plans import Command
from .tracking import TrackingListener, listening


class ServerRouter:
    """Every command to the one server; a multi-key command takes a whole range."""

    def grouped(self, keys: Sequence[Any], start: int, stop: int,
                name: str) -> tuple[list[Sequence[int]], list[Command]]:
        return [range(start, stop)], [((name, *keys[start:stop]), None)]

    def per_key(self, rows: Sequence[tuple[Any, ...]]) -> list[Command]:
        return [(row, None) for row in rows]

    def scan_targets(self) -> list[Any]:
        return [None]


_ROUTER = ServerRouter()


def _check_binary_client(client: Any) -> None:
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {}) if pool is not None else {}
    if kwargs.get("decode_responses"):
        raise ConfigError(
            "the given Redis client decodes responses; embmemo stores binary values, "
            "so create it with decode_responses=False"
        )


class _Server(RedisFamily):
    """The settings of a standalone backend: from the URL, or from a given client (or the
    sync client an async backend copies)."""

    def __init__(self, url: str, client: Any, timeout: float,
                 connection_kwargs: Mapping[str, Any] | None, template: Any = None) -> None:
        kwargs = client_kwargs(timeout, connection_kwargs)
        secrets: list[str | None] = [kwargs.get("password")]
        client = client if client is not None else template
        if client is None:
            address = parse_redis_url(url)
            self.client_url = address.for_redis_py()
            secrets.append(address.password)
            tls_defaults(url, kwargs)
        else:
            _check_binary_client(client)
            self.client_url = ""
            secrets.append(client.connection_pool.connection_kwargs.get("password"))
        self._like = client
        super().__init__(url, kwargs, secrets)

    def coherence(self, prefix: str) -> TrackingListener:
        """What keeps an in-process tier in front of this server true to it."""
        return TrackingListener(self.invalidation_connection, prefix)

    def invalidation_connection(self) -> redis.Connection:
        """A new sync RESP2 connection made like this backend's (URL, or the given
        client's settings), for ``TrackingListener``."""
        if self._like is None:
            kwargs = self.pool_kwargs(SyncRetry)
            kwargs.pop("max_connections", None)
            kwargs.pop("timeout", None)
            pool = redis.ConnectionPool.from_url(self.client_url, **kwargs)
            connection_class, kwargs = pool.connection_class, dict(pool.connection_kwargs)
        else:
            pool = self._like.connection_pool
            connection_class = _SYNC_CONNECTIONS.get(pool.connection_class,
                                                     pool.connection_class)
            kwargs = {k: v for k, v in pool.connection_kwargs.items() if k != "retry"}
        kwargs.update(protocol=2, client_name="embmemo-invalidation")
        connection: redis.Connection = listening(connection_class)(**kwargs)
        return connection

    def pool_kwargs(self, retry_class: Any) -> dict[str, Any]:
        kwargs = dict(self.kwargs)
        resolve_retry(kwargs, retry_class)
        kwargs["timeout"] = kwargs.pop("pool_timeout")
        return kwargs


class RedisBackend(_Server, SyncRedisFamily):
    """Synchronous ``Backend`` over redis-py; a given client is used as is, never closed."""

    def __init__(
        self,
        url: str,
        client: redis.Redis | None = None,
        *,
        timeout: float = 1.0,
        connection_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(url, client, timeout, connection_kwargs)
        self._client = client
        self._owns_client = client is None

    def redis(self) -> redis.Redis:
        """The client, made on first use (redis-py's pools reconnect after a fork)."""
        if self._client is None:
            with self.errors("connect"):
                pool = redis.BlockingConnectionPool.from_url(
                    self.client_url, **self.pool_kwargs(SyncRetry))
            self._client = redis.Redis(connection_pool=pool)
        return self._client

    def router(self) -> ServerRouter:
        return _ROUTER

    def send(self, commands: list[Command]) -> list[Any]:
        self.round_trips += 1
        with checked_out(self.redis().connection_pool) as connection:
            connection.send_packed_command(packed(connection, [args for args, _ in commands]))
            return read_replies(connection, len(commands))

    def close(self) -> None:
        client, self._client = self._client, None if self._owns_client else self._client
        if client is not None and self._owns_client:
            client.close()
            # Idle connections only: a call another thread is making finishes normally
            # (its connection is closed when the pool is collected). Older redis-py
            # blocking pools take no argument and close everything.
            try:
                client.connection_pool.disconnect(inuse_connections=False)
            except TypeError:
                client.connection_pool.disconnect()


class AsyncRedisBackend(_Server, AsyncRedisFamily):
    """Asynchronous ``AsyncBackend`` over ``redis.asyncio``: one client per event loop
    (see ``LoopClients``); a given client is used as is, never closed.

    ``template``: a caller's sync client whose connection settings the async clients copy,
    for a cache given only a sync client (embmemo makes those clients, and closes them).
    """

    def __init__(
        self,
        url: str,
        client: aioredis.Redis | None = None,
        *,
        timeout: float = 1.0,
        connection_kwargs: Mapping[str, Any] | None = None,
        template: redis.Redis | None = None,
    ) -> None:
        super().__init__(url, client, timeout, connection_kwargs, template)
        self._given = client
        self._template = template
        self._clients: LoopClients[aioredis.Redis] = LoopClients(self._new_client, _close)

    def _new_client(self) -> aioredis.Redis:
        with self.errors("connect"):
            if self._template is None:
                pool = aioredis.BlockingConnectionPool.from_url(
                    self.client_url, **self.pool_kwargs(AsyncRetry))
            else:
                pool = _pool_like(self._template.connection_pool)
        return aioredis.Redis(connection_pool=pool)

    async def redis(self) -> aioredis.Redis:
        """The client of the running event loop."""
        return self._given if self._given is not None else await self._clients.get()

    async def router(self) -> ServerRouter:
        return _ROUTER

    async def send(self, commands: list[Command]) -> list[Any]:
        self.round_trips += 1
        async with checked_out_async((await self.redis()).connection_pool) as connection:
            await connection.send_packed_command(
                packed(connection, [args for args, _ in commands]))
            return await read_replies_async(connection, len(commands))

    async def close(self) -> None:
        await self._clients.close()


_ASYNC_CONNECTIONS = {
    redis.Connection: aioredis.Connection,
    redis.SSLConnection: aioredis.SSLConnection,
    redis.UnixDomainSocketConnection: aioredis.UnixDomainSocketConnection,
}


_SYNC_CONNECTIONS: dict[Any, Any] = {
    async_class: sync_class for sync_class, async_class in _ASYNC_CONNECTIONS.items()}


def _pool_like(pool: Any) -> aioredis.BlockingConnectionPool:
    """An asyncio pool connecting as a sync pool does (host, credentials, TLS, timeouts)."""
    connection_class = _ASYNC_CONNECTIONS.get(pool.connection_class)
    if connection_class is None:
        raise ConfigError(f"cannot make async connections like {pool.connection_class.__name__}"
                          "; pass async_redis_client= as well")
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k != "retry"}
    return aioredis.BlockingConnectionPool(
        connection_class=connection_class, max_connections=pool.max_connections, **kwargs)


async def _close(client: aioredis.Redis) -> None:
    try:
        await client.aclose()
        await client.connection_pool.disconnect()
    except RuntimeError:  # the loop it belonged to is gone; nothing left to close
        pass
