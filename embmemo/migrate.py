"""Moving embeddings a team paid for: between embmemo backends, and out of RedisVL.

``copy`` moves every entry of a namespace from one backend to another (the embedded
SQLite file to Redis or a Cluster, and back): verified records only, byte for byte, each
with the time it has left to live, skipping what the destination already holds, so an
interrupted copy resumes where it stopped. ``import_redisvl`` reads the hashes a RedisVL
``EmbeddingsCache`` wrote and stores them as embmemo entries under embmemo's keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from . import codec
from .backends import Record
from .cache import EmbeddingsCache
from .errors import InvalidInputError, InvalidTypeError
from .keys import KeyScheme
from .urls import parse_redis_url

Progress = Callable[[int, int], None]
"""Called with (done, total) after each chunk."""

CHUNK = 1000


@dataclass
class CopyReport:
    """What a copy did, entry by entry."""

    copied: int = 0
    skipped: int = 0
    """Already in the destination (a resumed copy)."""
    corrupt: int = 0
    """Failed verification in the source: not copied."""
    expired: int = 0
    """Expired or deleted between the scan and the read."""


@dataclass
class ImportReport:
    """What an import from RedisVL did, entry by entry."""

    imported: int = 0
    skipped: int = 0
    """Already in the destination."""
    without_text: int = 0
    """Stored without the text they embed: embmemo's key cannot be computed."""
    invalid: int = 0
    """Not a RedisVL entry (another type, no model, an embedding that is not numbers)."""
    expired: int = 0


def _cache(target: EmbeddingsCache | str, name: str | None) -> EmbeddingsCache:
    return target if isinstance(target, EmbeddingsCache) else EmbeddingsCache(name=name,
                                                                               url=target)


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


def copy(source: EmbeddingsCache | str, dest: EmbeddingsCache | str, *,
         name: str | None = None, dest_name: str | None = None,
         progress: Progress | None = None) -> CopyReport:
    """Copy every entry of a namespace from ``source`` to ``dest`` (caches, or URLs with
    the namespaces ``name`` and ``dest_name``, which defaults to ``name``).

    Entries are copied as stored (their checked records), each with the time it has left
    to live; a record that fails verification is counted, not copied. Entries the
    destination already has are skipped, so running it again finishes an interrupted copy.
    """
    source_cache = _cache(source, name)
    dest_cache = _cache(dest, dest_name or source_cache.name)
    reader, writer = source_cache.store.backend(), dest_cache.store.backend()
    scheme, dest_prefix = source_cache.store.scheme, dest_cache.store.scheme.prefix
    keys = reader.scan_keys(source_cache.name, scheme.scan_pattern())
    report = CopyReport()
    for done, chunk in enumerate(_chunks(keys)):
        digests = [scheme.digest_of(key) for key in chunk]
        values = reader.get_many(chunk)
        left = reader.remaining_ttls(chunk)
        entries, _ = codec.decode_many(values, chunk, digests)
        targets = [dest_prefix + digest.hex() for digest in digests]
        present = writer.exists_many(targets)
        records: list[Record] = []
        for target, value, entry, ms, there in zip(targets, values, entries, left, present):
            if value is None or (entry is not None and entry.ttl is not None and ms is None):
                report.expired += 1
            elif entry is None:
                report.corrupt += 1
            elif there:
                report.skipped += 1
            else:
                records.append(Record(target, value, ms))
        writer.set_many(records)
        report.copied += len(records)
        if progress is not None:
            progress(min(len(keys), (done + 1) * CHUNK), len(keys))
    return report


def _redis_client(url: str) -> Any:
    address = parse_redis_url(url)
    if not address.cluster:
        return redis.Redis.from_url(address.for_redis_py())
    from redis.cluster import ClusterNode, RedisCluster

    return RedisCluster(startup_nodes=[ClusterNode(h, p)  # type: ignore[no-untyped-call]
                                       for h, p in address.nodes],
                        username=address.username, password=address.password,
                        ssl=address.tls)


def _redisvl_item(fields: dict[bytes, bytes], left_ms: int) -> dict[str, Any] | str:
    """An mset item from a RedisVL hash, or why it cannot be one."""
    raw_text = fields.get(b"content", fields.get(b"text"))
    if raw_text is None:
        return "without_text"
    try:
        model_name = fields[b"model_name"].decode()
        embedding = json.loads(fields[b"embedding"])
        metadata = json.loads(fields[b"metadata"]) if b"metadata" in fields else None
    except (KeyError, UnicodeDecodeError, ValueError):
        return "invalid"
    try:
        text: str | bytes = raw_text.decode()
    except UnicodeDecodeError:
        text = raw_text
    return {"text": text, "model_name": model_name, "embedding": embedding,
            "metadata": metadata if isinstance(metadata, dict) else None,
            "ttl": left_ms / 1000 if left_ms > 0 else None}


def import_redisvl(source_url: str, dest: EmbeddingsCache | str, *,
                   name: str = "embedcache", dest_name: str | None = None,
                   progress: Progress | None = None) -> ImportReport:
    """Store the entries of RedisVL's ``EmbeddingsCache`` named ``name`` at
    ``source_url`` as embmemo entries of ``dest`` (a cache, or a URL with the namespace
    ``dest_name``, which defaults to ``name``), each with the time it has left to live.

    RedisVL keys entries by ``content:model`` and embmemo by a collision-free encoding,
    so entries are re-keyed from the text RedisVL stored with them. Entries the
    destination already has are skipped: running it again finishes an interrupted import.
    """
    dest_cache = _cache(dest, dest_name or name)
    client = _redis_client(source_url)
    report = ImportReport()
    try:
        keys = list(client.scan_iter(match=KeyScheme(name).scan_pattern(), count=CHUNK))
        for done, chunk in enumerate(_chunks(keys)):
            pipe = client.pipeline(transaction=False)
            for key in chunk:
                pipe.hgetall(key)
                pipe.pttl(key)
            replies = pipe.execute(raise_on_error=False)
            items = []
            for fields, left in zip(replies[::2], replies[1::2]):
                if isinstance(fields, Exception) or isinstance(left, Exception):
                    report.invalid += 1  # not a hash: not RedisVL's
                    continue
                if not fields:
                    report.expired += 1
                    continue
                item = _redisvl_item(fields, int(left))
                if isinstance(item, str):
                    setattr(report, item, getattr(report, item) + 1)
                else:
                    items.append(item)
            _store_new(dest_cache, items, report)
            if progress is not None:
                progress(min(len(keys), (done + 1) * CHUNK), len(keys))
    finally:
        client.close()
    return report


def _store_new(cache: EmbeddingsCache, items: list[dict[str, Any]],
               report: ImportReport) -> None:
    """Write the items the cache does not have yet; one invalid item is counted alone."""
    fresh = []
    for item in items:
        try:
            cache.store.records([item], None)
        except (InvalidInputError, InvalidTypeError):
            report.invalid += 1
            continue
        fresh.append(item)
    keys = [cache.key(item["text"], item["model_name"]) for item in fresh]
    present = cache.mexists_by_keys(keys) if keys else []
    new = [item for item, there in zip(fresh, present) if not there]
    cache.mset(new)
    report.imported += len(new)
    report.skipped += len(fresh) - len(new)
