"""Batch chunking shared by the network backends: by count and by bytes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from ..errors import InvalidInputError
from .base import Record

T = TypeVar("T")

MAX_KEYS_PER_CHUNK = 1000
"""Keys per MGET / pipeline: big enough to amortize the round trip, small enough to interleave."""

MAX_CHUNK_BYTES = 8 * 1024 * 1024
"""Request or expected reply bytes per round trip; keeps clear of server buffer limits."""

MAX_VALUE_BYTES = 512 * 1024 * 1024
"""Redis' default proto-max-bulk-len: a larger value would be refused by the server."""


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def record_chunks(records: Sequence[Record], max_value_bytes: int) -> Iterator[Sequence[Record]]:
    """Slices of records bounded by count and total value bytes; refuses oversize values first."""
    for record in records:
        if len(record.value) > max_value_bytes:
            raise InvalidInputError(
                f"the entry for {record.key} is {len(record.value)} bytes, above the backend's "
                f"limit of {max_value_bytes} bytes; nothing was written"
            )
    start = 0
    size = 0
    for index, record in enumerate(records):
        size += len(record.value)
        if index > start and (index - start >= MAX_KEYS_PER_CHUNK or size > MAX_CHUNK_BYTES):
            yield records[start:index]
            start = index
            size = len(record.value)
    if start < len(records):
        yield records[start:]


class ReadChunker:
    """Sizes read chunks from the largest value seen so far, so replies stay bounded."""

    def __init__(self, assumed_value_bytes: int = 8 * 1024) -> None:
        self.largest_value = assumed_value_bytes

    def size(self) -> int:
        """Keys per read chunk under the current estimate."""
        return max(1, min(MAX_KEYS_PER_CHUNK, MAX_CHUNK_BYTES // self.largest_value))

    def observe(self, values: Sequence[bytes | None]) -> None:
        """Learn from a reply."""
        largest = max((len(v) for v in values if v is not None), default=0)
        if largest > self.largest_value:
            self.largest_value = largest
