"""A decorated function keeps its signature for mypy, sync and async, function and method."""

from __future__ import annotations

import os
import subprocess
import sys
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


USER_SCRIPT = '''
from __future__ import annotations
import numpy as np
from embmemo import EmbeddingsCache, cached_embedding

cache = EmbeddingsCache(url="memory://")

@cached_embedding(model="m", cache=cache)
def embed(texts: list[str]) -> list[list[float]]:
    return [[0.0] for _ in texts]

class Client:
    @cached_embedding(model="m", cache=cache)
    def embed(self, texts: list[str]) -> np.ndarray:
        return np.zeros((len(texts), 2))

    @cached_embedding(model="m", cache=cache)
    @classmethod
    def embed_cls(cls, text: str) -> list[float]:
        return [0.0]

@cached_embedding(model="m", cache=cache)
async def aembed(text: str) -> list[float]:
    return [0.0]

async def use() -> float:
    first: list[list[float]] = embed(["a"])
    matrix: np.ndarray = Client().embed(["a"])
    one: list[float] = Client.embed_cls("a")
    query: list[float] = await aembed("q")
    return first[0][0] + float(matrix.sum()) + one[0] + query[0]
'''


def test_a_user_project_elsewhere_type_checks_against_the_installed_package(
    tmp_path: Path,
) -> None:
    """mypy run from another folder sees embmemo through the (editable) install: decorated
    functions keep their types instead of becoming Any."""
    (tmp_path / "user.py").write_text(USER_SCRIPT)
    (tmp_path / "misuse.py").write_text(USER_SCRIPT + '\nwrong: str = embed(["a"])\n')
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}

    def mypy(script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                               script], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300, check=False)

    good = mypy("user.py")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Success" in good.stdout
    bad = mypy("misuse.py")  # and the types are real, not Any
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert '"list[list[float]]"' in bad.stdout and "variable has type \"str\"" in bad.stdout
