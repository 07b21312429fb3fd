"""Server-assisted invalidation for the in-process tier over Redis (``CLIENT TRACKING``).

One dedicated connection per tier asks the server, in broadcast mode, to report every
change to a key of the namespace (``CLIENT TRACKING ON REDIRECT <itself> BCAST PREFIX
<namespace>:``) and subscribes to ``__redis__:invalidate``: a SET, DEL, UNLINK, expiry or
eviction of such a key, by any client, sends its name; FLUSHDB and FLUSHALL send a flush.
RESP2 with a redirect to itself works on every Redis since 6.0 and on Valkey, with any
protocol on the data connections.

Why not redis-py's client-side caching: it needs Redis 7.4 or later (Valkey reports an
older version and is refused), has no asyncio client, caches single commands' raw replies
(not the pipelined batch reads embmemo makes, and every hit would still be decoded), and
turns RESP3 on for every connection of the pool.

The connection is read by the callers themselves, never by a thread: before each read
through the tier, a zero-timeout ``epoll`` says whether anything arrived (0.3 us), and if
so the messages are applied first. The server writes an invalidation out in the same pass
of its event loop as the reply to the write that caused it (microseconds apart), so once
a writer has its reply and says so to another process, the news is on this connection
too, and the next read here sees it. Connecting happens in a background thread,
so no caller waits for it; until it is connected (and after it breaks, until it is back)
the tier is not used, and everything it held is dropped. A connection that falls silent
is asked for a PONG after ``HEARTBEAT`` seconds and given up after twice that, so a
network path that dies without a word costs at most that long of possibly stale reads.
"""

from __future__ import annotations

import functools
import logging
import os
import select
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from redis.exceptions import ConnectionError, RedisError, ResponseError

logger = logging.getLogger("embmemo")

CHANNEL = b"__redis__:invalidate"
_listeners: weakref.WeakSet[TrackingListener] = weakref.WeakSet()
_INHERITED: list[Any] = []
"""Connections a forked child inherited: referenced, so they are never closed here."""
RECONNECT_EVERY = 1.0
"""Seconds between attempts to (re)connect the invalidation connection."""
HEARTBEAT = 5.0
"""Seconds of silence after which the server is asked for a PONG; after twice this
without one, the connection is taken for dead and the tier emptied."""


@functools.cache
def listening(connection_class: type[Any]) -> type[Any]:
    """A redis-py connection class whose instances tell their socket's descriptor, so a
    caller can ``poll`` it without reading."""

    def fileno(self: Any) -> int:
        return int(self._sock.fileno())

    return type(f"Listening{connection_class.__name__}", (connection_class,),
                {"fileno": fileno})


class Readable:
    """Whether a socket has data, without reading it: ``poll(0)`` is truthy if so (or if
    the peer closed). ``epoll`` where there is one (a ``poll`` object refuses two threads
    at once), else ``select``; the check is the bound C method itself, no wrapper."""

    def __init__(self, fd: int) -> None:
        self.epoll = select.epoll() if hasattr(select, "epoll") else None
        if self.epoll is not None:
            self.epoll.register(fd, select.EPOLLIN)
            self.poll: Callable[[float], object] = self.epoll.poll
        else:
            self.poll = lambda timeout: select.select([fd], [], [], timeout)[0]

    def close(self) -> None:
        """Release the epoll descriptor."""
        if self.epoll is not None:
            self.epoll.close()


class TrackingListener:
    """The invalidation connection of one tier (see the module's docstring).

    Args:
        connect: Makes a new, unconnected sync redis-py connection speaking RESP2, of a
            class made by ``listening``.
        prefix: The namespace's key prefix, ``"name:"``.
    """

    trusts_own_writes = False  # a reply can overtake the news of an earlier write elsewhere

    def __init__(self, connect: Callable[[], Any], prefix: str) -> None:
        self._connect = connect
        self.prefix = prefix
        self._lock = threading.Lock()
        self._connection: Any = None
        self._poller: Any = None
        self._pid = os.getpid()
        self._connecting = False
        self._last_attempt = -RECONNECT_EVERY
        self._closed = False
        self._heard = 0.0
        """When the server last said anything on the connection (monotonic clock)."""
        self._pinged = False
        _listeners.add(self)

    def sync(self, tier: Any) -> bool:
        """See ``tier.Coherence.sync``."""
        poller = self._poller  # (a forked child's is None: see after_fork)
        if poller is not None and not poller.poll(0):
            if time.monotonic() - self._heard < HEARTBEAT:
                return True  # nothing arrived, and lately: the usual case, kept short
            return self._tend(tier, self._heartbeat)
        if poller is None:
            self._start(tier)
            return False
        return self._tend(tier, self._apply)

    def _tend(self, tier: Any, work: Callable[[Any], None]) -> bool:
        """Run ``work(tier)`` on the connection, under the lock. Whatever breaks, the
        connection is dropped and the tier emptied, and the read goes to the server."""
        with self._lock:
            if self._connection is None:
                return False
            try:
                work(tier)
            except Exception as exc:
                logger.info("embmemo: invalidation connection lost (%s); the local tier "
                            "is off until it is back", exc)
                self._forget(tier)
                return False
        return True

    def _heartbeat(self, tier: Any) -> None:
        """Quiet for ``HEARTBEAT``: ask the server for a PONG. Quiet for twice that with
        the question asked: the connection is taken for dead (a network path can die
        without a word). With the lock held."""
        if self._pinged:
            if time.monotonic() - self._heard >= 2 * HEARTBEAT:
                raise ConnectionError("no answer to PING")
            return
        self._connection.send_command("PING")
        self._pinged = True

    def _apply(self, tier: Any) -> None:
        """Apply every message that has arrived (with the lock held)."""
        connection = self._connection
        while connection.can_read(timeout=0):
            reply = connection.read_response()
            self._heard, self._pinged = time.monotonic(), False
            if not isinstance(reply, list) or len(reply) != 3 or reply[1] != CHANNEL:
                continue  # subscribe confirmations
            keys = reply[2]
            if keys is None:  # FLUSHDB / FLUSHALL
                tier.flush()
            else:
                tier.invalidate([key.decode("utf-8", "surrogateescape") for key in keys])

    def after_fork(self) -> None:
        """In a forked child: the connection is the parent's (closing it here could shut
        it for the parent too), so it is forgotten, and a new one made on next use."""
        if self._connection is not None:  # kept, never collected: no close on our side
            _INHERITED.append((self._connection, self._poller))
        self._connection = self._poller = None
        self._pid, self._lock, self._connecting = os.getpid(), threading.Lock(), False

    def _forget(self, tier: Any) -> None:
        """Drop the connection and everything the tier held; reconnect later."""
        connection, self._connection = self._connection, None
        poller, self._poller = self._poller, None
        tier.flush()
        if poller is not None:
            poller.close()
        if connection is not None:
            with suppress(RedisError, OSError):
                connection.disconnect()

    def _start(self, tier: Any) -> None:
        """Connect in the background, at most once a second."""
        now = time.monotonic()
        with self._lock:
            if self._closed or self._connecting or now - self._last_attempt < RECONNECT_EVERY:
                return
            self._connecting, self._last_attempt = True, now
        threading.Thread(target=self._open, args=(tier,), name="embmemo-invalidation",
                         daemon=True).start()

    def _open(self, tier: Any) -> None:
        connection = None
        try:
            connection = self._connect()
            connection.connect()
            connection.send_command("CLIENT", "ID")
            client_id = connection.read_response()
            connection.send_command("CLIENT", "TRACKING", "ON", "REDIRECT", client_id,
                                    "BCAST", "PREFIX", self.prefix)
            connection.read_response()
            connection.send_command("SUBSCRIBE", CHANNEL)
            connection.read_response()
            poller = Readable(connection.fileno())
        except ResponseError as exc:  # NOPERM or no CLIENT TRACKING: asking again won't help
            logger.warning("embmemo: no in-process tier for %s*: the server refused "
                           "invalidations (%s); grant +client|id +client|tracking +subscribe "
                           "&__redis__:invalidate, or set local_cache=0", self.prefix, exc)
            if connection is not None:
                connection.disconnect()
            with self._lock:
                self._connecting, self._closed = False, True
            return
        except (RedisError, OSError) as exc:
            logger.info("embmemo: no invalidation connection, so no local tier for now: %s",
                        exc)
            if connection is not None:
                connection.disconnect()
            with self._lock:
                self._connecting = False
            return
        with self._lock:
            self._connecting = False
            if self._closed or self._pid != os.getpid():
                connection.disconnect()
                return
            tier.flush()  # what it held came before anyone was listening
            self._heard, self._pinged = time.monotonic(), False
            self._connection, self._poller = connection, poller

    def close(self) -> None:
        """Close the connection; the tier is not used again."""
        with self._lock:
            self._closed = True
            connection, self._connection = self._connection, None
            poller, self._poller = self._poller, None
        if self._pid == os.getpid():
            if poller is not None:
                poller.close()
            if connection is not None:
                connection.disconnect()


def _after_fork_in_child() -> None:
    for listener in list(_listeners):
        listener.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
