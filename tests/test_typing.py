"""A decorated function keeps its signature for mypy, sync and async, function and method."""

from __future__ import annotations

import textwrap
from pathlib import Path

from mypy import api

SNIPPET = '''
from __future__ import annotations
import numpy as np
from embmemo import EmbeddingsCache, cached_embedding

cache = EmbeddingsCache(url="memory://")

@cached_embedding(model="m", cache=cache)
def embed(texts: list[str], dimensions: int = 8) -> list[list[float]]:
    return [[0.0] * dimensions for _ in texts]

@cached_embedding(model="m", cache=cache)
async def aembed(text: str) -> np.ndarray:
    return np.zeros(3)

class Client:
    @cached_embedding(model=lambda self: self.name, cache=cache)
    def embed(self, texts: list[str]) -> list[list[float]]:
        return [[0.0] for _ in texts]
    name = "m"

    @cached_embedding(model="m", cache=cache)
    @classmethod
    def embed_cls(cls, text: str, dimensions: int = 3) -> list[float]:
        return [0.0] * dimensions

reveal_type(embed(["a"], dimensions=4))
reveal_type(aembed("a"))
reveal_type(Client().embed(["a"]))
reveal_type(embed.cache_info().hit_rate)
reveal_type(Client.embed_cls("a"))
reveal_type(Client().embed_cls("a", dimensions=2))
reveal_type(Client.embed_cls.cache_info().hits)
embed.cache_clear()
embed(["a"], dimensions="wide")
Client().embed(3)
Client.embed_cls(3)
@cached_embedding
def bare(texts: list[str]) -> list[list[float]]:
    return []
'''


def test_signatures_survive_decoration(tmp_path: Path) -> None:
    source = tmp_path / "typed_use.py"
    source.write_text(textwrap.dedent(SNIPPET))
    out, err, _ = api.run([str(source), "--strict", "--no-incremental",
                                "--cache-dir", str(tmp_path / ".mypy")])
    lines = out.splitlines()
    revealed = [line.split("Revealed type is ")[1] for line in lines if "Revealed type" in line]
    revealed = [r.replace("builtins.", "") for r in revealed]
    assert revealed[0] == '"list[list[float]]"'
    assert "Coroutine" in revealed[1] and "ndarray" in revealed[1]
    assert revealed[2] == '"list[list[float]]"'
    assert revealed[3] == '"float"'
    assert revealed[4] == revealed[5] == '"list[float]"'  # cls is bound, also via an instance
    assert revealed[6] == '"int"'
    errors = [line for line in lines if ": error:" in line and "[arg-type]" in line]
    assert not [line for line in lines if "[call-arg]" in line], out + err
    assert len(errors) == 4, out + err
    assert '"dimensions"' in errors[0] and 'expected "int"' in errors[0]
    assert '"list[str]"' in errors[1]
    assert 'expected "str"' in errors[2]  # the classmethod's text, not its cls
    assert '"cached_embedding"' in errors[3]  # the bare decorator
