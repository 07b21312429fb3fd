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

MAX_READ_CHUNK_BYTES = 1024 * 1024
"""Expected bytes of the read replies pending at once (the standalone backend splits it
between the chunks it keeps in flight). A server closes a client whose pending replies
pass its ``client-output-buffer-limit``; locked-down servers set that to a few MB for
normal clients, so pending replies are kept to 1 MiB."""

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
    """Sizes read chunks from the largest value of the last reply, so replies stay bounded.

    Call ``size()`` before each chunk: a reply with larger values shrinks the next chunk
    of the same batch, one with smaller values lets it grow again (up to
    ``MAX_KEYS_PER_CHUNK``). ``shrink()`` is for a chunk the server dropped: the estimate
    was too low (values larger than any seen so far), so it is raised eightfold at least.
    """

    def __init__(self, assumed_value_bytes: int = 8 * 1024,
                 budget: int = MAX_READ_CHUNK_BYTES) -> None:
        self.largest_value = assumed_value_bytes
        self.budget = budget

    def size(self) -> int:
        """Keys per read chunk under the current estimate."""
        return max(1, min(MAX_KEYS_PER_CHUNK, self.budget // self.largest_value))

    def shrink(self, failed_keys: int) -> int:
        """A read of ``failed_keys`` keys was dropped: raise the estimate; the new size."""
        target = max(1, failed_keys // 8)
        self.largest_value = max(self.largest_value * 8, -(-self.budget // target))
        return self.size()

    def observe(self, values: Sequence[bytes | None]) -> None:
        """Learn from a reply (one with no value teaches nothing)."""
        largest = max(map(len, filter(None, values)), default=0)  # None: a miss
        if largest:
            self.largest_value = largest
