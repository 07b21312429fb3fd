"""Redis Cluster storage: ``redis+cluster://`` and ``rediss+cluster://`` (TLS), or a given client.

Entry keys hash to all 16384 slots, and a cluster refuses a multi-key command whose keys
live in different slots (CROSSSLOT). So the router splits a batch by slot: one MGET or
UNLINK per slot, one SET or EXISTS per key, each addressed to the primary that owns the
slot. Every node's share is written before any reply is read (the async client runs the
nodes concurrently), so a batch costs about one round trip, not one per slot or per node.
What a node redirects (MOVED, ASK, ...) is re-sent through redis-py's cluster pipeline,
which follows redirections and refreshes the slot map; ``TRYAGAIN`` (a slot migrating)
is re-sent with a backoff for up to ``MIGRATION_WAIT``. A node that does not answer
fails its own commands only: the plans return the other nodes' replies (a partial
result) and the slot map is read again, so a promoted replica takes over. Reads go to
replicas when the client was made to read from them.

The operations themselves are the Redis family's plans (``redis_plans``), the same as a
standalone server's; this module adds the router and the two ways of sending a batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator, Mapping, Sequence
from contextlib import ExitStack, suppress
from typing import Any, NamedTuple

import redis.asyncio.cluster as aiocluster
import redis.cluster as cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    RedisClusterException,
    RedisError,
    TimeoutError,
    TryAgainError,
)
from redis.retry import Retry as SyncRetry

from ..errors import ConfigError
from ..sansio import adrive, drive
from ..urls import parse_redis_url
from .redis_common import (
    AsyncRedisFamily,
    LoopClients,
    RedisFamily,
    SyncRedisFamily,
    checked_out,
    client_kwargs,
    packed,
    read_replies,
    read_replies_async,
    resolve_retry,
    tls_defaults,
)
from .redis_plans import Command

_REDIRECTED = (AskError, TryAgainError, ClusterDownError)  # AskError: MOVED too
_REROUTE = (*_REDIRECTED, ConnectionError)
MIGRATION_WAIT = 5.0
"""Seconds a command may keep getting TRYAGAIN (a slot moving with keys of the command on
both sides) before it is given up; then it fails without counting against the breaker."""
FIRST_RETRY = 0.01
REMAP_EVERY = 0.25
"""Seconds between reads of the slot map while a node fails to answer (a replica that
takes its place is found within this)."""


def still_moving(error: Any) -> Any:
    """redis-py's cluster pipeline gives up on a command redirected too often in a row
    ("TTL exhausted"): during a slot migration that is TRYAGAIN answered again and again,
    so it is one, and waited out like one."""
    if isinstance(error, ClusterError) and "TTL exhausted" in str(error):
        return TryAgainError(str(error))
    return error


class Resend(NamedTuple):
    """Send the commands at ``indexes`` again, through the cluster client, after ``pause``
    seconds; the reply is their replies (errors as values)."""

    pause: float
    indexes: list[int]


def resend_rounds(replies: list[Any], again: list[int],
                  first: float) -> Generator[Resend, list[Any], None]:
    """Send ``again`` once more, then what got ``TRYAGAIN`` again, pausing ``first``, then
    10 ms doubling to 200 ms, for at most ``MIGRATION_WAIT`` in all; ``replies`` takes
    each answer. A send that raises (a node down) fails its commands alone."""
    delay, waited = first, 0.0
    while again and waited <= MIGRATION_WAIT:
        try:
            answers: list[Any] | Exception = yield Resend(delay, again)
        except (RedisError, RedisClusterException) as exc:
            answers = exc
        for position, index in enumerate(again):
            replies[index] = still_moving(
                answers if isinstance(answers, Exception) else answers[position])
        again = [i for i in again if isinstance(replies[i], TryAgainError)]
        waited += delay
        delay = min(max(delay * 2, FIRST_RETRY), 0.2)


class ClusterRouter:
    """Commands to the primary serving their keys' hash slot; reads (``MGET``) to a
    replica when the client was made to read from replicas (``read_from_replicas`` or
    ``load_balancing_strategy``), chosen by redis-py's own balancing."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.replica_reads = bool(getattr(client, "read_from_replicas", False)
                                  or getattr(client, "load_balancing_strategy", None))

    def _owners(self, slots: Sequence[int]) -> list[Any]:
        """The primary serving each slot, read off redis-py's slot table (no lock per slot)."""
        manager = self.client.nodes_manager
        table, lookup = manager.slots_cache, manager.get_node_from_slot
        return [table[slot][0] if table.get(slot) else lookup(slot) for slot in slots]

    def _readers(self, slots: Sequence[int]) -> list[Any]:
        """A node to read each slot from: a replica or the primary, as redis-py balances."""
        lookup = self.client.nodes_manager.get_node_from_slot
        strategy = getattr(self.client, "load_balancing_strategy", None)
        if strategy is not None:
            return [lookup(slot, load_balancing_strategy=strategy) for slot in slots]
        return [lookup(slot, read_from_replicas=True) for slot in slots]

    def grouped(self, keys: Sequence[Any], start: int, stop: int,
                name: str) -> tuple[list[Sequence[int]], list[Command]]:
        groups: dict[int, list[int]] = {}
        keyslot = self.client.keyslot
        for index in range(start, stop):
            groups.setdefault(keyslot(keys[index]), []).append(index)
        nodes = (self._readers if name == "MGET" and self.replica_reads
                 else self._owners)(list(groups))
        commands = [((name, *[keys[i] for i in group]), node)
                    for group, node in zip(groups.values(), nodes, strict=True)]
        return list(groups.values()), commands

    def per_key(self, rows: Sequence[tuple[Any, ...]]) -> list[Command]:
        nodes = self._owners([self.client.keyslot(args[1]) for args in rows])
        return list(zip(rows, nodes, strict=True))

    def scan_targets(self) -> list[Any]:
        return list(self.client.get_primaries())


class _Cluster(RedisFamily):
    """Settings, secrets and the client of the sync and async cluster backends."""

    def __init__(
        self,
        url: str,
        client: Any = None,
        *,
        timeout: float = 1.0,
        connection_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        kwargs = client_kwargs(timeout, connection_kwargs)
        secrets: list[str | None] = [kwargs.get("password")]
        self._nodes: tuple[tuple[str, int], ...] = ()
        if client is None:
            address = parse_redis_url(url)
            self._nodes = address.nodes
            credentials = {"username": address.username, "password": address.password}
            kwargs = {**{k: v for k, v in credentials.items() if v is not None},
                      **({"ssl": True} if address.tls else {}), **kwargs}
            secrets.append(address.password)
            tls_defaults(url, kwargs)
        else:
            if client.get_encoder().decode_responses:
                raise ConfigError(
                    "the given RedisCluster client decodes responses; embmemo stores binary "
                    "values, so create it with decode_responses=False"
                )
            secrets.append(getattr(client, "nodes_manager", client).connection_kwargs.get(
                "password"))
        super().__init__(url, kwargs, secrets)
        self._owns_client = client is None

    def new_client(self, module: Any, retry_class: Any) -> Any:
        """A RedisCluster of ``module`` (sync or asyncio) from this backend's settings."""
        kwargs = dict(self.kwargs)
        resolve_retry(kwargs, retry_class)  # bounds the cluster client's own retries
        kwargs.pop("pool_timeout", None)  # node pools do not wait for a free connection
        nodes = [module.ClusterNode(host, port) for host, port in self._nodes]
        try:
            return module.RedisCluster(startup_nodes=nodes, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"connection_kwargs not accepted by RedisCluster: {exc}") from None


class ClusterBackend(_Cluster, SyncRedisFamily):
    """Synchronous ``Backend`` over ``redis.cluster.RedisCluster``; a given client is left open."""

    def __init__(self, url: str, client: Any = None, **settings: Any) -> None:
        super().__init__(url, client, **settings)
        self._client = client
        self._mapped_at = 0.0

    def router(self) -> ClusterRouter:
        if self._client is None:  # the sync client maps the cluster right away
            self._client = self.new_client(cluster, SyncRetry)
        return ClusterRouter(self._client)

    def send(self, commands: list[Command]) -> list[Any]:
        """Write every node's commands, then read every reply; redirected ones go again."""
        self.round_trips += 1
        by_node: dict[str, tuple[Any, list[int]]] = {}
        for index, (_, node) in enumerate(commands):
            by_node.setdefault(node.name, (node, []))[1].append(index)
        replies: list[Any] = [None] * len(commands)
        with ExitStack() as stack:
            sent: list[tuple[Any, list[int]]] = []
            for node, indices in by_node.values():
                pool = self._client.get_redis_connection(node).connection_pool
                try:
                    connection = stack.enter_context(checked_out(pool))
                    connection.send_packed_command(
                        packed(connection, [commands[i][0] for i in indices]))
                except ConnectionError as exc:  # the node is gone: rerouted below
                    self._node_failed(replies, indices, exc)
                    continue
                sent.append((connection, indices))
            for connection, indices in sent:
                try:
                    for index, reply in zip(indices, read_replies(connection, len(indices))):
                        replies[index] = reply
                except (ConnectionError, TimeoutError) as exc:  # died mid-reply: that node
                    connection.disconnect()  # alone, its commands rerouted below
                    self._node_failed(replies, indices, exc)
        again = [i for i, reply in enumerate(replies) if isinstance(reply, _REROUTE)]

        def resend(step: Resend) -> list[Any]:
            time.sleep(step.pause)  # 0 the first time: a redirection goes again at once
            pipe = self._client.pipeline()  # routed by key, following redirections
            for index in step.indexes:
                pipe.execute_command(*commands[index][0])
            return list(pipe.execute(raise_on_error=False))

        drive(resend_rounds(replies, again, 0.0), resend)
        return replies

    def _node_failed(self, replies: list[Any], indices: list[int], error: Exception) -> None:
        """A node did not answer: its commands hold the error (to be sent again through
        the cluster client), and the slot map is read again (at most every
        ``REMAP_EVERY``), so a replica promoted meanwhile takes the node's place."""
        for index in indices:
            replies[index] = error
        now = time.monotonic()
        if now - self._mapped_at >= REMAP_EVERY:
            self._mapped_at = now
            with suppress(RedisError, RedisClusterException):
                self._client.nodes_manager.initialize()

    def close(self) -> None:
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None


class AsyncClusterBackend(_Cluster, AsyncRedisFamily):
    """Asynchronous ``AsyncBackend`` over ``redis.asyncio.cluster.RedisCluster``: one client
    per event loop (see ``LoopClients``); a given client is used as is, never closed."""

    def __init__(self, url: str, client: Any = None, **settings: Any) -> None:
        super().__init__(url, client, **settings)
        self._given = client
        self._mapped_at = 0.0
        self._clients: LoopClients[Any] = LoopClients(
            lambda: self.new_client(aiocluster, AsyncRetry), _close)

    async def _cluster(self) -> Any:
        client = self._given if self._given is not None else await self._clients.get()
        return await client.initialize()  # the slot map; a no-op once known

    async def router(self) -> ClusterRouter:
        return ClusterRouter(await self._cluster())

    async def send(self, commands: list[Command]) -> list[Any]:
        """Every node's commands at once on its own connection, then what a node
        redirected (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) through the cluster pipeline. A node
        that does not answer fails its own commands only: redis-py's pipeline would close
        the whole client on it, failing the other nodes' replies in flight too."""
        self.round_trips += 1
        client = await self._cluster()
        by_node: dict[str, tuple[Any, list[int]]] = {}
        for index, (_, node) in enumerate(commands):
            by_node.setdefault(node.name, (node, []))[1].append(index)
        replies: list[Any] = [None] * len(commands)
        groups = list(by_node.values())
        results = await asyncio.gather(
            *(_direct(node, [commands[i][0] for i in indexes]) for node, indexes in groups),
            return_exceptions=True)
        for (_, indexes), result in zip(groups, results, strict=True):
            for position, index in enumerate(indexes):
                replies[index] = (result if isinstance(result, BaseException)
                                  else result[position])
        if any(isinstance(reply, (ConnectionError, TimeoutError)) for reply in replies):
            await self._remap(client)
        again = [i for i, reply in enumerate(replies) if isinstance(reply, _REDIRECTED)]

        async def resend(step: Resend) -> list[Any]:
            await asyncio.sleep(step.pause)
            return await _pipelined(client, [(commands[i][0], None) for i in step.indexes])

        await adrive(resend_rounds(replies, again, 0.0), resend)
        return replies

    async def _remap(self, client: Any) -> None:
        """Read the slot map again (at most every ``REMAP_EVERY``): a replica promoted in
        place of a node that stopped answering takes its slots."""
        now = time.monotonic()
        if now - self._mapped_at >= REMAP_EVERY:
            self._mapped_at = now
            with suppress(RedisError, RedisClusterException, OSError):
                await client.nodes_manager.initialize()

    async def close(self) -> None:
        await self._clients.close()


async def _direct(node: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """One node's commands on one of its connections: one write, then every reply."""
    connection = node.acquire_connection()
    try:
        await connection.send_packed_command(packed(connection, commands))
        replies = await read_replies_async(connection, len(commands))
        if any(isinstance(reply, ConnectionError) for reply in replies):
            await connection.disconnect()
        return replies
    except (ConnectionError, TimeoutError, OSError):
        await connection.disconnect()
        raise
    finally:
        node.release(connection)


async def _pipelined(client: Any, commands: Sequence[tuple[tuple[Any, ...], Any]]) -> list[Any]:
    """One cluster pipeline: each command to its node (None: routed by key), redirections
    followed; errors as values."""
    pipe = client.pipeline()
    for command, node in commands:
        if node is None:
            pipe.execute_command(*command)
        else:
            pipe.execute_command(*command, target_nodes=node)
    return list(await pipe.execute(raise_on_error=False))


async def _close(client: Any) -> None:
    with suppress(RuntimeError):  # the loop it belonged to is gone: nothing to close
        await client.aclose()
