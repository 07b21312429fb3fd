"""Pure core: key identity and the binary record, property-tested without I/O."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embmemo import codec
from embmemo.errors import InvalidInputError, InvalidTypeError
from embmemo.keys import KeyScheme, UncanonicalValueError, canonical_params, model_identity

SCHEME = KeyScheme("ns")
texts = st.one_of(st.text(max_size=200), st.binary(max_size=200))


def key_of(text: str | bytes, model: str = "m", params: dict[str, object] | None = None) -> str:
    return SCHEME.keys([text], model_identity(model, params))[0][0]


def record(text: str | bytes, vector: np.ndarray, dtype: str = "float32",
           metadata: dict[str, object] | None = None, ttl_ms: int = 0) -> tuple[str, bytes, bytes]:
    keys, digests = SCHEME.keys([text], model_identity("m"))
    tag_is_bytes = isinstance(text, bytes)
    raw_text = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    with codec.quiet_float_errors():
        data, dim = codec.vector_bytes(vector, codec.dtype_for(dtype))
    value = codec.encode(digests[0], tag_is_bytes, raw_text, b"m", data, dim,
                         codec.dtype_for(dtype), codec.metadata_json(metadata), ttl_ms, 1.5)
    return keys[0], digests[0], value


def test_keys_are_stable_across_releases() -> None:
    # Pinned: a change here orphans every stored entry (bump KEY_SCHEMA_VERSION instead).
    keys, digests = KeyScheme("emb").keys(
        ["hello", b"hello", "caf\u00e9 \udc80"],
        model_identity("text-embedding-3-small", {"dimensions": 256}),
    )
    assert keys == [
        "emb:c477715f237a82af3256ce239fbd0c03598bd7dcb8fe24164e6c60871ad2000b",
        "emb:7a7549d6aef0ea54e2021826c29b172e0004d22aa02148d6211cca224d46cbf0",
        "emb:3f94d79d7a6d32666d55af2061869648ddaf31f6ed604058190805bb72b48f5e",
    ]
    assert [d.hex() for d in digests] == [k[4:] for k in keys]


def test_key_shape_and_no_raw_text() -> None:
    key = key_of("secret question")
    assert key.startswith("ns:") and len(key) == 3 + 64
    assert key[3:] == key[3:].lower() and "secret" not in key
    assert SCHEME.digest_of(key) == bytes.fromhex(key[3:])


def test_identity_is_type_tagged_and_length_prefixed() -> None:
    assert key_of("b:c", "a") != key_of("c", "a:b")
    assert key_of(b"abc") != key_of("abc") != key_of("616263")
    assert key_of("x", "m", {"dimensions": 8}) != key_of("x", "m", {"dimensions": 16})
    assert key_of("x", "m", {"dimensions": 8}) != key_of("x", "m", {"dimensions": 8.0})
    assert key_of("x", "m", {"flag": True}) != key_of("x", "m", {"flag": 1})
    assert key_of("x", "m", {}) == key_of("x", "m") == key_of("x", "m", None)
    assert key_of("x", "m", {"a": 1, "b": 2}) == key_of("x", "m", {"b": 2, "a": 1})
    assert canonical_params({"l": [1, 2]}) == canonical_params({"l": (1, 2)})


@given(a=texts, b=texts)
def test_distinct_texts_never_share_a_key(a: str | bytes, b: str | bytes) -> None:
    if a == b and type(a) is type(b):
        assert key_of(a) == key_of(b)
    else:
        assert key_of(a) != key_of(b)


@pytest.mark.parametrize("value", [object(), {1, 2}, b"bytes", float("nan"), {1: "x"}])
def test_uncanonical_params_are_type_errors(value: object) -> None:
    with pytest.raises(UncanonicalValueError):
        model_identity("m", {"p": value})
    assert issubclass(UncanonicalValueError, TypeError)


@pytest.mark.parametrize("bad", ["other:" + "a" * 64, "ns:" + "a" * 63, "ns:" + "g" * 64,
                                 "ns:" + "A" * 64, "ns:" + " a" * 32, 12])
def test_foreign_keys_are_refused(bad: object) -> None:
    with pytest.raises((InvalidInputError, InvalidTypeError)):
        SCHEME.digest_of(bad)


def test_scan_pattern_escapes_glob_characters() -> None:
    assert KeyScheme("a*b").scan_pattern().startswith("a\\*b:[0-9a-f]")
    assert KeyScheme("emb").scan_pattern() == "emb:" + "[0-9a-f]" * 64
    with pytest.raises(InvalidInputError):
        KeyScheme("has space")
    with pytest.raises(InvalidInputError):
        KeyScheme("")


@settings(max_examples=60, deadline=None)
@given(
    dim=st.integers(1, 8192),
    dtype=st.sampled_from(["float16", "float32", "float64"]),
    text=texts,
    metadata=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)),
    ttl_ms=st.integers(0, codec.MAX_TTL_MS),
)
def test_round_trip(dim: int, dtype: str, text: str | bytes,
                    metadata: dict[str, object] | None, ttl_ms: int) -> None:
    vector = np.random.default_rng(dim).standard_normal(dim).astype(np.float32)
    key, digest, value = record(text, vector, dtype, metadata or None, ttl_ms)
    entry = codec.decode(value, key, digest, "m")
    assert entry is not None
    assert entry.embedding.dtype == np.dtype(dtype) and entry.embedding.shape == (dim,)
    np.testing.assert_array_equal(entry.embedding, vector.astype(dtype))
    assert entry.text == text and type(entry.text) is type(text)
    assert entry.metadata == (metadata or None)
    assert entry.ttl == (ttl_ms / 1000 if ttl_ms else None)
    assert int.from_bytes(value[codec.TTL_OFFSET:codec.TTL_OFFSET + 8], "little") == ttl_ms
    assert entry.inserted_at == 1.5 and entry.entry_id == key[3:]
    assert codec.decode(value, key, digest, "other-model") is None


_, _, SAMPLE = record("sample text", np.linspace(-1, 1, 16, dtype=np.float32), metadata={"a": 1})
SAMPLE_KEY, SAMPLE_DIGEST = SCHEME.keys(["sample text"], model_identity("m"))[0][0], \
    SCHEME.keys(["sample text"], model_identity("m"))[1][0]


@given(st.binary(max_size=400))
def test_random_bytes_never_decode(data: bytes) -> None:
    assert codec.decode(data, SAMPLE_KEY, SAMPLE_DIGEST) is None
    assert codec.decode(b"EMBM" + data, SAMPLE_KEY, SAMPLE_DIGEST) is None


@given(st.integers(0, len(SAMPLE) - 1))
def test_truncations_never_decode(length: int) -> None:
    assert codec.decode(SAMPLE[:length], SAMPLE_KEY, SAMPLE_DIGEST) is None


@given(st.lists(st.integers(0, len(SAMPLE) * 8 - 1), min_size=1, max_size=8, unique=True))
def test_bit_flips_never_decode(bits: list[int]) -> None:
    damaged = bytearray(SAMPLE)
    for bit in bits:
        damaged[bit // 8] ^= 1 << (bit % 8)
    assert codec.decode(bytes(damaged), SAMPLE_KEY, SAMPLE_DIGEST) is None


def test_sample_decodes_and_another_keys_value_does_not() -> None:
    assert codec.decode(SAMPLE, SAMPLE_KEY, SAMPLE_DIGEST) is not None
    other_key, other_digest, _ = record("other", np.ones(2, dtype=np.float32))
    assert codec.decode(SAMPLE, other_key, other_digest) is None


def test_record_is_compact() -> None:
    vector = np.zeros(768, dtype=np.float32)
    _, _, value = record("x" * 40, vector)
    assert len(value) == codec.HEADER_SIZE + 768 * 4 + 40 + 1 + 4  # + CRC
    assert codec.HEADER_SIZE % 8 == 0
    _, _, half = record("x" * 40, vector, "float16")
    assert len(half) == codec.HEADER_SIZE + 768 * 2 + 40 + 1 + 4


def test_decoded_embedding_is_a_zero_copy_read_only_view() -> None:
    entry = codec.decode(SAMPLE, SAMPLE_KEY, SAMPLE_DIGEST)
    assert entry is not None and not entry.embedding.flags.writeable
    assert time.time() > entry.inserted_at
