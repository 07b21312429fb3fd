"""Redis Cluster storage: ``redis+cluster://`` and ``rediss+cluster://`` (TLS), or a given client.

Entry keys hash to all 16384 slots, and a cluster refuses a multi-key command whose keys
live in different slots (CROSSSLOT). So a batch is split by slot: one MGET (or, when TTLs
slide, the read-and-refresh script) or UNLINK per slot, one SET or EXISTS per key, each
addressed to the primary that owns the slot. Every node's share is written before any
reply is read (the async client runs the nodes concurrently), so a batch costs about one
round trip, not one per slot or per node. What a node redirects (MOVED, ASK, ...) is
re-sent through redis-py's cluster pipeline, which follows redirections and refreshes
the slot map.

Each operation is written once, as a plan: a generator that yields command batches and
receives their replies; the sync and async backends differ only in how they send. The
settings, chunking, refresh script and secret scrubbing are the standalone backend's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar
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
from ._limits import MAX_KEYS_PER_CHUNK, ReadChunker, chunks, record_chunks
from .base import Record
from .redis import (
    _SCAN_COUNT,
    _UNLINK_BATCH,
    READ_AND_REFRESH_SCRIPT,
    READ_AND_REFRESH_SHA,
    _RedisBase,
    _retry,
    _scrub,
    client_kwargs,
)

T = TypeVar("T")
Command = tuple[tuple[Any, ...], Any]
"""A command's arguments and the cluster node it goes to."""
Plan = Generator[list[Command], list[Any], T]
"""An operation: yields command batches, receives their replies (errors as values)."""

try:  # hiredis packs a command several times faster than redis-py's generic path
    import hiredis  # type: ignore[import-not-found, unused-ignore]

    _pack: Callable[[tuple[Any, ...]], bytes] | None = hiredis.pack_command
except ImportError:  # pragma: no cover - hiredis is optional
    _pack = None

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


# -- plans: pure, no I/O ------------------------------------------------------------------

def _owners(client: Any, slots: Iterable[int]) -> list[Any]:
    """The primary serving each slot, read off redis-py's slot table (no lock per slot)."""
    table, lookup = client.nodes_manager.slots_cache, client.nodes_manager.get_node_from_slot
    return [table[slot][0] if table.get(slot) else lookup(slot) for slot in slots]


def _per_slot(client: Any, keys: Sequence[Any], name: str) -> tuple[list[list[int]], list[Command]]:
    """Input positions grouped by hash slot, and one ``name key...`` per group."""
    groups: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(client.keyslot(key), []).append(index)
    commands = [((name, *[keys[i] for i in group]), node)
                for group, node in zip(groups.values(), _owners(client, groups), strict=True)]
    return list(groups.values()), commands


def _per_key(client: Any, rows: Sequence[tuple[Any, ...]]) -> list[Command]:
    """Single-key commands (the key is the second argument), each to its slot's primary."""
    nodes = _owners(client, [client.keyslot(args[1]) for args in rows])
    return list(zip(rows, nodes, strict=True))


def _checked(replies: Sequence[Any]) -> Sequence[Any]:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _read_plan(client: Any, keys: Sequence[str], refresh: bool, chunker: ReadChunker) -> Plan[
    list[bytes | None]
]:
    out: list[bytes | None] = [None] * len(keys)
    start = 0
    while start < len(keys):
        chunk = keys[start:start + chunker.size()]
        groups, reads = _per_slot(client, chunk, "MGET")
        if refresh:  # the same keys, read and refreshed by the script (one call per slot)
            reads = [(("EVALSHA", READ_AND_REFRESH_SHA, len(args) - 1, *args[1:]), node)
                     for args, node in reads]
        replies = yield reads
        if any(isinstance(reply, NoScriptError) for reply in replies):
            load = ("SCRIPT", "LOAD", READ_AND_REFRESH_SCRIPT)  # a node new to the script
            _checked((yield [(load, node) for node in client.get_primaries()]))
            replies = yield reads
        for group, values in zip(groups, _checked(replies), strict=True):
            for index, value in zip(group, values, strict=True):
                out[start + index] = value
        chunker.observe(out[start:start + len(chunk)])
        start += len(chunk)
    return out


def _write_plan(client: Any, records: Sequence[Record], max_value_bytes: int) -> Plan[None]:
    for chunk in record_chunks(records, max_value_bytes):  # refuses oversize values first
        rows = [("SET", key, value, *(("PX", ttl) if ttl is not None else ()))
                for key, value, ttl in chunk]
        _checked((yield _per_key(client, rows)))


def _exists_plan(client: Any, keys: Sequence[str]) -> Plan[list[bool]]:
    out: list[bool] = []
    for chunk in chunks(keys, MAX_KEYS_PER_CHUNK):
        out += [bool(n) for n in _checked((yield _per_key(client, [("EXISTS", k) for k in chunk])))]
    return out


def _delete_plan(client: Any, keys: Sequence[Any]) -> Plan[int]:
    deleted = 0
    for chunk in chunks(keys, _UNLINK_BATCH):
        deleted += sum(_checked((yield _per_slot(client, chunk, "UNLINK")[1])))
    return deleted


def _scan_plan(client: Any, scan_pattern: str, found: list[Any] | None) -> Plan[int]:
    """SCAN MATCH on every primary at once, round after round; each round's keys are
    UNLINKed, or collected into ``found`` when it is given."""
    deleted = 0
    cursors = [(node, 0) for node in client.get_primaries()]
    while cursors:
        replies = yield [(("SCAN", cursor, "MATCH", scan_pattern, "COUNT", _SCAN_COUNT), node)
                         for node, cursor in cursors]
        nodes = [node for node, _ in cursors]
        cursors = [(node, int(cursor)) for node, (cursor, _) in
                   zip(nodes, _checked(replies), strict=True) if int(cursor)]
        keys = [key for _, keys in replies for key in keys]
        if found is None:
            deleted += yield from _delete_plan(client, keys)
        else:
            found.extend(keys)
    return deleted


# -- sending --------------------------------------------------------------------------------

def _read_node(connection: Any, indices: Sequence[int], replies: list[Any]) -> None:
    """One node's replies; errors become replies (a broken connection: all the rest)."""
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
    """Write every node's commands, then read every reply; redirected ones go again."""
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
            batch = [commands[i][0] for i in indices]
            connection.send_packed_command(
                [b"".join(map(_pack, batch))] if _pack else connection.pack_commands(batch))
        for _, connection, indices in taken:
            _read_node(connection, indices, replies)
    except BaseException:
        for _, connection, _ in taken:  # replies may be unread: never reuse these sockets
            connection.disconnect()
        raise
    finally:
        for pool, connection, _ in taken:
            pool.release(connection)
    again = [i for i, reply in enumerate(replies) if isinstance(reply, _REROUTE)]
    if again:  # routed by key this time, following redirections
        pipe = client.pipeline()
        for index in again:
            pipe.execute_command(*commands[index][0])
        for index, reply in zip(again, pipe.execute(raise_on_error=False), strict=True):
            replies[index] = reply
    return replies


class _ClusterBase(_RedisBase):
    """Settings, secrets and error wrapping shared by the sync and async cluster backends."""

    def __init__(
        self,
        url: str,
        client: Any = None,
        *,
        timeout: float = 1.0,
        connection_kwargs: Mapping[str, Any] | None = None,
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
        self._bound_to: tuple[int, asyncio.AbstractEventLoop] | None = None  # async only

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
        kwargs.pop("pool_timeout", None)  # node pools do not wait for a free connection
        nodes = [module.ClusterNode(host, port) for host, port in self._nodes]
        try:
            return module.RedisCluster(startup_nodes=nodes, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"connection_kwargs not accepted by RedisCluster: {exc}") from None


class ClusterBackend(_ClusterBase):
    """Synchronous ``Backend`` over ``redis.cluster.RedisCluster``; a given client is left open."""

    def _run(self, operation: str, make_plan: Callable[..., Plan[T]], *args: Any) -> T:
        with self._errors(operation):
            if self._client is None:  # the sync client maps the cluster right away
                self._client = self._new_client(cluster, SyncRetry)
            plan = make_plan(self._client, *args)
            try:
                commands = next(plan)
                while True:
                    commands = plan.send(_send(self._client, commands))
            except StopIteration as done:
                result: T = done.value
                return result

    def get_many(self, keys: Sequence[str], refresh_ttl: bool) -> list[bytes | None]:
        return self._run("read", _read_plan, keys, refresh_ttl, self._read_chunker)

    def set_many(self, records: Sequence[Record]) -> None:
        self._run("write", _write_plan, records, self.max_value_bytes)

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        return self._run("exists", _exists_plan, keys)

    def delete_many(self, keys: Sequence[str]) -> int:
        return self._run("delete", _delete_plan, keys)

    def clear(self, namespace: str, scan_pattern: str) -> int:
        return self._run("clear", _scan_plan, scan_pattern, None)

    def scan_keys(self, namespace: str, scan_pattern: str) -> list[str]:
        found: list[bytes] = []
        self._run("scan", _scan_plan, scan_pattern, found)
        return [key.decode() for key in found]

    def close(self) -> None:
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None


class AsyncClusterBackend(_ClusterBase):
    """Asynchronous ``AsyncBackend`` over ``redis.asyncio.cluster.RedisCluster``.

    An owned client is bound to the event loop (and process) that created it; a call
    from another loop, or after a fork, gets a fresh client instead of a hung socket.
    A given client is the caller's: used as is, never closed.
    """

    async def _run(self, operation: str, make_plan: Callable[..., Plan[T]], *args: Any) -> T:
        owner = (os.getpid(), asyncio.get_running_loop())
        with self._errors(operation):
            if self._owns_client and (self._client is None or self._bound_to != owner):
                self._client = self._new_client(aiocluster, AsyncRetry)
                self._bound_to = owner
            client = await self._client.initialize()  # the slot map; a no-op once known
            plan = make_plan(client, *args)
            try:
                commands = next(plan)
                while True:  # the cluster pipeline runs the nodes concurrently
                    pipe = client.pipeline()
                    for command, node in commands:
                        pipe.execute_command(*command, target_nodes=node)
                    commands = plan.send(list(await pipe.execute(raise_on_error=False)))
            except StopIteration as done:
                result: T = done.value
                return result

    async def get_many(self, keys: Sequence[str], refresh_ttl: bool) -> list[bytes | None]:
        return await self._run("read", _read_plan, keys, refresh_ttl, self._read_chunker)

    async def set_many(self, records: Sequence[Record]) -> None:
        await self._run("write", _write_plan, records, self.max_value_bytes)

    async def exists_many(self, keys: Sequence[str]) -> list[bool]:
        return await self._run("exists", _exists_plan, keys)

    async def delete_many(self, keys: Sequence[str]) -> int:
        return await self._run("delete", _delete_plan, keys)

    async def clear(self, namespace: str, scan_pattern: str) -> int:
        return await self._run("clear", _scan_plan, scan_pattern, None)

    async def scan_keys(self, namespace: str, scan_pattern: str) -> list[str]:
        found: list[bytes] = []
        await self._run("scan", _scan_plan, scan_pattern, found)
        return [key.decode() for key in found]

    async def close(self) -> None:
        if self._client is not None and self._owns_client:
            with suppress(RuntimeError):  # the loop it belonged to is gone: nothing to close
                await self._client.aclose()
            self._client = None
