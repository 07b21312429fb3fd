"""What every Redis-family backend shares: client settings, secrets, error wrapping, the
per-event-loop async clients, and the Backend methods as plans (``redis_plans``) driven
by a backend's own ``send``.

A concrete backend (``redis.py``, ``cluster.py``) provides a router and a way to send one
batch of commands; ``SyncRedisFamily`` and ``AsyncRedisFamily`` turn those into the
``Backend`` and ``AsyncBackend`` methods.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Generic, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    ConnectionError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from ..errors import BackendError, ConfigError, MigratingError, PartialBackendError
from ..sansio import adrive, drive
from ..urls import redact_url
from ._limits import MAX_VALUE_BYTES, ReadChunker
from .base import Record, Refresh
from .redis_plans import (
    Command,
    PartialReadError,
    PartialWriteError,
    Plan,
    Router,
    ServerFeatures,
    delete_plan,
    exists_plan,
    lease_plan,
    read_plan,
    refresh_plan,
    scan_plan,
    server_plan,
    ttl_plan,
    write_plan,
)

T = TypeVar("T")
Client = TypeVar("Client")

_URL_CREDENTIALS = re.compile(r"(\w[\w+.-]*://[^:@/\s]*:)[^@\s]+@")

try:  # hiredis packs a command several times faster than redis-py's generic path
    import hiredis  # type: ignore[import-not-found, unused-ignore]

    pack_command: Callable[[tuple[Any, ...]], bytes] | None = hiredis.pack_command
except ImportError:  # pragma: no cover - hiredis is a dependency, but may be removed
    pack_command = None


def packed(connection: Any, batch: Sequence[tuple[Any, ...]]) -> list[bytes]:
    """A batch of commands as the bytes ``send_packed_command`` takes."""
    if pack_command is not None:
        return [b"".join(map(pack_command, batch))]
    return connection.pack_commands(batch)  # type: ignore[no-any-return]


def scrub(message: str, secrets: Sequence[str]) -> str:
    """Remove URL passwords and any known secret from an error message."""
    message = _URL_CREDENTIALS.sub(r"\1***@", message)
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message


def client_kwargs(timeout: float, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every client setting chosen explicitly; ``connection_kwargs`` overrides any of them."""
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        # One quick retry on a dropped connection (a restarted server leaves stale pooled
        # connections); timeouts are not retried so a hung server costs one timeout.
        "retry": ("retry", 1),
        "max_connections": 64,
        # A busy pool is normal under load: wait longer for a connection than for a reply.
        "pool_timeout": 5 * timeout,
        "health_check_interval": 0,
        "client_name": "embmemo",
    }
    kwargs.update(overrides or {})
    if kwargs.get("decode_responses"):
        raise ConfigError("connection_kwargs: decode_responses must be False (values are binary)")
    return kwargs


def resolve_retry(kwargs: dict[str, Any], retry_class: Any) -> None:
    """Turn the ("retry", n) placeholder into the client module's own Retry object."""
    spec = kwargs.get("retry")
    if isinstance(spec, tuple) and spec[:1] == ("retry",):
        kwargs["retry"] = retry_class(
            ExponentialBackoff(cap=0.05, base=0.005), spec[1],
            supported_errors=(redis.exceptions.ConnectionError,),
        )


def tls_defaults(url: str, kwargs: dict[str, Any]) -> None:
    """Verify the certificate and the host name on TLS, whatever redis-py's version defaults
    (redis-py 5 does not check the host name unless told to)."""
    if not url.lower().startswith("rediss"):  # rediss:// and rediss+cluster://
        return
    kwargs.setdefault("ssl_cert_reqs", "required")
    verifying = kwargs["ssl_cert_reqs"] not in (None, "none", ssl.CERT_NONE)
    kwargs.setdefault("ssl_check_hostname", verifying)


@contextmanager
def checked_out(pool: Any) -> Iterator[Any]:
    """A pooled connection; one that failed mid-batch is closed, never reused (replies
    may be in flight: they must not reach the next request on it)."""
    connection = pool.get_connection()
    try:
        yield connection
    except BaseException:
        connection.disconnect()
        raise
    finally:
        pool.release(connection)


@asynccontextmanager
async def checked_out_async(pool: Any) -> AsyncIterator[Any]:
    """``checked_out`` for asyncio pools (cancellation included)."""
    connection = await pool.get_connection()
    try:
        yield connection
    except BaseException:
        await connection.disconnect(nowait=True)
        raise
    finally:
        await pool.release(connection)


# If the server drops the connection (redis-py then closes it), the replies never read
# are that error.
def read_replies(connection: Any, count: int) -> list[Any]:
    """``count`` replies, errors as values."""
    replies: list[Any] = []
    while len(replies) < count:
        try:
            replies.append(connection.read_response())
        except ResponseError as exc:
            replies.append(exc)
        except ConnectionError as exc:
            return replies + [exc] * (count - len(replies))
    return replies


async def read_replies_async(connection: Any, count: int) -> list[Any]:
    """``read_replies`` for asyncio connections."""
    replies: list[Any] = []
    while len(replies) < count:
        try:
            replies.append(await connection.read_response())
        except ResponseError as exc:
            replies.append(exc)
        except ConnectionError as exc:
            return replies + [exc] * (count - len(replies))
    return replies


class RedisFamily:
    """Identity, secrets, limits and error wrapping of one Redis-family backend."""

    def __init__(self, url: str, kwargs: Mapping[str, Any],
                 secrets: Sequence[str | None]) -> None:
        self.url = redact_url(url)
        self.full_url = url
        """The URL as given, password included: never show it."""
        self.kwargs = dict(kwargs)
        self.secrets = [secret for secret in secrets if secret]
        """Passwords to scrub from every error message."""
        self.max_value_bytes = MAX_VALUE_BYTES
        self.read_chunker = ReadChunker()
        self.features = ServerFeatures()
        self.round_trips = 0
        """Batches sent so far: each is one network round trip (for ``embmemo bench``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @contextmanager
    def errors(self, operation: str) -> Iterator[None]:
        """Turn client errors into ``BackendError`` with every secret scrubbed: a
        ``PartialBackendError`` when part of a batch went through, a ``MigratingError``
        for a slot that stayed busy migrating."""
        try:
            yield
        except (RedisError, RedisClusterException, OSError) as exc:
            detail = scrub(f"{type(exc).__name__}: {exc}", self.secrets)
            message = f"{operation} on {self.url} failed: {detail}"
            if isinstance(exc, PartialReadError):
                raise PartialBackendError(message, exc.values, tuple(exc.failed)) from None
            if isinstance(exc, PartialWriteError):
                raise PartialBackendError(message) from None
            if isinstance(exc, TryAgainError):
                raise MigratingError(message) from None
            raise BackendError(message) from None


class SyncRedisFamily(RedisFamily):
    """``Backend`` methods as plans, sent by the subclass's ``router`` and ``send``."""

    def router(self) -> Router:
        raise NotImplementedError

    def send(self, commands: list[Command]) -> list[Any]:
        """Send one batch, then read every reply (errors as values)."""
        raise NotImplementedError

    def run(self, operation: str, plan: Callable[..., Plan[T]], *args: Any) -> T:
        """Run a plan over this backend's router and sender."""
        with self.errors(operation):
            return drive(plan(self.router(), *args), self.send)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return self.run("read", read_plan, keys, self.read_chunker) if keys else []

    def refresh_many(self, refreshes: Sequence[Refresh]) -> None:
        self.run("TTL refresh", refresh_plan, refreshes, self.features)

    def set_many(self, records: Sequence[Record]) -> None:
        self.run("write", write_plan, records, self.max_value_bytes)

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        return self.run("exists", exists_plan, keys)

    def delete_many(self, keys: Sequence[str]) -> int:
        return self.run("delete", delete_plan, keys)

    def remaining_ttls(self, keys: Sequence[str]) -> list[int | None]:
        return self.run("ttl", ttl_plan, keys)

    def clear(self, namespace: str, scan_pattern: str) -> int:
        return self.run("clear", scan_plan, scan_pattern, None)

    def scan_keys(self, namespace: str, scan_pattern: str) -> list[str]:
        found: list[bytes] = []
        self.run("scan", scan_plan, scan_pattern, found)
        return [key.decode() for key in found]

    def lease_many(self, keys: Sequence[str], ttl_ms: int) -> list[bool]:
        return self.run("lease", lease_plan, keys, ttl_ms)

    def release_many(self, keys: Sequence[str]) -> None:
        self.run("lease release", delete_plan, keys)

    def server_version(self) -> str:
        """The server's name and version (for ``embmemo info``)."""
        return self.run("hello", server_plan)


class AsyncRedisFamily(RedisFamily):
    """``AsyncBackend`` methods as the same plans, awaiting the subclass's ``send``."""

    async def router(self) -> Router:
        raise NotImplementedError

    async def send(self, commands: list[Command]) -> list[Any]:
        """Send one batch, then read every reply (errors as values)."""
        raise NotImplementedError

    async def run(self, operation: str, plan: Callable[..., Plan[T]], *args: Any) -> T:
        """Run a plan over this backend's router and sender."""
        with self.errors(operation):
            return await adrive(plan(await self.router(), *args), self.send)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return await self.run("read", read_plan, keys, self.read_chunker) if keys else []

    async def refresh_many(self, refreshes: Sequence[Refresh]) -> None:
        await self.run("TTL refresh", refresh_plan, refreshes, self.features)

    async def set_many(self, records: Sequence[Record]) -> None:
        await self.run("write", write_plan, records, self.max_value_bytes)

    async def exists_many(self, keys: Sequence[str]) -> list[bool]:
        return await self.run("exists", exists_plan, keys)

    async def delete_many(self, keys: Sequence[str]) -> int:
        return await self.run("delete", delete_plan, keys)

    async def remaining_ttls(self, keys: Sequence[str]) -> list[int | None]:
        return await self.run("ttl", ttl_plan, keys)

    async def clear(self, namespace: str, scan_pattern: str) -> int:
        return await self.run("clear", scan_plan, scan_pattern, None)

    async def scan_keys(self, namespace: str, scan_pattern: str) -> list[str]:
        found: list[bytes] = []
        await self.run("scan", scan_plan, scan_pattern, found)
        return [key.decode() for key in found]

    async def lease_many(self, keys: Sequence[str], ttl_ms: int) -> list[bool]:
        return await self.run("lease", lease_plan, keys, ttl_ms)

    async def release_many(self, keys: Sequence[str]) -> None:
        await self.run("lease release", delete_plan, keys)


class LoopClients(Generic[Client]):
    """One async client per event loop, kept for the loop's life.

    An asyncio client's connections belong to the loop that opened them, so each loop
    gets its own; alternating loops reuse theirs instead of reconnecting. A client is
    closed when its loop shuts down (``asyncio.run`` does that: the client is tied to an
    async generator the loop finalizes), and forgotten once its loop is closed or the
    process has forked.
    """

    def __init__(self, factory: Callable[[], Client],
                 closer: Callable[[Client], Awaitable[None]]) -> None:
        self._factory = factory
        self._closer = closer
        self._clients: dict[asyncio.AbstractEventLoop,
                            tuple[Client, AsyncGenerator[None, None]]] = {}
        self._pid = os.getpid()

    async def get(self) -> Client:
        """The running loop's client, made on first use."""
        loop = asyncio.get_running_loop()
        known = self._clients.get(loop)
        if known is not None and self._pid == os.getpid():
            return known[0]
        if self._pid != os.getpid():  # a forked child: the parent's sockets are not ours
            self._clients, self._pid = {}, os.getpid()
        for old in [old for old in self._clients if old.is_closed()]:
            del self._clients[old]
        client = self._factory()
        keeper = self._close_at_shutdown(client)
        self._clients[loop] = (client, keeper)
        await keeper.__anext__()  # the loop now finalizes it when it shuts down
        return client

    async def _close_at_shutdown(self, client: Client) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self._closer(client)

    async def close(self) -> None:
        """Close the running loop's client; clients of other loops close with their loops."""
        known = self._clients.pop(asyncio.get_running_loop(), None)
        if known is not None:
            await known[1].aclose()  # runs the closer once, and leaves nothing to finalize
