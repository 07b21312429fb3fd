"""What the Redis family sends, planned once for a server and for a cluster. Pure: no I/O.

Each operation is a plan: a generator that yields a batch of commands, receives their
replies (errors as values, in order) and returns the operation's result. A batch is one
round trip: the backend sends every command of it before reading any reply. Where a
command goes is the ``Router``'s business: a standalone server takes every command, a
cluster routes each by the hash slot of its keys. The backends in ``redis.py`` and
``cluster.py`` differ only in their router and in how they send a batch.

Only SET, MGET, EXISTS, UNLINK, SCAN and PEXPIRE are sent (and PTTL, for ``embmemo copy``).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ConnectionError,
    MaxConnectionsError,
    RedisError,
    ResponseError,
)

from ._limits import MAX_KEYS_PER_CHUNK, ReadChunker, chunks, record_chunks
from .base import Record, Refresh

T = TypeVar("T")
Command = tuple[tuple[Any, ...], Any]
"""A command's arguments and where it goes (a cluster node; None for a server)."""
Plan = Generator[list[Command], list[Any], T]

UNLINK_BATCH = 500
SCAN_COUNT = 1000
READ_ATTEMPTS = 4
"""A wave of reads is sent at most this often: once, once more as is (a connection that
went stale), then twice with the chunker shrunk (a server that drops large replies)."""


class Router(Protocol):
    """Where commands go."""

    def grouped(self, keys: Sequence[Any], start: int, stop: int,
                name: str) -> tuple[list[Sequence[int]], list[Command]]:
        """Positions ``start..stop`` of ``keys`` in groups that one ``name key...``
        command can serve (a cluster: one hash slot each), and those commands."""
        ...

    def per_key(self, rows: Sequence[tuple[Any, ...]]) -> list[Command]:
        """Single-key commands (the key is the second argument), each where it belongs."""
        ...

    def scan_targets(self) -> list[Any]:
        """The nodes to SCAN (every primary of a cluster)."""
        ...


@dataclass
class ServerFeatures:
    """What a server turned out to support."""

    pexpire_xx: bool = True
    """``PEXPIRE ... XX`` (Redis 7, Valkey): refresh only keys that still expire."""


_NOT_DROPS = (AuthenticationError, AuthorizationError, BusyLoadingError, MaxConnectionsError)


class PartialWriteError(RedisError):
    """A batch write failed part way: some entries were written, some not."""


class PartialReadError(RedisError):
    """Some commands of a batch read failed (a cluster node down): ``values`` holds what
    the others read, None at the ``failed`` positions."""

    def __init__(self, message: str, values: list[bytes | None], failed: list[int]) -> None:
        super().__init__(message)
        self.values = values
        self.failed = failed


def dropped_mid_reply(error: object) -> bool:
    """Whether a reply is a connection the server closed on an established connection
    (as it does when replies pass its client-output-buffer-limit), not a failed connect."""
    if not isinstance(error, ConnectionError) or isinstance(error, _NOT_DROPS):
        return False
    message = str(error)
    return "connecting to" not in message and "No connection available" not in message


def checked(replies: Sequence[Any]) -> Sequence[Any]:
    """The replies, or the first error among them raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def read_plan(router: Router, keys: Sequence[str], chunker: ReadChunker) -> Plan[
        list[bytes | None]]:
    """MGET every key: as many keys per round trip as the chunker's budget allows, cut into
    MGETs the client parses while the server answers the next."""
    out: list[bytes | None] = [None] * len(keys)
    failed: list[int] = []
    first_error: Exception | None = None
    start = attempts = 0
    while start < len(keys):
        stop = min(len(keys), start + chunker.wave_size())
        size = chunker.chunk_size()
        groups: list[Sequence[int]] = []
        commands: list[Command] = []
        for first in range(start, stop, size):
            more_groups, more_commands = router.grouped(keys, first, min(stop, first + size),
                                                        "MGET")
            groups += more_groups
            commands += more_commands
        replies = yield commands
        if any(dropped_mid_reply(reply) for reply in replies):
            attempts += 1
            if attempts >= READ_ATTEMPTS:
                checked(replies)
            if attempts > 1:
                chunker.shrink()
            continue
        for group, values in zip(groups, replies, strict=True):
            if isinstance(values, Exception):  # this node failed; the others stand
                failed.extend(group)
                first_error = first_error or values
            elif type(group) is range:
                out[group.start:group.stop] = values
            else:
                for index, value in zip(group, values, strict=True):
                    out[index] = value
        chunker.observe(out[start:stop])
        start = stop
    if first_error is not None:
        if len(failed) == len(keys):
            raise first_error
        raise PartialReadError(f"{len(failed)} of {len(keys)} keys could not be read: "
                               f"{type(first_error).__name__}: {first_error}", out, failed)
    return out


def server_plan(router: Router) -> Plan[str]:
    """What the server (the first node of a cluster) is: ``HELLO``, which every user may
    send, names the server and its version."""
    reply = checked((yield [(("HELLO",), router.scan_targets()[0])]))[0]
    fields = reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2]))
    name, version = fields.get(b"server", b"redis"), fields.get(b"version", b"?")
    return f"{name.decode().capitalize()} {version.decode()}"


def write_plan(router: Router, records: Sequence[Record], max_value_bytes: int) -> Plan[None]:
    """SET each record (with PX when it expires), a chunk per round trip."""
    written = 0
    for chunk in record_chunks(records, max_value_bytes):  # refuses oversize values first
        rows = [("SET", key, value) if ttl is None else ("SET", key, value, "PX", ttl)
                for key, value, ttl in chunk]
        replies = yield router.per_key(rows)
        errors = [reply for reply in replies if isinstance(reply, Exception)]
        written += len(replies) - len(errors)
        if errors:
            raise PartialWriteError(
                f"at least {written} of {len(records)} entries were written before the "
                f"server refused the rest (a batch write to Redis is not atomic): "
                f"{type(errors[0]).__name__}: {errors[0]}")


def lease_plan(router: Router, keys: Sequence[str], ttl_ms: int) -> Plan[list[bool]]:
    """SET NX PX each lease key: taken where nobody holds it."""
    out: list[bool] = []
    for chunk in chunks(keys, MAX_KEYS_PER_CHUNK):
        replies = yield router.per_key([("SET", key, b"1", "NX", "PX", ttl_ms) for key in chunk])
        out += [reply is not None and reply is not False for reply in checked(replies)]
    return out


def exists_plan(router: Router, keys: Sequence[str]) -> Plan[list[bool]]:
    """EXISTS each key, a chunk per round trip."""
    out: list[bool] = []
    for chunk in chunks(keys, MAX_KEYS_PER_CHUNK):
        replies = yield router.per_key([("EXISTS", key) for key in chunk])
        out += [bool(n) for n in checked(replies)]
    return out


def ttl_plan(router: Router, keys: Sequence[str]) -> Plan[list[int | None]]:
    """PTTL each key: milliseconds left, None for no expiry (-1) or no key (-2)."""
    out: list[int | None] = []
    for chunk in chunks(keys, MAX_KEYS_PER_CHUNK):
        replies = yield router.per_key([("PTTL", key) for key in chunk])
        out += [int(ms) if int(ms) >= 0 else None for ms in checked(replies)]
    return out


def delete_plan(router: Router, keys: Sequence[Any]) -> Plan[int]:
    """UNLINK the keys; how many existed."""
    deleted = 0
    for start in range(0, len(keys), UNLINK_BATCH):
        _, commands = router.grouped(keys, start, min(len(keys), start + UNLINK_BATCH), "UNLINK")
        deleted += sum(checked((yield commands)))
    return deleted


def scan_plan(router: Router, scan_pattern: str, found: list[Any] | None) -> Plan[int]:
    """SCAN MATCH on every node at once, round after round; each round's keys are
    UNLINKed, or collected into ``found`` when it is given."""
    deleted = 0
    cursors = [(node, 0) for node in router.scan_targets()]
    while cursors:
        replies = checked((yield [(("SCAN", cursor, "MATCH", scan_pattern, "COUNT", SCAN_COUNT),
                                   node) for node, cursor in cursors]))
        nodes = [node for node, _ in cursors]
        cursors = [(node, int(cursor)) for node, (cursor, _) in zip(nodes, replies, strict=True)
                   if int(cursor)]
        keys = [key for _, keys in replies for key in keys]
        if found is None:
            deleted += yield from delete_plan(router, keys)
        else:
            found.extend(keys)
    return deleted


def refresh_plan(router: Router, refreshes: Sequence[Refresh],
                 features: ServerFeatures) -> Plan[None]:
    """PEXPIRE each key with its TTL again, only if it still expires (XX) where the server
    knows that option; keys gone meanwhile are left gone."""
    for chunk in chunks(refreshes, MAX_KEYS_PER_CHUNK):
        rows = [("PEXPIRE", key, ttl_ms, "XX") for key, ttl_ms in chunk]
        if features.pexpire_xx:
            replies = yield router.per_key(rows)
            if not any(_unknown_option(reply) for reply in replies):
                checked(replies)
                continue
            features.pexpire_xx = False  # before Redis 7: no options
        checked((yield router.per_key([row[:3] for row in rows])))


def _unknown_option(reply: object) -> bool:
    if not isinstance(reply, ResponseError):
        return False
    message = str(reply).lower()
    return "wrong number of arguments" in message or "syntax" in message
