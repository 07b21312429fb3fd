"""Canonical request identity -> key digest. Pure: no I/O.

A key is ``{namespace}:{sha256 hex}``. The digest covers, each part length-prefixed so
no two different requests can encode to the same bytes:

* the key-schema version,
* the model identity: the model name plus, when given, a canonical encoding of the
  output-affecting parameters (``dimensions=256`` and friends),
* the content, tagged by type so ``b"abc"`` and ``"abc"`` never share a key.

Raw text never appears in a key name.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping, Sequence

from ._native import load_speedups
from .errors import InvalidInputError, InvalidTypeError

_speedups = load_speedups()

KEY_SCHEMA_VERSION = 1
DIGEST_HEX_LENGTH = 64

Text = str | bytes
"""What can be embedded and cached: text, or raw bytes (for example an image)."""

_DOMAIN = b"embmemo-key\x00"
_TEXT_TAG = b"s"
_BYTES_TAG = b"b"


def _length_prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data


def encode_text(text: Text) -> tuple[bytes, bytes]:
    """Return ``(type tag, content bytes)`` for a text; lone surrogates survive the trip."""
    if isinstance(text, str):
        return _TEXT_TAG, text.encode("utf-8", "surrogatepass")
    if isinstance(text, bytes):
        return _BYTES_TAG, text
    raise InvalidTypeError(f"text must be str or bytes, got {type(text).__name__}")


@functools.lru_cache(maxsize=256)
@functools.lru_cache(maxsize=256)  # every read of a model repeats it
def identity_prefix(identity: bytes) -> bytes:
    """Everything a digest covers before the content: domain, schema version, identity."""
    return _DOMAIN + KEY_SCHEMA_VERSION.to_bytes(2, "big") + _length_prefixed(identity)


def text_digest(prefix: bytes, tag: bytes, content: bytes) -> bytes:
    """The entry digest: SHA-256 of the identity prefix and the tagged, sized content."""
    return hashlib.sha256(prefix + tag + len(content).to_bytes(8, "big") + content).digest()


class UncanonicalValueError(InvalidTypeError):
    """A parameter value has no stable canonical form (so it cannot be part of a key).

    ``parameter`` names the top-level parameter whose value (or part of it) is at fault.
    """

    parameter: str | None = None


def _canonical(value: object, path: str) -> bytes:
    # bool before int: True is an int, but True and 1 must not share a key.
    if value is None:
        return b"N"
    if value is True:
        return b"T"
    if value is False:
        return b"F"
    if isinstance(value, int):
        return b"i" + _length_prefixed(str(int(value)).encode())
    if isinstance(value, float):
        if math.isnan(value):
            raise UncanonicalValueError(f"{path} is NaN, which has no stable canonical form")
        return b"f" + _length_prefixed(repr(float(value)).encode())
    if isinstance(value, str):
        return b"s" + _length_prefixed(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, (list, tuple)):
        parts = [_canonical(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return b"l" + len(parts).to_bytes(8, "big") + b"".join(parts)
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise UncanonicalValueError(f"{path} has a non-str key {key!r}")
        items = sorted(value.items())
        body = b"".join(_length_prefixed(k.encode()) + _canonical(v, f"{path}[{k!r}]")
                        for k, v in items)
        return b"d" + len(items).to_bytes(8, "big") + body
    raise UncanonicalValueError(
        f"{path} is a {type(value).__name__}, which has no stable canonical form "
        "(use str, int, float, bool, None, or lists/tuples/dicts of those)"
    )


def canonical_params(params: Mapping[str, object]) -> bytes:
    """Encode output-affecting parameters canonically (sorted, type-tagged)."""
    for name in params:
        if not isinstance(name, str):
            raise UncanonicalValueError(f"params has a non-str key {name!r}")
    parts = []
    for name, value in sorted(params.items()):
        try:
            parts.append(_length_prefixed(name.encode()) + _canonical(value, f"params[{name!r}]"))
        except UncanonicalValueError as exc:
            exc.parameter = name
            raise
    return b"d" + len(parts).to_bytes(8, "big") + b"".join(parts)


def model_identity(model_name: str, params: Mapping[str, object] | None = None) -> bytes:
    """The model part of a request identity; with no params it is the model name alone."""
    if not params and type(model_name) is str:
        return _model_only_identity(model_name)
    return _model_identity(model_name, params)


@functools.lru_cache(maxsize=256)
def _model_only_identity(model_name: str) -> bytes:
    return _model_identity(model_name, None)


def _model_identity(model_name: str, params: Mapping[str, object] | None) -> bytes:
    if not isinstance(model_name, str):
        raise InvalidTypeError(f"model_name must be a str, got {type(model_name).__name__}")
    if not model_name:
        raise InvalidInputError("model_name must be a non-empty string")
    identity = b"m" + _length_prefixed(model_name.encode("utf-8", "surrogatepass"))
    if params:
        identity += b"p" + _length_prefixed(canonical_params(params))
    return identity


class KeyScheme:
    """Turns (text, model identity) into ``{namespace}:{digest}`` keys for one namespace."""

    __slots__ = ("namespace", "prefix")

    def __init__(self, namespace: str) -> None:
        if not isinstance(namespace, str) or not namespace:
            raise InvalidInputError("name (the key namespace) must be a non-empty string")
        if any(ch.isspace() for ch in namespace):
            raise InvalidInputError(f"name must not contain whitespace, got {namespace!r}")
        self.namespace = namespace
        self.prefix = namespace + ":"

    def keys(self, texts: Sequence[Text], identity: bytes) -> tuple[list[str], list[bytes]]:
        """Keys and raw digests for ``texts`` under one model identity."""
        prefix = identity_prefix(identity)
        if _speedups is not None and isinstance(texts, (list, tuple)):
            computed = _speedups.keys(prefix, self.prefix, texts)
            if computed is not None:  # None: a text of the wrong type, reported below
                return computed
        # One sha256() over one buffer per text: a primed hash object's copy() costs more
        # than the bytes it saves hashing. text_digest is inlined for str: this loop runs
        # once per text of every read.
        sha256 = hashlib.sha256
        str_prefix = prefix + _TEXT_TAG
        digests: list[bytes] = []
        append = digests.append
        for text in texts:
            if type(text) is str:
                content = text.encode("utf-8", "surrogatepass")
                append(sha256(str_prefix + len(content).to_bytes(8, "big") + content).digest())
            else:
                append(text_digest(prefix, *encode_text(text)))
        namespace = self.prefix
        return [namespace + digest.hex() for digest in digests], digests

    def digest_of(self, key: object) -> bytes:
        """The digest a key of this namespace carries; anything else is an input error."""
        if not isinstance(key, str):
            raise InvalidTypeError(f"key must be a str, got {type(key).__name__}")
        hex_part = key[len(self.prefix):]
        if (
            not key.startswith(self.prefix)
            or len(hex_part) != DIGEST_HEX_LENGTH
            or hex_part.lower() != hex_part
        ):
            raise InvalidInputError(
                f"{key!r} is not an entry key of namespace {self.namespace!r} "
                f"(expected '{self.prefix}' followed by {DIGEST_HEX_LENGTH} lowercase hex digits)"
            )
        try:
            digest = bytes.fromhex(hex_part)
        except ValueError:
            digest = b""
        if len(digest) != DIGEST_HEX_LENGTH // 2:
            raise InvalidInputError(f"{key!r} is not an entry key: its digest is not hex")
        return digest

    def lease_key(self, key: str) -> str:
        """Where a cross-process lease on computing ``key``'s entry lives: in the namespace
        (so the ACL rule of the entries grants it), never matched by ``scan_pattern``."""
        return f"{self.prefix}lease:{key[len(self.prefix):]}"

    def scan_pattern(self) -> str:
        """A SCAN MATCH glob that matches this namespace's entry keys and nothing else."""
        escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in self.namespace)
        return escaped + ":" + "[0-9a-f]" * DIGEST_HEX_LENGTH
