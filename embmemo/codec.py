"""Binary entry record <-> CacheEntry. Pure: no I/O.

One stored value per entry, self-describing and verified on every read::

    offset size
    0      4    magic b"EMBM"
    4      1    format version
    5      1    dtype code (1 float16, 2 float32, 3 float64; 4 to 11 the integer dtypes
                the decorator stores integer embeddings in: int8, uint8, ..., uint64)
    6      1    flags (bit 0: text is bytes, bit 1: has metadata)
    7      1    reserved, 0
    8      4    dimension
    12     4    text length in bytes
    16     4    model name length in bytes
    20     4    metadata JSON length in bytes
    24     2    output hint: how the embed function returned it (see embmemo.forms)
    26     6    reserved, 0
    32     8    TTL the entry was written with, in ms (0: none); read by the refresh script
    40     8    inserted_at, unix seconds (float64)
    48     32   SHA-256 digest of the key this value belongs to
    80     ...  vector (little-endian), text, model name, metadata JSON
    end-4  4    CRC-32C (Castagnoli) of everything before it, little-endian

The header is 80 bytes so the vector starts 8-byte aligned. The digest rejects a value
copied from another key; the CRC rejects truncation and bit flips anywhere, so a damaged
value is a miss, never a wrong vector. With the CRC appended, the CRC of the whole value
is a constant, so verifying needs no slicing. The vector is never JSON-encoded and nothing is
pickled: decoding is one ``numpy.frombuffer``.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import struct
from collections.abc import Iterator, Mapping, Sequence
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt
from google_crc32c import extend as crc32c_extend
from google_crc32c import value as crc32c

from ._native import load_speedups
from .errors import InvalidInputError, InvalidTypeError
from .keys import Text

_speedups = load_speedups()

MAGIC = b"EMBM"
FORMAT_VERSION = 2
"""2: CRC-32C trailer (1 had zlib's CRC-32); other versions read as misses."""
HEADER = struct.Struct("<4sBBBxIIIIH6xQd32s")
HEADER_SIZE = HEADER.size
_CRC_SIZE = 4
_CRC_RESIDUE = 0x48674BC7  # crc32c(data + crc32c(data) as 4 little-endian bytes)
TTL_OFFSET = 32
"""Byte offset of the little-endian uint64 TTL (ms), for server-side scripts."""
MAX_TTL_MS = 2**47
"""The longest TTL (about 4,400 years): what Redis accepts, and exact in a Lua double."""

_FLAG_BYTES_TEXT = 1
_FLAG_METADATA = 2

DTYPES: dict[str, np.dtype[Any]] = {
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
}
"""The storage dtypes a cache can be configured with (embeddings given as floats)."""

INTEGER_DTYPES: tuple[np.dtype[Any], ...] = tuple(
    np.dtype(f"<{kind}{size}") for size in (1, 2, 4, 8) for kind in "iu"
)
"""Integer embeddings (quantized models) are stored in their own, smallest fitting dtype."""

_DTYPE_BY_CODE = dict(enumerate((*DTYPES.values(), *INTEGER_DTYPES), start=1))
_CODE_BY_DTYPE = {dtype: code for code, dtype in _DTYPE_BY_CODE.items()}

def dtype_code(dtype: np.dtype[Any]) -> int:
    """The header code of a storable dtype, or 0 for any other dtype."""
    return _CODE_BY_DTYPE.get(dtype, 0)


def dtype_of_code(code: int) -> np.dtype[Any] | None:
    """The dtype a header code names, or None."""
    return _DTYPE_BY_CODE.get(code)


_ENTRY_INIT_FIELDS = ("key", "text", "model_name", "embedding", "metadata", "inserted_at", "ttl",
                      "output_hint")
_FIELDS = ("entry_id", "content", "text", "model_name", "embedding", "metadata", "inserted_at",
           "key", "ttl")
_ALIASES = {"content": "text"}
_DERIVED = frozenset({"entry_id"})
_COMPARED = ("key", "text", "model_name", "embedding", "metadata", "inserted_at", "ttl")


class CacheEntry(Mapping[str, Any]):
    """One cached embedding, readable as attributes or as a mapping (``entry["text"]``).

    As a mapping it is the dict RedisVL returns: the text under both ``"content"`` (RedisVL
    0.13 and later) and ``"text"`` (0.6), ``"metadata"`` only when metadata was stored,
    and fields a caller sets (``entry["score"] = 0.9``) are kept with it. ``to_dict()``
    (or ``copy()``) gives a plain, JSON-serializable dict.

    Attributes:
        entry_id: The 64-hex SHA-256 digest that identifies the request.
        key: The full storage key, ``{namespace}:{entry_id}``.
        text: The text (``str``) or bytes that were embedded; ``content`` is the same.
        model_name: The model name the embedding was stored under.
        embedding: A read-only 1-D ``numpy.ndarray`` in the stored dtype.
        metadata: The metadata dict given at write time, or None.
        inserted_at: When the entry was written, in unix seconds.
        ttl: The time to live the entry was written with, in seconds, or None.
    """

    __slots__ = ("embedding", "extra", "inserted_at", "key", "metadata", "model_name",
                 "output_hint", "text", "ttl")

    key: str
    text: Text
    model_name: str
    embedding: npt.NDArray[Any]
    metadata: dict[str, Any] | None
    inserted_at: float
    ttl: float | None
    output_hint: int
    """How the decorated function that computed it returned it (0: not known)."""
    extra: dict[str, Any]
    """Fields a caller set that are not an entry's own (unset until the first one)."""

    def __init__(
        self,
        key: str,
        text: Text,
        model_name: str,
        embedding: npt.NDArray[Any],
        metadata: dict[str, Any] | None,
        inserted_at: float,
        ttl: float | None,
        output_hint: int = 0,
    ) -> None:
        # Assignments only: the C decoder fills these slots without calling __init__.
        self.key = key
        self.text = text
        self.model_name = model_name
        self.embedding = embedding
        self.metadata = metadata
        self.inserted_at = inserted_at
        self.ttl = ttl
        self.output_hint = output_hint

    @property
    def entry_id(self) -> str:
        """The 64-hex digest that identifies the request (the end of the key)."""
        return self.key[-64:]

    @property
    def content(self) -> Text:
        """The text, under RedisVL's current name."""
        return self.text

    def _extra(self) -> dict[str, Any]:
        return getattr(self, "extra", None) or {}

    def __getitem__(self, field: str) -> Any:
        if field in _FIELDS and (field != "metadata" or self.metadata is not None):
            return getattr(self, field)
        return self._extra()[field]  # KeyError for a field it does not have

    def __setitem__(self, field: str, value: Any) -> None:
        """Change a field, or keep one of the caller's, as a dict would."""
        if field in _DERIVED:
            raise KeyError(f"{field!r} follows from the key; set 'key' instead")
        if field in _FIELDS:
            setattr(self, _ALIASES.get(field, field), value)
        else:
            if getattr(self, "extra", None) is None:
                self.extra = {}
            self.extra[field] = value

    def __iter__(self) -> Iterator[str]:
        for field in _FIELDS:
            if field != "metadata" or self.metadata is not None:
                yield field
        yield from self._extra()

    def __len__(self) -> int:
        return len(_FIELDS) - (self.metadata is None) + len(self._extra())

    def to_dict(self) -> dict[str, Any]:
        """A plain dict in RedisVL's shape: the embedding as a list of floats, metadata
        only when stored, plus ``key`` and ``ttl``; JSON-serializable when the text is a
        str (bytes stay bytes) and the caller's own fields are."""
        data: dict[str, Any] = {"entry_id": self.entry_id, "content": self.text,
                                "text": self.text, "model_name": self.model_name,
                                "embedding": self.embedding.tolist(),
                                "inserted_at": self.inserted_at}
        if self.metadata is not None:
            data["metadata"] = copy.deepcopy(self.metadata)
        data.update(key=self.key, ttl=self.ttl, **self._extra())
        return data

    copy = to_dict

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CacheEntry):
            return NotImplemented
        return all(
            np.array_equal(self.embedding, other.embedding)
            if field == "embedding"
            else getattr(self, field) == getattr(other, field)
            for field in _COMPARED
        ) and self._extra() == other._extra()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"CacheEntry(key={self.key!r}, text={self.text!r}, model_name={self.model_name!r}, "
            f"embedding=<{self.embedding.dtype} x {self.embedding.shape[0]}>, "
            f"metadata={self.metadata!r}, inserted_at={self.inserted_at!r}, ttl={self.ttl!r})"
        )


def dtype_for(name: str) -> np.dtype[Any]:
    """The numpy storage dtype for a dtype name, or a clear error."""
    try:
        return DTYPES[name]
    except (KeyError, TypeError):
        raise InvalidInputError(
            f"dtype must be one of {', '.join(DTYPES)}, got {name!r}"
        ) from None


@functools.lru_cache(maxsize=64)
def _zeros(dimension: int, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """A zero vector: ``v.dot(zeros)`` is NaN exactly when ``v`` has a NaN or an inf
    (0 * inf is NaN), and it cannot overflow; one BLAS call instead of two reductions."""
    return np.zeros(dimension, dtype)


def smallest_integer_dtype(values: npt.NDArray[Any]) -> np.dtype[Any]:
    """The smallest integer storage dtype that holds every value of an integer array."""
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    for dtype in INTEGER_DTYPES:
        limits = np.iinfo(dtype)
        if limits.min <= low and high <= limits.max:
            return dtype
    raise InvalidInputError(f"embedding values {low}..{high} do not fit a 64-bit integer")


def quiet_float_errors() -> Any:
    """Silence numpy's overflow/invalid warnings around a batch of ``vector_bytes`` calls:
    those conditions are detected and reported as errors, not warnings (one context for
    the whole batch, because entering one costs as much as checking a vector)."""
    return np.errstate(over="ignore", invalid="ignore")


def vector_bytes(embedding: object, dtype: np.dtype[Any]) -> tuple[bytes, int]:
    """Validate an embedding and return ``(little-endian bytes in dtype, dimension)``.

    Call it inside ``quiet_float_errors()``.
    """
    if isinstance(embedding, np.ndarray):
        array = embedding
    elif isinstance(embedding, (list, tuple)):
        if not embedding:
            raise InvalidInputError("embedding must not be empty")
        try:
            array = np.asarray(embedding)
        except (ValueError, TypeError):
            raise InvalidInputError(
                "embedding must be a flat sequence of numbers (got a ragged or mixed sequence)"
            ) from None
    else:
        raise InvalidTypeError(
            "embedding must be a list, tuple or numpy array of numbers, "
            f"got {type(embedding).__name__}"
        )
    if array.dtype.kind not in "fiu":
        raise InvalidTypeError(
            f"embedding must hold real numbers, got elements of dtype {array.dtype}"
        )
    if array.ndim != 1:
        raise InvalidInputError(f"embedding must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise InvalidInputError("embedding must not be empty")
    stored = array if array.dtype == dtype else array.astype(dtype)
    if not math.isfinite(stored.dot(_zeros(stored.shape[0], dtype))):
        if np.isfinite(array).all():
            raise InvalidInputError(f"embedding has values outside the range of {dtype.name}")
        raise InvalidInputError("embedding must contain only finite numbers (no NaN or inf)")
    return stored.tobytes(), array.shape[0]


def metadata_json(metadata: object) -> bytes:
    """Validate metadata (None or a JSON-serializable dict with str keys) and encode it."""
    if metadata is None:
        return b""
    if not isinstance(metadata, dict):
        raise InvalidTypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    for key in metadata:
        if not isinstance(key, str):  # json.dumps would quietly turn 1 into "1"
            raise InvalidTypeError(f"metadata keys must be str, got {key!r}")
    try:
        return json.dumps(metadata, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        pass
    for key, value in metadata.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidTypeError(
                f"metadata[{key!r}] is not JSON-serializable: {exc}"
            ) from None
    raise InvalidTypeError("metadata is not JSON-serializable")  # e.g. a nested non-str key


def encode(
    digest: bytes,
    text_tag_is_bytes: bool,
    text: bytes,
    model: bytes,
    vector: bytes,
    dimension: int,
    dtype: np.dtype[Any],
    metadata: bytes,
    ttl_ms: int,
    inserted_at: float,
    output_hint: int = 0,
) -> bytes:
    """Build one record from already-validated parts."""
    flags = (_FLAG_BYTES_TEXT if text_tag_is_bytes else 0) | (_FLAG_METADATA if metadata else 0)
    header = HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        _CODE_BY_DTYPE[dtype],
        flags,
        dimension,
        len(text),
        len(model),
        len(metadata),
        output_hint,
        ttl_ms,
        inserted_at,
        digest,
    )
    trailer = text + model + metadata
    crc = crc32c_extend(crc32c_extend(crc32c(header), vector), trailer)
    return b"".join((header, vector, trailer, crc.to_bytes(_CRC_SIZE, "little")))


def decode_many(
    values: Sequence[bytes | None],
    keys: Sequence[str],
    digests: Sequence[bytes],
    model_name: str | None = None,
    texts: Sequence[Text] | None = None,
    verified: bool = False,
) -> tuple[list[CacheEntry | None], int]:
    """Decode and verify a batch of records; returns the entries and how many were corrupt.

    A missing value (None) is a miss; a value that fails any check (length, magic,
    version, dtype, the key digest, ``model_name`` when given, the CRC, its text or
    metadata encoding) is a miss that counts as corrupt. ``texts``, when the keys were
    computed from them, are the entries' texts: the digest check has proven the stored
    text is the same, so it is not decoded again. ``verified``: every value passed
    ``intact`` already (the in-process tier checks what it keeps), so the CRC, which reads
    the whole value, is not computed again. This loop is the read hot path, so it is
    written flat (and also in C, see ``_speedups.c``).
    """
    model_bytes = model_name.encode("utf-8", "surrogatepass") if model_name is not None else None
    if _speedups is not None:
        return _speedups.decode_many(values, keys, digests, model_bytes, model_name, texts,
                                     verified)
    entries: list[CacheEntry | None] = []
    append = entries.append
    unpack = HEADER.unpack_from
    frombuffer = np.frombuffer
    dtypes = _DTYPE_BY_CODE
    corrupt = 0
    for value, key, digest, known_text in zip(
        values, keys, digests, texts if texts is not None else repeat(None)
    ):
        if value is None:
            append(None)
            continue
        try:
            (magic, version, dtype_code, flags, dim, text_len, model_len, meta_len,
             output_hint, ttl_ms, inserted_at, stored_digest) = unpack(value)
            dtype = dtypes[dtype_code]
            text_start = HEADER_SIZE + dim * dtype.itemsize
            model_start = text_start + text_len
            meta_start = model_start + model_len
            if not (
                stored_digest == digest
                and magic == MAGIC
                and version == FORMAT_VERSION
                and dim
                and meta_start + meta_len + _CRC_SIZE == len(value)
                and (verified or crc32c(value) == _CRC_RESIDUE)
            ):
                raise ValueError
            if model_bytes is None:
                model = value[model_start:meta_start].decode("utf-8", "surrogatepass")
            elif model_len == len(model_bytes) and value.startswith(model_bytes, model_start):
                model = model_name  # type: ignore[assignment]
            else:
                raise ValueError
            if known_text is not None:
                text: Text = known_text
            elif flags & _FLAG_BYTES_TEXT:
                text = value[text_start:model_start]
            else:
                text = value[text_start:model_start].decode("utf-8", "surrogatepass")
            metadata = json.loads(value[meta_start:-_CRC_SIZE]) if meta_len else None
            if metadata is not None and type(metadata) is not dict:
                raise ValueError
        except (struct.error, KeyError, ValueError, RecursionError):  # not a valid entry
            corrupt += 1
            append(None)
            continue
        append(CacheEntry(
            key, text, model, frombuffer(value, dtype, dim, HEADER_SIZE), metadata,
            inserted_at, ttl_ms / 1000 if ttl_ms else None, output_hint,
        ))
    return entries, corrupt


def with_ttl(value: bytes, ttl_ms: int) -> bytes:
    """A record with another TTL in its header (and its CRC made good again)."""
    head = value[:TTL_OFFSET] + ttl_ms.to_bytes(8, "little") + value[TTL_OFFSET + 8:-_CRC_SIZE]
    return head + int(crc32c(head)).to_bytes(_CRC_SIZE, "little")


_EXPIRY = struct.Struct("<Qd")  # TTL ms and inserted_at, at TTL_OFFSET


def intact(value: bytes) -> bool:
    """Whether a stored value's CRC checks out (its other checks are made on every read)."""
    return bool(crc32c(value) == _CRC_RESIDUE)


def expires_at(value: bytes) -> float:
    """When a stored value's entry expires by its header (unix seconds; infinity for no
    TTL). Unchecked: for values that were verified when read or written."""
    if len(value) < HEADER_SIZE:
        return 0.0
    ttl, inserted_at = _EXPIRY.unpack_from(value, TTL_OFFSET)
    return inserted_at + ttl / 1000 if ttl else math.inf


def due(entries: Sequence[CacheEntry | None], now: float, fraction: float) -> list[int]:
    """Indexes of the entries written with a TTL at least ``fraction`` of it before ``now``
    (a read's hits whose TTL may slide; the rest are skipped in C when it is built)."""
    if _speedups is not None:
        return _speedups.due(entries, now, fraction)
    return [i for i, entry in enumerate(entries) if entry is not None and entry.ttl is not None
            and now - entry.inserted_at >= entry.ttl * fraction]


def decode(
    value: bytes, key: str, digest: bytes, model_name: str | None = None
) -> CacheEntry | None:
    """Decode and verify one record; None when it is not a valid entry for ``key``."""
    return decode_many([value], [key], [digest], model_name)[0][0]


if _speedups is not None:
    # The C decoder indexes dtypes by code (reading their item sizes once, here); it fills
    # a CacheEntry's slots itself, in the order __init__ takes them.
    _speedups.configure(
        CacheEntry, _ENTRY_INIT_FIELDS, np.frombuffer,
        tuple(_DTYPE_BY_CODE.get(code) for code in range(max(_DTYPE_BY_CODE) + 1)),
        crc32c, json.loads, _CRC_RESIDUE, FORMAT_VERSION,
    )
