"""Redis storage: ``redis://``, ``rediss://`` (TLS), ``unix://``, or a client you pass in.

Reads are one MGET per chunk; when hits' TTLs slide, one script per chunk instead reads
the values and re-applies, server-side, the TTL each record was written with, so the
refresh costs no extra round trip. Chunks go out on one connection, sent ahead of the
reply being read (``READS_IN_FLIGHT``), so the server works on the next ones while the
client parses the current one; the pending replies stay within the 1 MiB read budget
together. Only SET, MGET, EXISTS, UNLINK, SCAN and EVALSHA/SCRIPT LOAD are sent (the
script calls MGET and PEXPIRE).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import ssl
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry as SyncRetry

from .. import codec
from ..config import redact_url
from ..errors import BackendError, ConfigError
from ._limits import (
    MAX_KEYS_PER_CHUNK,
    MAX_READ_CHUNK_BYTES,
    MAX_VALUE_BYTES,
    ReadChunker,
    chunks,
    record_chunks,
)
from .base import Record

_UNLINK_BATCH = 500
_SCAN_COUNT = 1000
READS_IN_FLIGHT = 3
"""Read chunks sent ahead of the reply being parsed, counting it: the server works on the
next ones meanwhile (a read of 1,000 entries took a quarter less with 2 than with 1, and
about a sixth less again with 3, no less with 4). Each chunk gets an equal share of the
reply budget."""

# KEYS: one read chunk. Returns what MGET returns (nil for a miss and for a key that is
# not a string), and gives each hit written with a TTL that TTL again: the little-endian
# uint64 (ms) at codec.TTL_OFFSET of the record header. Reading and refreshing in one
# script costs the server a third less than MGET followed by a script that reads each
# TTL again with GETRANGE. Out-of-range numbers (a damaged value) are left alone.
READ_AND_REFRESH_SCRIPT = f"""
local values = redis.call('MGET', unpack(KEYS))
for i = 1, #values do
  local value = values[i]
  if value and #value >= {codec.TTL_OFFSET + 8} then
    local lo, hi = struct.unpack('<I4I4', value, {codec.TTL_OFFSET + 1})
    local ttl = hi * 4294967296 + lo
    if ttl > 0 and ttl <= {codec.MAX_TTL_MS} then redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end
return values
"""
READ_AND_REFRESH_SHA = hashlib.sha1(READ_AND_REFRESH_SCRIPT.encode()).hexdigest()  # noqa: S324 (Redis' id)

_URL_CREDENTIALS = re.compile(r"(\w[\w+.-]*://[^:@/\s]*:)[^@\s]+@")


def _scrub(message: str, secrets: Sequence[str]) -> str:
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


def _retry(kwargs: dict[str, Any], retry_class: Any) -> None:
    """Turn the ("retry", n) placeholder into the client module's own Retry object."""
    spec = kwargs.get("retry")
    if isinstance(spec, tuple) and spec[:1] == ("retry",):
        kwargs["retry"] = retry_class(
            ExponentialBackoff(cap=0.05, base=0.005), spec[1],
            supported_errors=(redis.exceptions.ConnectionError,),
        )


def _tls_defaults(url: str, kwargs: dict[str, Any]) -> None:
    """Verify the certificate and the host name on TLS, whatever redis-py's version defaults
    (redis-py 5 does not check the host name unless told to)."""
    if not urlsplit(url).scheme.lower().startswith("rediss"):  # rediss:// and rediss+cluster://
        return
    kwargs.setdefault("ssl_cert_reqs", "required")
    verifying = kwargs["ssl_cert_reqs"] not in (None, "none", ssl.CERT_NONE)
    kwargs.setdefault("ssl_check_hostname", verifying)


def _dropped_mid_reply(exc: redis.exceptions.ConnectionError) -> bool:
    """Whether a read failed because the server closed an established connection (as it
    does when a reply passes its client-output-buffer-limit), not for want of one."""
    if isinstance(exc, (redis.exceptions.AuthenticationError,
                        redis.exceptions.AuthorizationError,
                        redis.exceptions.BusyLoadingError,
                        redis.exceptions.MaxConnectionsError)):
        return False
    message = str(exc)
    return "connecting to" not in message and "No connection available" not in message


class _Window:
    """The chunks of one batch read, cut as they are sent (so each is sized by the replies
    read so far), and the chunks sent whose replies are still to be read."""

    def __init__(self, keys: Sequence[str], chunk_size: Callable[[], int],
                 refresh_ttl: bool) -> None:
        self.keys = keys
        self.chunk_size = chunk_size
        self.refresh_ttl = refresh_ttl
        self.sent = 0
        self.pending: deque[Sequence[str]] = deque()

    def requests(self, conn: Any) -> Iterator[Any]:
        """Packed commands for ``conn``: the next chunks, up to READS_IN_FLIGHT pending."""
        while len(self.pending) < READS_IN_FLIGHT and self.sent < len(self.keys):
            chunk = self.keys[self.sent:self.sent + self.chunk_size()]
            self.sent += len(chunk)
            self.pending.append(chunk)
            yield conn.pack_command(*_read_command(chunk, self.refresh_ttl))


def _read_command(chunk: Sequence[str], refresh_ttl: bool) -> tuple[Any, ...]:
    if refresh_ttl:
        return ("EVALSHA", READ_AND_REFRESH_SHA, len(chunk), *chunk)
    return ("MGET", *chunk)


def _queue_sets(pipe: Any, records: Sequence[Record]) -> None:
    """SET ... PX for each record, queued as raw commands: ``pipe.set()`` re-checks and
    rebuilds its arguments per call, which costs a quarter of a pipelined write."""
    queue = pipe.execute_command
    for key, value, ttl_ms in records:
        if ttl_ms is None:
            queue("SET", key, value)
        else:
            queue("SET", key, value, "PX", ttl_ms)


def _check_binary_client(client: Any) -> None:
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {}) if pool is not None else {}
    if kwargs.get("decode_responses"):
        raise ConfigError(
            "the given Redis client decodes responses; embmemo stores binary values, "
            "so create it with decode_responses=False"
        )


class _RedisBase:
    """What the sync and async backends share: identity, secrets, chunking, error wrapping."""

    def __init__(self, url: str, client: Any, kwargs: Mapping[str, Any]) -> None:
        if client is not None:
            _check_binary_client(client)
        self.url = redact_url(url)
        self._url = url
        self._kwargs = dict(kwargs)
        if client is None:
            _tls_defaults(url, self._kwargs)
        pool_kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
        self._secrets = [
            s for s in (self._kwargs.get("password"), pool_kwargs.get("password")) if s
        ]
        self.max_value_bytes = MAX_VALUE_BYTES
        self._read_chunker = ReadChunker(budget=MAX_READ_CHUNK_BYTES // READS_IN_FLIGHT)

    @contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except (redis.exceptions.RedisError, OSError) as exc:
            detail = _scrub(f"{type(exc).__name__}: {exc}", self._secrets)
            raise BackendError(f"{operation} on {self.url} failed: {detail}") from None

    def _pool_kwargs(self, retry_class: Any) -> dict[str, Any]:
        kwargs = dict(self._kwargs)
        _retry(kwargs, retry_class)
        kwargs["timeout"] = kwargs.pop("pool_timeout")
        return kwargs


class RedisBackend(_RedisBase):
    """Synchronous ``Backend`` over redis-py."""

    def __init__(
        self,
        url: str,
        client: redis.Redis | None = None,
        *,
        timeout: float = 1.0,
        connection_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(url, client, client_kwargs(timeout, connection_kwargs))
        self._client = client
        self._owns_client = client is None

    def _redis(self) -> redis.Redis:
        if self._client is None:
            with self._errors("connect"):
                pool = redis.BlockingConnectionPool.from_url(
                    self._url, **self._pool_kwargs(SyncRetry)
                )
            self._client = redis.Redis(connection_pool=pool)
        return self._client

    def get_many(self, keys: Sequence[str], refresh_ttl: bool) -> list[bytes | None]:
        client = self._redis()
        out: list[bytes | None] = []
        with self._errors("read"):
            try:
                self._read(client, _Window(keys, self._read_chunker.size, refresh_ttl), out)
            except redis.exceptions.ConnectionError as exc:
                if not _dropped_mid_reply(exc):
                    raise
                # A pooled connection the server had closed (it restarted), or a reply
                # over the server's output buffer limit (values larger than estimated).
                # Once more for the rest, in smaller chunks; a second drop is raised.
                rest = keys[len(out):]
                smaller = self._read_chunker.shrink(min(len(rest), self._read_chunker.size()))
                self._read(client, _Window(rest, lambda: smaller, refresh_ttl), out)
        return out

    def _read(self, client: redis.Redis, window: _Window, out: list[bytes | None]) -> None:
        """Keep READS_IN_FLIGHT chunks sent, read the oldest reply into ``out``, repeat."""
        pool: Any = client.connection_pool  # redis-py leaves its connection API untyped
        conn = pool.get_connection()
        try:
            while True:
                for request in window.requests(conn):  # send ahead, then read one
                    conn.send_packed_command(request)
                if not window.pending:
                    break
                chunk = window.pending.popleft()
                try:
                    values = conn.read_response()
                except redis.exceptions.NoScriptError:  # once per server start
                    client.script_load(READ_AND_REFRESH_SCRIPT)
                    values = client.evalsha(READ_AND_REFRESH_SHA, len(chunk), *chunk)
                self._read_chunker.observe(values)
                out.extend(values)
        except BaseException:
            conn.disconnect()  # replies may be in flight: never hand them to the next user
            raise
        finally:
            pool.release(conn)

    def set_many(self, records: Sequence[Record]) -> None:
        client = self._redis()
        with self._errors("write"):
            for chunk in record_chunks(records, self.max_value_bytes):
                pipe = client.pipeline(transaction=False)
                _queue_sets(pipe, chunk)
                pipe.execute()

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        client = self._redis()
        out: list[bool] = []
        with self._errors("exists"):
            for chunk in chunks(keys, MAX_KEYS_PER_CHUNK):
                pipe = client.pipeline(transaction=False)
                for key in chunk:
                    pipe.exists(key)
                out.extend(bool(n) for n in pipe.execute())
        return out

    def delete_many(self, keys: Sequence[str]) -> int:
        client = self._redis()
        with self._errors("delete"):
            return sum(int(client.unlink(*chunk)) for chunk in chunks(keys, _UNLINK_BATCH))

    def clear(self, namespace: str, scan_pattern: str) -> int:
        client = self._redis()
        deleted = 0
        batch: list[bytes] = []
        with self._errors("clear"):
            for key in client.scan_iter(match=scan_pattern, count=_SCAN_COUNT):
                batch.append(key)
                if len(batch) >= _UNLINK_BATCH:
                    deleted += int(client.unlink(*batch))
                    batch = []
            if batch:
                deleted += int(client.unlink(*batch))
        return deleted

    def scan_keys(self, namespace: str, scan_pattern: str) -> list[str]:
        client = self._redis()
        with self._errors("scan"):
            return [key.decode() for key in client.scan_iter(match=scan_pattern,
                                                             count=_SCAN_COUNT)]

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


class AsyncRedisBackend(_RedisBase):
    """Asynchronous ``AsyncBackend`` over ``redis.asyncio``.

    An owned client is bound to the event loop (and process) that created it; a call
    from another loop, or after a fork, gets a fresh client instead of a hung socket.
    """

    def __init__(
        self,
        url: str,
        client: aioredis.Redis | None = None,
        *,
        timeout: float = 1.0,
        connection_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(url, client, client_kwargs(timeout, connection_kwargs))
        self._client = client
        self._owns_client = client is None
        self._bound_to: tuple[int, asyncio.AbstractEventLoop] | None = None

    def _redis(self) -> aioredis.Redis:
        if not self._owns_client:
            assert self._client is not None
            return self._client
        owner = (os.getpid(), asyncio.get_running_loop())
        if self._client is None or self._bound_to != owner:
            with self._errors("connect"):
                pool = aioredis.BlockingConnectionPool.from_url(
                    self._url, **self._pool_kwargs(AsyncRetry)
                )
            self._client = aioredis.Redis(connection_pool=pool)
            self._bound_to = owner
        return self._client

    async def get_many(self, keys: Sequence[str], refresh_ttl: bool) -> list[bytes | None]:
        client = self._redis()
        out: list[bytes | None] = []
        with self._errors("read"):
            try:
                await self._read(client, _Window(keys, self._read_chunker.size, refresh_ttl), out)
            except redis.exceptions.ConnectionError as exc:
                if not _dropped_mid_reply(exc):
                    raise
                rest = keys[len(out):]  # see RedisBackend.get_many
                smaller = self._read_chunker.shrink(min(len(rest), self._read_chunker.size()))
                await self._read(client, _Window(rest, lambda: smaller, refresh_ttl), out)
        return out

    async def _read(self, client: aioredis.Redis, window: _Window,
                    out: list[bytes | None]) -> None:
        """See RedisBackend._read."""
        pool: Any = client.connection_pool  # redis-py leaves its connection API untyped
        conn = await pool.get_connection()
        try:
            while True:
                for request in window.requests(conn):  # send ahead, then read one
                    await conn.send_packed_command(request)
                if not window.pending:
                    break
                chunk = window.pending.popleft()
                try:
                    values = await conn.read_response()
                except redis.exceptions.NoScriptError:  # once per server start
                    await client.script_load(READ_AND_REFRESH_SCRIPT)
                    values = await client.evalsha(READ_AND_REFRESH_SHA, len(chunk), *chunk)
                self._read_chunker.observe(values)
                out.extend(values)
        except BaseException:
            # Cancelled or failed with replies in flight: they must not reach the next
            # request on this connection.
            await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)

    async def set_many(self, records: Sequence[Record]) -> None:
        client = self._redis()
        with self._errors("write"):
            for chunk in record_chunks(records, self.max_value_bytes):
                pipe = client.pipeline(transaction=False)
                _queue_sets(pipe, chunk)
                await pipe.execute()

    async def exists_many(self, keys: Sequence[str]) -> list[bool]:
        client = self._redis()
        out: list[bool] = []
        with self._errors("exists"):
            for chunk in chunks(keys, MAX_KEYS_PER_CHUNK):
                pipe = client.pipeline(transaction=False)
                for key in chunk:
                    pipe.exists(key)
                out.extend(bool(n) for n in await pipe.execute())
        return out

    async def delete_many(self, keys: Sequence[str]) -> int:
        client = self._redis()
        deleted = 0
        with self._errors("delete"):
            for chunk in chunks(keys, _UNLINK_BATCH):
                deleted += int(await client.unlink(*chunk))
        return deleted

    async def clear(self, namespace: str, scan_pattern: str) -> int:
        client = self._redis()
        deleted = 0
        batch: list[bytes] = []
        with self._errors("clear"):
            async for key in client.scan_iter(match=scan_pattern, count=_SCAN_COUNT):
                batch.append(key)
                if len(batch) >= _UNLINK_BATCH:
                    deleted += int(await client.unlink(*batch))
                    batch = []
            if batch:
                deleted += int(await client.unlink(*batch))
        return deleted

    async def scan_keys(self, namespace: str, scan_pattern: str) -> list[str]:
        client = self._redis()
        with self._errors("scan"):
            return [key.decode() async for key in client.scan_iter(match=scan_pattern,
                                                                   count=_SCAN_COUNT)]

    async def close(self) -> None:
        if self._client is not None and self._owns_client:
            try:
                await self._client.aclose()
                await self._client.connection_pool.disconnect()
            except RuntimeError:  # the loop it belonged to is gone; nothing left to close
                pass
            self._client = None
