"""The optional C loops give exactly what the Python loops give, on good and damaged input."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embmemo import codec, keys
from embmemo._native import load_speedups
from embmemo.errors import InvalidTypeError
from embmemo.keys import KeyScheme, model_identity

speedups = load_speedups()
needs_speedups = pytest.mark.skipif(speedups is None, reason="embmemo._speedups is not built")

texts = st.one_of(st.text(max_size=120), st.binary(max_size=120))
namespaces = st.text(st.characters(blacklist_categories=("Z", "Cc", "Cs")), min_size=1,
                     max_size=12).filter(lambda s: not any(ch.isspace() for ch in s))


@pytest.fixture
def python_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the pure-Python loops even though the C ones are loaded."""
    monkeypatch.setattr(keys, "_speedups", None)
    monkeypatch.setattr(codec, "_speedups", None)


def python_keys(scheme: KeyScheme, batch: list[str | bytes],
                identity: bytes) -> tuple[list[str], list[bytes]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keys, "_speedups", None)
        return scheme.keys(batch, identity)


def python_decode(*args: object) -> tuple[list[codec.CacheEntry | None], int]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "_speedups", None)
        return codec.decode_many(*args)  # type: ignore[arg-type]


def test_ci_builds_the_speedups() -> None:
    # Everything else here compares C to Python; in CI the C side must be there.
    if os.environ.get("CI", "").lower() == "true" and not os.environ.get("EMBMEMO_NO_SPEEDUPS"):
        assert speedups is not None, "embmemo._speedups did not build (C compiler, libcrypto?)"


@needs_speedups
@settings(max_examples=300, deadline=None)
@given(namespace=namespaces, batch=st.lists(texts, max_size=20), model=st.text(min_size=1))
def test_keys_match_the_python_loop(namespace: str, batch: list[str | bytes], model: str) -> None:
    scheme = KeyScheme(namespace)
    identity = model_identity(model, {"dimensions": 256})
    assert scheme.keys(batch, identity) == python_keys(scheme, batch, identity)
    assert scheme.keys(tuple(batch), identity) == python_keys(scheme, batch, identity)


@needs_speedups
def test_a_text_of_another_type_gets_the_python_error() -> None:
    with pytest.raises(InvalidTypeError, match="text must be str or bytes, got int"):
        KeyScheme("ns").keys(["fine", 3], model_identity("m"))  # type: ignore[list-item]


def _records(batch: list[str | bytes], metadata: dict[str, object] | None,
             dtype: str) -> tuple[list[str], list[bytes], list[bytes]]:
    scheme = KeyScheme("ns")
    batch_keys, digests = scheme.keys(batch, model_identity("m"))
    values = []
    with codec.quiet_float_errors():
        for i, (text, digest) in enumerate(zip(batch, digests)):
            vector, dim = codec.vector_bytes(np.arange(i + 1, dtype=np.float32),
                                             codec.dtype_for(dtype))
            raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
            values.append(codec.encode(digest, isinstance(text, bytes), raw, b"m", vector, dim,
                                       codec.dtype_for(dtype), codec.metadata_json(metadata),
                                       (i % 3) * 1500, 1.25, i))
    return batch_keys, digests, values


def _same(left: tuple[list[codec.CacheEntry | None], int],
          right: tuple[list[codec.CacheEntry | None], int]) -> None:
    assert left[1] == right[1]
    assert [e is None for e in left[0]] == [e is None for e in right[0]]
    for a, b in zip(left[0], right[0]):
        if a is not None and b is not None:
            assert a == b and a.output_hint == b.output_hint
            assert type(a.text) is type(b.text) and a.embedding.dtype == b.embedding.dtype


@needs_speedups
@settings(max_examples=200, deadline=None)
@given(
    batch=st.lists(texts, min_size=1, max_size=8, unique=True),
    metadata=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)),
    dtype=st.sampled_from(list(codec.DTYPES)),
    damage=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 10_000),
                              st.sampled_from(["flip", "truncate", "random", "missing"])),
                    max_size=4),
    junk=st.binary(max_size=120),
    known_texts=st.booleans(),
    check_model=st.booleans(),
)
def test_decode_matches_the_python_loop(
    batch: list[str | bytes], metadata: dict[str, object] | None, dtype: str,
    damage: list[tuple[int, int, str]], junk: bytes, known_texts: bool, check_model: bool,
) -> None:
    batch_keys, digests, good = _records(batch, metadata, dtype)
    values: list[bytes | None] = list(good)
    for index, position, kind in damage:
        index %= len(values)
        value = values[index] or good[index]
        position %= len(value)
        if kind == "flip":
            values[index] = (value[:position] + bytes([value[position] ^ (1 << position % 8)])
                             + value[position + 1:])
        elif kind == "truncate":
            values[index] = value[:position]
        elif kind == "random":
            values[index] = junk
        else:
            values[index] = None
    args = (values, batch_keys, digests, "m" if check_model else None,
            batch if known_texts else None)
    _same(codec.decode_many(*args), python_decode(*args))


@needs_speedups
def test_verified_values_skip_only_the_crc_in_c_and_in_python() -> None:
    batch_keys, digests, values = _records(["a", "b"], None, "float32")
    flipped = values[0][:-1] + bytes([values[0][-1] ^ 1])  # only the CRC trailer is wrong
    args = ([flipped, values[1]], batch_keys, digests, "m", None)
    for verified in (False, True):
        _same(codec.decode_many(*args, verified=verified),
              python_decode(*args, verified))
    assert codec.decode_many(*args)[1] == 1  # unverified: the CRC catches it
    assert codec.decode_many(*args, verified=True)[1] == 0  # trusted: the header still holds
    wrong_digest = ([values[0]], batch_keys[1:], digests[1:], "m", None)
    assert codec.decode_many(*wrong_digest, verified=True) == ([None], 1)
    assert codec.intact(values[0]) and not codec.intact(flipped)


@needs_speedups
def test_decode_checks_the_model_and_the_digest_like_python() -> None:
    batch_keys, digests, values = _records(["a", b"b", "\udc80"], {"k": 1}, "float16")
    for args in [
        (values, batch_keys, digests, "other-model", None),
        (values, batch_keys, digests[::-1], None, None),
        (values, batch_keys, digests, "m", None),
        (values[:2], batch_keys, digests, None, ["a", b"b", "\udc80"]),  # zip: the shortest
    ]:
        _same(codec.decode_many(*args), python_decode(*args))  # type: ignore[arg-type]
    entries, corrupt = codec.decode_many(values, batch_keys, digests, "m", None)
    assert corrupt == 0 and [e.text for e in entries if e] == ["a", b"b", "\udc80"]


@needs_speedups
def test_a_list_metadata_payload_is_corrupt_in_both(python_loops: None) -> None:
    # Hand-made: valid CRC and lengths, but the metadata JSON is a list, not an object.
    batch_keys, digests = KeyScheme("ns").keys(["t"], model_identity("m"))
    value = codec.encode(digests[0], False, b"t", b"m", np.ones(2, "<f4").tobytes(), 2,
                         codec.dtype_for("float32"), b"[1,2]", 0, 1.0)
    python_result = codec.decode_many([value], batch_keys, digests)
    assert python_result[1] == 1
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "_speedups", speedups)
        _same(codec.decode_many([value], batch_keys, digests), python_result)


@needs_speedups
@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.one_of(st.none(), st.tuples(
    st.floats(0, 2e9, allow_nan=False), st.one_of(st.none(), st.floats(0.001, 1e6)))),
    max_size=30), now=st.floats(0, 2.1e9), fraction=st.sampled_from([0.0, 0.25, 1.0]))
def test_due_matches_the_python_loop(rows: list[tuple[float, float | None] | None],
                                     now: float, fraction: float) -> None:
    entries = [None if row is None else codec.CacheEntry(
        "k", "t", "m", np.zeros(1, np.float32), None, row[0], row[1]) for row in rows]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "_speedups", None)
        expected = codec.due(entries, now, fraction)
    assert codec.due(entries, now, fraction) == expected
    assert expected == [i for i, row in enumerate(rows) if row is not None
                        and row[1] is not None and now - row[0] >= row[1] * fraction]


@pytest.fixture(scope="module", params=["asked for", "no OpenSSL headers"])
def builtin_sha256(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The C module built with its own SHA-256: asked for (portable wheels), or because
    OpenSSL's headers are missing (here: a stand-in sha.h that fails to compile), when the
    build retries without OpenSSL."""
    root = Path(__file__).parent.parent
    out = tmp_path_factory.mktemp("builtin-sha256")
    if request.param == "asked for":
        env = {**os.environ, "EMBMEMO_BUILTIN_SHA256": "1"}
    else:
        (out / "include" / "openssl").mkdir(parents=True)
        (out / "include" / "openssl" / "sha.h").write_text('#error "no OpenSSL here"\n')
        env = {**os.environ, "CFLAGS": f"-I{out / 'include'}"}
        env.pop("EMBMEMO_BUILTIN_SHA256", None)
    built = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib",
                            str(out / "lib"), "--build-temp", str(out / "temp")],
                           cwd=root, env=env, capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    if request.param == "no OpenSSL headers":
        assert "building the C loops with the built-in SHA-256" in built.stderr
    path = next((out / "lib" / "embmemo").glob("_speedups*"))
    loader = importlib.machinery.ExtensionFileLoader("_speedups", str(path))
    spec = importlib.util.spec_from_loader("_speedups", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(texts, max_size=10), model=st.text(min_size=1, max_size=300))
def test_the_built_in_sha256_gives_the_same_keys(builtin_sha256: Any,
                                                 batch: list[str | bytes], model: str) -> None:
    assert builtin_sha256.SHA256 == "built in"
    scheme = KeyScheme("ns")
    identity = model_identity(model)  # long models: prefixes over one 64-byte block
    prefix = keys.identity_prefix(identity)
    assert builtin_sha256.keys(prefix, scheme.prefix, batch) == python_keys(scheme, batch,
                                                                            identity)
