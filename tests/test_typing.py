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

reveal_type(embed(["a"], dimensions=4))
reveal_type(aembed("a"))
reveal_type(Client().embed(["a"]))
reveal_type(embed.cache_info().hit_rate)
embed.cache_clear()
embed(["a"], dimensions="wide")
Client().embed(3)
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
    errors = [line for line in lines if ": error:" in line and "[arg-type]" in line]
    assert len(errors) == 2, out + err
    assert '"dimensions"' in errors[0] and 'expected "int"' in errors[0]
    assert '"list[str]"' in errors[1]
