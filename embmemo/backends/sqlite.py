"""Embedded storage in one SQLite file: ``sqlite:///path/to/cache.sqlite3``, the default.

Why SQLite: it needs no server, ships with Python, and lets several threads and processes
share one cache file safely. WAL journaling lets readers proceed while one writer commits;
``synchronous=NORMAL`` keeps commits cheap (a power cut can lose the last commits, never
corrupt the file, which is the right trade for a cache). Each batch is one statement per
chunk of keys, each write call one ``BEGIN IMMEDIATE`` transaction (all or nothing), and a
generous busy timeout makes competing writers queue rather than fail.

Expiry is stored as wall-clock unix time so every process agrees on it. Expired rows are
invisible to reads and are purged a bounded number at a time inside writes.

Size limit (``max_size``): the pages in use are checked after each write; over the
limit, the least recently used entries are deleted down to 90% of it (so eviction runs
once per tenth of the limit written, not on every write) and the pages past the limit go
back to the file system (``auto_vacuum = INCREMENTAL``); ``clear()`` gives back all.
Recency is a stamp in unix milliseconds, set by each write; a hit is stamped again only
when its stamp is over a second old, and then in memory, written with the next write (or
a second later), so reads stay reads.
Any process may evict; it happens inside its write transaction, so processes never see
half of it.

The file is the user's: it is created 0600 in a 0700 directory, and one that is not an
embmemo cache is reported, never deleted or rewritten.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

from ..errors import BackendError, ConfigError
from ._limits import chunks
from .base import Record, Refresh, StorageSize

SCHEMA_VERSION = 2
"""2: entries carry ``used_at`` (LRU eviction), the file vacuums incrementally, and a
``leases`` table coordinates processes computing the same entries."""
APPLICATION_ID = 0x454D424D  # b"EMBM": marks the file as ours in the SQLite header
MIN_BUSY_TIMEOUT = 5.0
"""Seconds a statement waits for another writer's lock before failing."""

_KEYS_PER_STATEMENT = 500  # well below SQLite's host-parameter limit (999 before 3.32)
_PURGE_EVERY_WRITES = 1024
_PURGE_EVERY_SECONDS = 60.0
_PURGE_LIMIT = 1000  # expired rows deleted per purge, so a write never stalls for long
LOW_WATERMARK = 0.9
"""Eviction frees space down to this fraction of the limit."""
TOUCH_GRAIN = 1.0
"""Seconds: how stale a hit's stamp must be to be renewed, and how often noted stamps are
written when nothing else writes."""
_EVICT_CHUNK = 256
_WAL_SIZE_LIMIT = 4 << 20  # bytes the write-ahead log keeps after a checkpoint

# "(...)" in these stands for one "?" per key of the chunk, filled in by _sql.
_SELECT_VALUES = (
    "SELECT key, value FROM entries WHERE key IN (...)"
    " AND (expires_at IS NULL OR expires_at > ?)"
)
_SELECT_VALUES_USED = (
    "SELECT key, value, used_at FROM entries WHERE key IN (...)"
    " AND (expires_at IS NULL OR expires_at > ?)"
)
_TOUCH = "UPDATE entries SET used_at = ? WHERE key = ? AND used_at < ?"
_LEAST_RECENT = (
    "SELECT rowid, length(key) + length(value) FROM entries ORDER BY used_at, rowid LIMIT ?"
)
_SELECT_EXPIRY = (
    "SELECT key, expires_at FROM entries WHERE key IN (...)"
    " AND (expires_at IS NULL OR expires_at > ?)"
)
_SELECT_LIVE = (
    "SELECT key FROM entries WHERE key IN (...) AND (expires_at IS NULL OR expires_at > ?)"
)
_SLIDE = (
    "UPDATE entries SET expires_at = ? + ? WHERE key = ? AND expires_at > ?"
)
_DELETE_LIVE = (
    "DELETE FROM entries WHERE key IN (...) AND (expires_at IS NULL OR expires_at > ?)"
)
_LEASES_TABLE = (
    "CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY, expires_at REAL NOT NULL)"
)
_LEASE = (
    "INSERT INTO leases (key, expires_at) VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
    " SET expires_at = excluded.expires_at WHERE leases.expires_at <= ?"
)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value BLOB NOT NULL,"
    " expires_at REAL, ttl_ms INTEGER, used_at INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS entries_expires_at ON entries (expires_at)"
    " WHERE expires_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS entries_used_at ON entries (used_at)",
    _LEASES_TABLE,
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_UPGRADE_FROM_1 = (
    "ALTER TABLE entries ADD COLUMN used_at INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX IF NOT EXISTS entries_used_at ON entries (used_at)",
    _LEASES_TABLE,
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_UPSERT = (
    "INSERT INTO entries (key, value, expires_at, ttl_ms, used_at) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT(key) DO UPDATE SET value = excluded.value,"
    " expires_at = excluded.expires_at, ttl_ms = excluded.ttl_ms, used_at = excluded.used_at"
)
_PURGE = (
    "DELETE FROM entries WHERE rowid IN"
    " (SELECT rowid FROM entries WHERE expires_at <= ? LIMIT ?)"
)
_CLEAR = (
    "DELETE FROM entries WHERE key >= ? AND key < ? AND length(key) = ?"
    " AND substr(key, ?) NOT GLOB '*[^0-9a-f]*'"
)
_CLEAR_EXPIRED = _CLEAR + " AND expires_at <= ?"
_SCAN = (
    "SELECT key FROM entries WHERE key >= ? AND key < ? AND length(key) = ?"
    " AND substr(key, ?) NOT GLOB '*[^0-9a-f]*' AND (expires_at IS NULL OR expires_at > ?)"
)

# Connections inherited through fork(): kept referenced so the child never closes them,
# since closing a parent's SQLite handle in a child can disturb the parent's locks.
_INHERITED: list[sqlite3.Connection] = []
_BACKENDS: weakref.WeakSet[SQLiteBackend] = weakref.WeakSet()


def _namespace_bounds(namespace: str) -> tuple[str, str, int, int]:
    """Parameters selecting exactly the ``namespace:<64 lowercase hex>`` keys (see _CLEAR)."""
    prefix = namespace + ":"
    return prefix, namespace + chr(ord(":") + 1), len(prefix) + 64, len(prefix) + 1


def _after_fork_in_child() -> None:
    """Give every backend a fresh lock: a parent thread may have held it at fork time."""
    for backend in list(_BACKENDS):
        backend._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _sql(template: str, count: int) -> str:
    """The template with ``(...)`` replaced by ``count`` parameter marks."""
    return template.replace("(...)", "(" + ", ".join("?" * count) + ")")


def _busy_timeout(timeout: float, connection_kwargs: Mapping[str, Any] | None) -> float:
    """The lock wait in seconds: ``busy_timeout`` if given, else ``timeout`` floored."""
    options = dict(connection_kwargs or {})
    unknown = sorted(set(options) - {"busy_timeout"})
    if unknown:
        raise ConfigError(
            "the sqlite:// backend has no client settings except busy_timeout (seconds); "
            f"unsupported connection_kwargs: {', '.join(unknown)}"
        )
    if "busy_timeout" not in options:
        return max(float(timeout), MIN_BUSY_TIMEOUT)
    value = options["busy_timeout"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value > 0
    ):
        raise ConfigError(f"busy_timeout must be a positive number of seconds, got {value!r}")
    return float(value)


def _backend_error(operation: str, path: str, exc: Exception) -> BackendError:
    """A BackendError naming the operation and the file."""
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in reason:
        return BackendError(f"{path} is not an embmemo SQLite cache ({reason}); left untouched")
    return BackendError(f"SQLite {operation} failed on {path}: {reason}")


def _rollback(conn: sqlite3.Connection) -> None:
    """End a failed transaction; the original error is the one worth reporting."""
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _is_busy(exc: sqlite3.Error) -> bool:
    """Whether SQLite refused a lock (SQLITE_BUSY / SQLITE_LOCKED) rather than failed."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)
    return "locked" in str(exc) or "busy" in str(exc)


def _header(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(application_id, user_version, table count), read from one snapshot of the file."""
    own = not conn.in_transaction
    if own:  # else a process creating the schema could commit between the three reads
        conn.execute("BEGIN")
    try:
        app_id: int = conn.execute("PRAGMA application_id").fetchone()[0]
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        tables: int = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    finally:
        if own:
            _rollback(conn)
    return app_id, version, tables


def _schema_version(conn: sqlite3.Connection, path: str) -> int:
    """The file's cache schema version (0: an empty file), if embmemo can read it; else
    raise."""
    app_id, version, tables = _header(conn)
    if app_id == 0 and version == 0:
        if tables:
            raise BackendError(
                f"{path} is not an embmemo SQLite cache (it holds other tables); left untouched"
            )
        return 0
    if app_id != APPLICATION_ID:
        raise BackendError(
            f"{path} is not an embmemo SQLite cache (application id {app_id}); left untouched"
        )
    if version > SCHEMA_VERSION:
        raise BackendError(
            f"{path} has cache schema version {version}, newer than this embmemo reads "
            f"({SCHEMA_VERSION}); upgrade embmemo or use another file"
        )
    return version


class SQLiteBackend:
    """``Backend`` over one SQLite file, shared safely by threads and processes.

    One connection per backend, guarded by a lock: a cache batch takes milliseconds, so
    the lock costs little, and it keeps ``close`` and fork handling simple. After
    ``os.fork()`` the child opens its own connection on first use. The async methods are
    these, run in worker threads by ``AsyncAdapter``.

    Args:
        url: ``sqlite:///absolute/path/to/file.sqlite3``.
        timeout: Seconds to wait for another writer's lock (at least 5).
        connection_kwargs: Only ``busy_timeout`` (seconds), which overrides ``timeout``.
        max_size: Bytes of database pages the file may use (None: no limit).

    Construction touches no file; the first operation creates and opens it.
    """

    def __init__(
        self, url: str, *, timeout: float, connection_kwargs: Mapping[str, Any] | None = None,
        max_size: int | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() != "sqlite" or parts.netloc or not parts.path.strip("/"):
            raise ConfigError(f"a SQLite URL looks like sqlite:///path/to/file, got {url!r}")
        self.url = url
        self.path = parts.path
        self._busy_timeout = _busy_timeout(timeout, connection_kwargs)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._writes = 0
        self._last_purge = 0.0
        self.max_size = max_size
        self._page_size = 4096
        self._touches: dict[str, int] = {}
        """Hits to stamp as used (key -> unix ms), written with the next write."""
        self._touched_at = 0.0
        self._opened = 0
        """Connections opened so far: a new connection's data_version starts afresh."""
        _BACKENDS.add(self)

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.url!r})"

    def _connection(self) -> sqlite3.Connection:
        """This process's connection, opened on first use (call with the lock held)."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:
            _INHERITED.append(self._conn)
            self._conn = None
            self._touches = {}
        self._conn, self._pid = self._open(), os.getpid()
        self._opened += 1
        return self._conn

    def _open(self) -> sqlite3.Connection:
        """Create the directory and file privately, connect, check or create the schema."""
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        if not os.path.exists(self.path):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            deadline = time.monotonic() + self._busy_timeout
            delay = 0.002
            while True:
                try:
                    self._prepare(conn)
                    break
                except sqlite3.OperationalError as exc:
                    # Processes opening a new file together can deadlock switching it to WAL
                    # (each holds a read lock and wants the write lock); SQLite then fails
                    # one at once instead of waiting, so it tries again, within the timeout.
                    if not _is_busy(exc) or time.monotonic() >= deadline:
                        raise
                    _rollback(conn)
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Check the header, switch to WAL, create or upgrade the schema."""
        # Reads the header before anything writes: a file of another kind stays untouched.
        found = _schema_version(conn, self.path)
        if found < SCHEMA_VERSION:
            if found == 0:  # must come before the switch to WAL writes the first page
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = _schema_version(conn, self.path)  # another process may have won
                for statement in _SCHEMA if version == 0 else (
                        _UPGRADE_FROM_1 if version == 1 else ()):
                    conn.execute(statement)
                conn.execute("COMMIT")
            finally:
                _rollback(conn)
            if version == 1:  # a file of 0.2: incremental vacuum needs one full VACUUM
                with suppress(sqlite3.Error):
                    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                    conn.execute("VACUUM")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
        self._page_size = conn.execute("PRAGMA page_size").fetchone()[0]

    @contextmanager
    def _session(self, operation: str, write: bool) -> Iterator[sqlite3.Connection]:
        """The connection under the lock; in one IMMEDIATE transaction when writing."""
        with self._lock:
            try:
                conn = self._connection()
            except (sqlite3.Error, OSError) as exc:
                raise _backend_error("open", self.path, exc) from exc
            try:
                if not write:
                    yield conn
                    return
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                finally:
                    _rollback(conn)
            except (sqlite3.Error, OSError) as exc:
                raise _backend_error(operation, self.path, exc) from exc

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """See ``Backend.get_many``; expired rows read as missing. A read writes nothing,
        except, under a size limit, the stamps of earlier hits once a second."""
        found: dict[str, bytes] = {}
        now = time.time()
        with self._session("read", write=False) as conn:
            if self.max_size is None:
                for chunk in chunks(keys, _KEYS_PER_STATEMENT):
                    found.update(conn.execute(_sql(_SELECT_VALUES, len(chunk)), (*chunk, now)))
                return [found.get(key) for key in keys]
            stamp = int(now * 1000)
            stale = stamp - int(TOUCH_GRAIN * 1000)
            for chunk in chunks(keys, _KEYS_PER_STATEMENT):
                for key, value, used_at in conn.execute(
                        _sql(_SELECT_VALUES_USED, len(chunk)), (*chunk, now)):
                    found[key] = value
                    if used_at < stale:  # stamped at most once a second per entry
                        self._touches[key] = stamp
            self._stamp_now_and_then(conn, now)
        return [found.get(key) for key in keys]

    def _stamp_now_and_then(self, conn: sqlite3.Connection, now: float) -> None:
        """Write the noted hits' recency stamps, at most once a second between writes."""
        if self._touches and now - self._touched_at >= TOUCH_GRAIN:
            try:  # a quick write of its own; never waits for another writer
                conn.execute("PRAGMA busy_timeout = 0")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    self._stamp(conn, now)
                    conn.execute("COMMIT")
                finally:
                    _rollback(conn)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")

    def _stamp(self, conn: sqlite3.Connection, now: float) -> None:
        """Write the pending recency stamps (inside a write transaction)."""
        touches, self._touches, self._touched_at = self._touches, {}, now
        if touches:
            conn.executemany(_TOUCH, [(stamp, key, stamp) for key, stamp in touches.items()])

    def _evict(self, conn: sqlite3.Connection) -> bool:
        """Over the limit: delete least recently used entries down to the low watermark
        (inside a write transaction); whether it did."""
        limit = self.max_size
        if limit is None or self._used(conn) <= limit:
            return False
        target = int(limit * LOW_WATERMARK)
        while (used := self._used(conn)) > target:
            victims, freed = [], 0
            for rowid, size in conn.execute(_LEAST_RECENT, (_EVICT_CHUNK,)):
                victims.append((rowid,))
                freed += size
                if freed >= used - target:
                    break
            if not victims:
                break
            conn.executemany("DELETE FROM entries WHERE rowid = ?", victims)
        return True

    def _give_back(self, checkpoint: bool = False) -> None:
        """Return free pages to the file system, in a transaction of their own (inside
        one, Python's sqlite3 runs ``incremental_vacuum`` for one page only). Under a
        limit, only the pages past it: the rest are reused by the next writes, and
        moving them out and back would cost as much as the writes themselves."""
        with self._session("vacuum", write=False) as conn:
            pages = ""
            if self.max_size is not None and not checkpoint:
                total: int = conn.execute("PRAGMA page_count").fetchone()[0]
                excess = total - self.max_size // self._page_size
                if excess <= 0:
                    return
                pages = f"({excess})"
            conn.executescript(f"PRAGMA incremental_vacuum{pages};")
            if checkpoint:  # best effort, never waits: the file shrinks now, not later
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _used(self, conn: sqlite3.Connection) -> int:
        """Bytes of the database pages holding data."""
        pages: int = conn.execute("PRAGMA page_count").fetchone()[0]
        free: int = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * self._page_size

    def storage_size(self) -> StorageSize:
        """Bytes of the pages holding data, and the limit."""
        with self._session("size", write=False) as conn:
            return StorageSize(self._used(conn), self.max_size)

    def data_version(self) -> tuple[int, int] | None:
        """A value that changes when another connection commits to the file (None: the
        connection is busy or not open just now, so nothing can be said)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._conn is None or self._pid != os.getpid():
                return None
            version: int = self._conn.execute("PRAGMA data_version").fetchone()[0]
            return self._opened, version
        except sqlite3.Error:
            return None
        finally:
            self._lock.release()

    def coherence(self, prefix: str) -> DataVersionWatch:
        """What keeps an in-process tier in front of this file true to it."""
        return DataVersionWatch(self)

    def refresh_many(self, refreshes: Sequence[Refresh]) -> None:
        """See ``Backend.refresh_many``: one write transaction, only live expiring rows."""
        with self._session("TTL refresh", write=True) as conn:
            now = time.time()
            conn.executemany(_SLIDE, [(now, ttl_ms / 1000, key, now) for key, ttl_ms in refreshes])

    def set_many(self, records: Sequence[Record]) -> None:
        """See ``Backend.set_many``; the whole call is one transaction."""
        if not records:
            return
        with self._session("write", write=True) as conn:
            # Timed once the lock is ours: a writer that waited for it must not stamp its
            # new entries older than those others committed meanwhile (eviction would
            # take them first).
            now = time.time()
            stamp = int(now * 1000)
            rows = [
                (key, value, now + ttl_ms / 1000 if ttl_ms else None, ttl_ms or None, stamp)
                for key, value, ttl_ms in records
            ]
            conn.executemany(_UPSERT, rows)
            self._writes += len(rows)
            due = now - self._last_purge >= _PURGE_EVERY_SECONDS
            if due or self._writes >= _PURGE_EVERY_WRITES:
                conn.execute(_PURGE, (now, _PURGE_LIMIT))
                self._writes, self._last_purge = 0, now
            evicted = False
            if self.max_size is not None:
                self._stamp(conn, now)
                evicted = self._evict(conn)
        if evicted:
            self._give_back()

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """See ``Backend.exists_many``."""
        live: set[str] = set()
        now = time.time()
        with self._session("read", write=False) as conn:
            for chunk in chunks(keys, _KEYS_PER_STATEMENT):
                rows = conn.execute(_sql(_SELECT_LIVE, len(chunk)), (*chunk, now))
                live.update(row[0] for row in rows)
        return [key in live for key in keys]

    def delete_many(self, keys: Sequence[str]) -> int:
        """See ``Backend.delete_many``; counts live keys only (expired ones are purged later)."""
        deleted = 0
        now = time.time()
        with self._session("delete", write=True) as conn:
            for chunk in chunks(keys, _KEYS_PER_STATEMENT):
                deleted += conn.execute(_sql(_DELETE_LIVE, len(chunk)), (*chunk, now)).rowcount
        return deleted

    def remaining_ttls(self, keys: Sequence[str]) -> list[int | None]:
        """See ``Backend.remaining_ttls``."""
        expiry: dict[str, float | None] = {}
        now = time.time()
        with self._session("read", write=False) as conn:
            for chunk in chunks(keys, _KEYS_PER_STATEMENT):
                expiry.update(conn.execute(_sql(_SELECT_EXPIRY, len(chunk)), (*chunk, now)))
        return [None if (at := expiry.get(key)) is None else max(1, round((at - now) * 1000))
                for key in keys]

    def clear(self, namespace: str, scan_pattern: str) -> int:
        """See ``Backend.clear``: only ``namespace:<64 lowercase hex>`` keys go."""
        bounds = _namespace_bounds(namespace)
        now = time.time()
        with self._session("clear", write=True) as conn:
            conn.execute(_CLEAR_EXPIRED, (*bounds, now))  # expired: uncounted
            cleared: int = conn.execute(_CLEAR, bounds).rowcount
        self._give_back(checkpoint=True)
        return cleared

    def scan_keys(self, namespace: str, scan_pattern: str) -> list[str]:
        """See ``Backend.scan_keys``."""
        with self._session("scan", write=False) as conn:
            rows = conn.execute(_SCAN, (*_namespace_bounds(namespace), time.time())).fetchall()
        return [key for (key,) in rows]

    def lease_many(self, keys: Sequence[str], ttl_ms: int) -> list[bool]:
        """See ``Backend.lease_many``: a row per lease, in the same file."""
        with self._session("lease", write=True) as conn:
            now = time.time()
            return [conn.execute(_LEASE, (key, now + ttl_ms / 1000, now)).rowcount == 1
                    for key in keys]

    def release_many(self, keys: Sequence[str]) -> None:
        """See ``Backend.release_many``."""
        with self._session("lease release", write=True) as conn:
            conn.executemany("DELETE FROM leases WHERE key = ?", [(key,) for key in keys])

    def server_version(self) -> str:
        """The SQLite library's version (for ``embmemo info``)."""
        return f"SQLite {sqlite3.sqlite_version}"

    def close(self) -> None:
        """Close the connection. Idempotent; the next operation reopens."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            if self._pid != os.getpid():
                _INHERITED.append(conn)
                return
            with suppress(sqlite3.Error):
                conn.close()


class DataVersionWatch:
    """Coherence of an in-process tier over SQLite: ``PRAGMA data_version`` changes when
    another connection (another process, another cache object) commits, and then the
    tier is emptied. Its own connection's writes go into the tier as they are made."""

    trusts_own_writes = True

    def __init__(self, backend: SQLiteBackend) -> None:
        self.backend = backend
        self.version: tuple[int, int] | None = None

    def sync(self, tier: Any) -> bool:
        """See ``tier.Coherence.sync``."""
        version = self.backend.data_version()
        if version is None:
            return False
        if version != self.version:
            tier.flush()
            self.version = version
        return True

    def close(self) -> None:
        """Nothing to release."""
