"""Redis Cluster storage: ``redis+cluster://`` and ``rediss+cluster://`` (TLS), or a given client.

Entry keys hash to all 16384 slots, and a cluster refuses a multi-key command whose keys
live in different slots (CROSSSLOT). So a batch is split by slot: one MGET (plus the TTL
refresh script), UNLINK, or per-key SET/EXISTS, each addressed to the primary owning the
slot. Every node's share is written before any reply is read (the async client runs the
nodes concurrently), so a batch costs about one round trip, not one per slot or per node.
Whatever a node redirects (MOVED, ASK, ...) is re-sent through redis-py's cluster
pipeline, which follows redirections and refreshes the slot map. Settings, chunking, the
refresh script and secret scrubbing are the standalone backend's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio.cluster as aiocluster
import redis.cluster as cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.retry import Retry as SyncRetry

from ..errors import BackendError, ConfigError
from ._limits import MAX_KEYS_PER_CHUNK, chunks, record_chunks
from .base import Record
from .redis import (
    _SCAN_COUNT,
    _UNLINK_BATCH,
    REFRESH_TTL_SCRIPT,
    REFRESH_TTL_SHA,
    _RedisBase,
    _retry,
    _scrub,
    client_kwargs,
)

Command = tuple[tuple[Any, ...], Any]
"""A command's arguments and the cluster node it goes to."""

_REROUTE = (AskError, TryAgainError, ClusterDownError, ConnectionError)  # AskError: MOVED too


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """Startup ``(host, port)`` pairs and credential/TLS settings; the query is ignored."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    settings: dict[str, Any] = {"ssl": True} if parts.scheme.lower().startswith("rediss") else {}
    if userinfo:
        user, has_password, password = userinfo.partition(":")
        if has_password:
            settings.update(username=unquote(user) or None, password=unquote(password))
        else:  # redis+cluster://secret@host: a bare password, as redact_url reads it
            settings["password"] = unquote(user)
    nodes = []
    for item in filter(None, (h.strip() for h in hosts.split(","))):
        bare = item.endswith("]") or ":" not in item  # no port: "host" or "[::1]"
        host, port = (item, "6379") if bare else item.rsplit(":", 1)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{parts.scheme}:// URL: bad port in {item!r}")
        nodes.append((host.strip("[]"), int(port)))
    if not nodes:
        raise ConfigError(f"{parts.scheme}:// URL needs at least one host:port")
    return nodes, settings


def _per_slot(client: Any, keys: Sequence[Any], name: str) -> tuple[list[list[int]], list[Command]]:
    """Input positions grouped by hash slot, and one ``name key...`` per group."""
    groups: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(client.keyslot(key), []).append(index)
    node = client.nodes_manager.get_node_from_slot
    commands = [((name, *(keys[i] for i in group)), node(slot)) for slot, group in groups.items()]
    return list(groups.values()), commands


def _read_commands(client: Any, keys: Sequence[str], refresh_ttl: bool) -> tuple[
    list[list[int]], list[Command]
]:
    """Per slot an MGET, then (same node, same batch) the TTL refresh of the same keys."""
    groups, commands = _per_slot(client, keys, "MGET")
    if refresh_ttl:
        commands += [(("EVALSHA", REFRESH_TTL_SHA, len(args) - 1, *args[1:]), node)
                     for args, node in commands]
    return groups, commands


def _per_key(client: Any, keys: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> list[Command]:
    node = client.nodes_manager.get_node_from_slot
    return [(args, node(client.keyslot(key))) for key, args in zip(keys, rows, strict=True)]


def _set_commands(client: Any, records: Sequence[Record]) -> list[Command]:
    rows = [("SET", key, value, *(("PX", ttl) if ttl is not None else ()))
            for key, value, ttl in records]
    return _per_key(client, [r.key for r in records], rows)


def _checked(replies: Sequence[Any]) -> Sequence[Any]:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _in_input_order(count: int, groups: list[list[int]], replies: Sequence[Any]) -> list[Any]:
    out: list[Any] = [None] * count
    for group, values in zip(groups, _checked(replies), strict=True):
        for index, value in zip(group, values, strict=True):
            out[index] = value
    return out


def _needs_script(replies: Sequence[Any]) -> bool:
    return any(isinstance(reply, NoScriptError) for reply in replies)


def _read_node(connection: Any, indices: Sequence[int], replies: list[Any]) -> None:
    """Read one node's replies; errors become replies (a broken connection: all the rest)."""
    for position, index in enumerate(indices):
        try:
            replies[index] = connection.read_response()
        except ResponseError as exc:
            replies[index] = exc
        except ConnectionError as exc:
            connection.disconnect()
            for rest in indices[position:]:
                replies[rest] = exc
            return


def _send(client: Any, commands: Sequence[Command]) -> list[Any]:
    """All commands, every node's written before any reply is read; replies in order."""
    by_node: dict[str, tuple[Any, list[int]]] = {}
    for index, (_, node) in enumerate(commands):
        by_node.setdefault(node.name, (node, []))[1].append(index)
    replies: list[Any] = [None] * len(commands)
    taken: list[tuple[Any, Any, list[int]]] = []
    try:
        for node, indices in by_node.values():
            pool = client.get_redis_connection(node).connection_pool
            try:
                connection = pool.get_connection()
            except ConnectionError as exc:  # the node is gone: rerouted below
                for index in indices:
                    replies[index] = exc
                continue
            taken.append((pool, connection, indices))
            connection.send_packed_command(
                connection.pack_commands([commands[i][0] for i in indices]))
        for _, connection, indices in taken:
            _read_node(connection, indices, replies)
    except BaseException:
        for _, connection, _ in taken:  # replies may be unread: never reuse these sockets
            connection.disconnect()
        raise
    finally:
        for pool, connection, _ in taken:
            pool.release(connection)
    retry = [i for i, reply in enumerate(replies) if isinstance(reply, _REROUTE)]
    if retry:  # routed by key this time, with redis-py's redirection handling
        pipe = client.pipeline()
        for index in retry:
            pipe.execute_command(*commands[index][0])
        for index, reply in zip(retry, pipe.execute(raise_on_error=False), strict=True):
            replies[index] = reply
    return replies


class _ClusterBase(_RedisBase):
    """Settings, secrets and error wrapping shared by the sync and async cluster backends."""

    def __init__(
        self, url: str, client: Any, timeout: float, connection_kwargs: Mapping[str, Any] | None
    ) -> None:
        nodes, settings = parse_cluster_url(url) if client is None else ([], {})
        super().__init__(url, None, client_kwargs(timeout, {**settings,
                                                            **(connection_kwargs or {})}))
        if client is not None:
            if client.get_encoder().decode_responses:
                raise ConfigError(
                    "the given RedisCluster client decodes responses; embmemo stores binary "
                    "values, so create it with decode_responses=False"
                )
            given = getattr(client, "nodes_manager", client).connection_kwargs
            self._secrets += [given["password"]] if given.get("password") else []
        self._nodes = nodes
        self._client = client
        self._owns_client = client is None

    @contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except (RedisError, RedisClusterException, OSError) as exc:
            detail = _scrub(f"{type(exc).__name__}: {exc}", self._secrets)
            raise BackendError(f"{operation} on {self.url} failed: {detail}") from None

    def _new_client(self, module: Any, retry_class: Any) -> Any:
        kwargs = dict(self._kwargs)
        _retry(kwargs, retry_class)  # bounds the cluster client's own retries
        kwargs.pop("pool_timeout", None)  # node pools do not block waiting for a connection
        nodes = [module.ClusterNode(host, port) for host, port in self._nodes]
        try:
            return module.RedisCluster(startup_nodes=nodes, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"connection_kwargs not accepted by RedisCluster: {exc}") from None


class ClusterBackend(_ClusterBase):
    """Synchronous ``Backend`` over ``redis.cluster.RedisCluster``."""

    def __init__(
        self,
        url: str,
        client: cluster.RedisCluster | None = None,
        *,
        timeout: float = 1.0,
        connection_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(url, client, timeout, connection_kwargs)

    def _cluster(self) -> Any:
        if self._client is None:
            with self._errors("connect"):  # the sync client maps the cluster right away
                self._client = self._new_client(cluster, SyncRetry)
        return self._client

    def get_many(self, keys: Sequence[str], refresh_ttl: bool) -> list[bytes | None]:
        client = self._cluster()
        out: list[bytes | None] = []
        with self._errors("read"):
            for chunk in chunks(keys, self._read_chunker.size()):
                groups, commands = _read_commands(client, chunk, refresh_ttl)
                replies = _send(client, commands)
                reads, refreshes = replies[:len(groups)], replies[len(groups):]
                if _needs_script(refreshes):  # a node that has not seen the script yet
                    client.script_load(REFRESH_TTL_SCRIPT)  # goes to every primary
                    refreshes = _send(client, commands[len(groups):])
                _checked(refreshes)
                values = _in_input_order(len(chunk), groups, reads)
                self._read_chunker.observe(values)
                out.extend(values)
        return out

    def set_many(self, records: Sequence[Record]) -> None:
        client = self._cluster()
        with self._errors("write"):
            for chunk in record_chunks(records, self.max_value_bytes):
                _checked(_send(client, _set_commands(client, chunk)))

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        client = self._cluster()
        out: list[bool] = []
        with self._errors("exists"):
            for chunk in chunks(keys, MAX_KEYS_PER_CHUNK):
                commands = _per_key(client, chunk, [("EXISTS", key) for key in chunk])
                out.extend(bool(n) for n in _checked(_send(client, commands)))
        return out

    def _unlink(self, client: Any, keys: Sequence[Any]) -> int:
        return sum(_checked(_send(client, _per_slot(client, keys, "UNLINK")[1])))

    def delete_many(self, keys: Sequence[str]) -> int:
        client = self._cluster()
        with self._errors("delete"):
            return sum(self._unlink(client, chunk) for chunk in chunks(keys, _UNLINK_BATCH))

    def clear(self, namespace: str, scan_pattern: str) -> int:
        client = self._cluster()
        deleted = 0
        batch: list[bytes] = []
        with self._errors("clear"):
            for key in client.scan_iter(match=scan_pattern, count=_SCAN_COUNT,
                                        target_nodes=client.PRIMARIES):
                batch.append(key)
                if len(batch) >= _UNLINK_BATCH:
                    deleted += self._unlink(client, batch)
                    batch = []
            if batch:
                deleted += self._unlink(client, batch)
        return deleted

    def close(self) -> None:
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None


class AsyncClusterBackend(_ClusterBase):
    """Asynchronous ``AsyncBackend`` over ``redis.asyncio.cluster.RedisCluster``.

    An owned client is bound to the event loop (and process) that created it; a call
    from another loop, or after a fork, gets a fresh client instead of a hung socket.
    """

    def __init__(
        self,
        url: str,
        client: aiocluster.RedisCluster | None = None,
        *,
        timeout: float = 1.0,
        connection_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(url, client, timeout, connection_kwargs)
        self._bound_to: tuple[int, asyncio.AbstractEventLoop] | None = None

    async def _cluster(self) -> Any:
        owner = (os.getpid(), asyncio.get_running_loop())
        with self._errors("connect"):
            if self._owns_client and (self._client is None or self._bound_to != owner):
                self._client = self._new_client(aiocluster, AsyncRetry)
                self._bound_to = owner
            return await self._client.initialize()  # the slot map; a no-op once known

    async def _send(self, client: Any, commands: Sequence[Command]) -> list[Any]:
        """The cluster pipeline runs the nodes' batches concurrently and follows redirections."""
        pipe = client.pipeline()
        for args, node in commands:
            pipe.execute_command(*args, target_nodes=node)
        return list(await pipe.execute(raise_on_error=False))

    async def get_many(self, keys: Sequence[str], refresh_ttl: bool) -> list[bytes | None]:
        client = await self._cluster()
        out: list[bytes | None] = []
        with self._errors("read"):
            for chunk in chunks(keys, self._read_chunker.size()):
                groups, commands = _read_commands(client, chunk, refresh_ttl)
                replies = await self._send(client, commands)
                reads, refreshes = replies[:len(groups)], replies[len(groups):]
                if _needs_script(refreshes):
                    await client.script_load(REFRESH_TTL_SCRIPT)
                    refreshes = await self._send(client, commands[len(groups):])
                _checked(refreshes)
                values = _in_input_order(len(chunk), groups, reads)
                self._read_chunker.observe(values)
                out.extend(values)
        return out

    async def set_many(self, records: Sequence[Record]) -> None:
        client = await self._cluster()
        with self._errors("write"):
            for chunk in record_chunks(records, self.max_value_bytes):
                _checked(await self._send(client, _set_commands(client, chunk)))

    async def exists_many(self, keys: Sequence[str]) -> list[bool]:
        client = await self._cluster()
        out: list[bool] = []
        with self._errors("exists"):
            for chunk in chunks(keys, MAX_KEYS_PER_CHUNK):
                commands = _per_key(client, chunk, [("EXISTS", key) for key in chunk])
                out.extend(bool(n) for n in _checked(await self._send(client, commands)))
        return out

    async def _unlink(self, client: Any, keys: Sequence[Any]) -> int:
        return sum(_checked(await self._send(client, _per_slot(client, keys, "UNLINK")[1])))

    async def delete_many(self, keys: Sequence[str]) -> int:
        client = await self._cluster()
        deleted = 0
        with self._errors("delete"):
            for chunk in chunks(keys, _UNLINK_BATCH):
                deleted += await self._unlink(client, chunk)
        return deleted

    async def clear(self, namespace: str, scan_pattern: str) -> int:
        client = await self._cluster()
        deleted = 0
        batch: list[bytes] = []
        with self._errors("clear"):
            async for key in client.scan_iter(match=scan_pattern, count=_SCAN_COUNT,
                                              target_nodes=client.PRIMARIES):
                batch.append(key)
                if len(batch) >= _UNLINK_BATCH:
                    deleted += await self._unlink(client, batch)
                    batch = []
            if batch:
                deleted += await self._unlink(client, batch)
        return deleted

    async def close(self) -> None:
        if self._client is not None and self._owns_client:
            with suppress(RuntimeError):  # the loop it belonged to is gone: nothing to close
                await self._client.aclose()
            self._client = None
