"""Batch chunking shared by the network backends: by count and by bytes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from ..errors import ValueTooLargeError
from .base import Record

T = TypeVar("T")

MAX_KEYS_PER_CHUNK = 1000
"""Keys per MGET / pipeline: big enough to amortize the round trip, small enough to interleave."""

MAX_CHUNK_BYTES = 8 * 1024 * 1024
"""Request bytes per write round trip (the server's query buffer allows 1 GB)."""

MAX_PENDING_READ_BYTES = 8 * 1024 * 1024
"""Expected bytes of read replies sent for at once (a wave, one round trip): a 1,000 x
768-d read is one wave. A server closes a client whose pending replies pass its
``client-output-buffer-limit`` (unlimited for normal clients unless configured); when one
does, the read is sent again as is (a stale pooled connection looks the same), and if it is
dropped again the budget shrinks eightfold for the backend's life."""

READ_CHUNK_BYTES = 512 * 1024
"""Expected reply bytes of one MGET of a wave: the client parses one while the server
answers the next."""

MIN_PENDING_READ_BYTES = 64 * 1024

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
            raise ValueTooLargeError(
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
    """Sizes reads from the largest value seen so far: keys per MGET (``chunk_size``) and
    keys per round trip (``wave_size``), so pending replies stay within the budget.

    ``observe`` learns from each reply (larger values shrink the next reads, smaller ones
    let them grow again). ``shrink`` is for a wave the server dropped twice: either its
    limit on pending replies is lower than the budget or the values are larger than
    estimated, so both are corrected eightfold; the budget stays lowered for good.
    """

    def __init__(self, assumed_value_bytes: int = 8 * 1024,
                 budget: int = MAX_PENDING_READ_BYTES) -> None:
        self.largest_value = assumed_value_bytes
        self.budget = budget

    def chunk_size(self) -> int:
        """Keys per MGET."""
        per_chunk = min(READ_CHUNK_BYTES, self.budget)
        return max(1, min(MAX_KEYS_PER_CHUNK, per_chunk // self.largest_value))

    def wave_size(self) -> int:
        """Keys per round trip."""
        return max(1, self.budget // self.largest_value)

    def shrink(self) -> None:
        """A wave was dropped: send a sixty-fourth as much per wave, an eighth per MGET."""
        self.budget = max(MIN_PENDING_READ_BYTES, self.budget // 8)
        self.largest_value *= 8

    def observe(self, values: Sequence[bytes | None]) -> None:
        """Learn from a reply (one with no value teaches nothing), by a sample of at most
        32 values: the values of one cache are alike in size."""
        sample = values[::max(1, len(values) // 32)]
        largest = max(map(len, filter(None, sample)), default=0)  # None: a miss
        if largest:
            self.largest_value = largest
