"""The public surface: async twins without drift, exports, no unsafe deserialization."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import embmemo
from embmemo import EmbeddingsCache

PURE_METHODS = {"key", "set_ttl", "stats"}  # no I/O, so no async twin


def public_methods() -> dict[str, object]:
    return {
        name: member
        for name, member in inspect.getmembers(EmbeddingsCache, inspect.isfunction)
        if not name.startswith("_")
    }


def twin_name(name: str) -> str:
    return "am" + name[1:] if name.startswith("m") else "a" + name


def test_every_sync_method_has_an_async_twin_with_the_same_parameters() -> None:
    methods = public_methods()
    sync_names = [n for n in methods if n not in PURE_METHODS and not n.startswith("a")]
    assert len(sync_names) >= 16
    for name in sync_names:
        twin = methods.get(twin_name(name))
        assert twin is not None, f"{name} has no async twin {twin_name(name)}"
        assert inspect.iscoroutinefunction(twin), twin_name(name)
        sync_params = list(inspect.signature(methods[name]).parameters.values())  # type: ignore[arg-type]
        async_params = list(inspect.signature(twin).parameters.values())  # type: ignore[arg-type]
        assert sync_params == async_params, name
    assert inspect.iscoroutinefunction(EmbeddingsCache.__aenter__)
    assert inspect.iscoroutinefunction(EmbeddingsCache.__aexit__)


def test_every_async_method_has_a_sync_twin() -> None:
    methods = public_methods()
    for name in methods:
        if inspect.iscoroutinefunction(methods[name]):
            base = name[2:] if name.startswith("am") and "m" + name[2:] in methods else name[1:]
            if name.startswith("am") and "m" + name[2:] in methods:
                base = "m" + name[2:]
            assert base in methods, f"{name} has no sync twin"


def test_all_is_sorted_and_importable() -> None:
    names = [n for n in embmemo.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in embmemo.__all__:
        assert hasattr(embmemo, name)
    assert re.fullmatch(r"\d+\.\d+\.\d+", embmemo.__version__)


def test_no_code_execution_from_stored_data() -> None:
    package = Path(embmemo.__file__).parent
    forbidden = re.compile(
        r"\b(pickle|marshal|shelve|dill|eval|exec)\b\s*[.(]|import (pickle|marshal)"
    )
    for path in package.rglob("*.py"):
        source = path.read_text()
        assert not forbidden.search(source), f"{path} uses unsafe deserialization"
