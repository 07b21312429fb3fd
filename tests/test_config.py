"""Settings: arguments > EMBMEMO_* > defaults, and the zero-setup embedded default."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from embmemo import ConfigError, EmbeddingsCache, Settings, cached_embedding
from embmemo.config import ENV_VARS, default_url
from embmemo.urls import redact_url

README = Path(__file__).parent.parent / "README.md"


def test_defaults_with_nothing_configured(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    settings = Settings.resolve(env={})
    assert settings.name == "embedcache" and settings.ttl is None
    assert settings.refresh_ttl is True and settings.disable is False
    assert settings.on_error == "compute" and settings.timeout == 1.0
    assert settings.url == f"sqlite:///{str(tmp_path).lstrip('/')}/embmemo/embmemo.sqlite3"


def test_environment_then_arguments() -> None:
    env = {"EMBMEMO_URL": "memory://env", "EMBMEMO_NAME": "envname", "EMBMEMO_TTL": "90",
           "EMBMEMO_REFRESH_TTL": "off", "EMBMEMO_DISABLE": "yes", "EMBMEMO_ON_ERROR": "raise",
           "EMBMEMO_TIMEOUT": "2.5"}
    settings = Settings.resolve(env=env)
    assert (settings.url, settings.name, settings.ttl) == ("memory://env", "envname", 90.0)
    assert not settings.refresh_ttl and settings.disable and settings.on_error == "raise"
    assert settings.timeout == 2.5
    overridden = Settings.resolve(url="memory://arg", name="argname", ttl=5, refresh_ttl=True,
                                  on_error="compute", env=env)
    assert (overridden.url, overridden.name, overridden.ttl) == ("memory://arg", "argname", 5)
    assert overridden.refresh_ttl and overridden.on_error == "compute"
    assert Settings.resolve(env={"EMBMEMO_TTL": "none"}).ttl is None


@pytest.mark.parametrize(
    ("var", "value"),
    [("EMBMEMO_TTL", "-3"), ("EMBMEMO_TTL", "soon"), ("EMBMEMO_REFRESH_TTL", "maybe"),
     ("EMBMEMO_DISABLE", "2"), ("EMBMEMO_ON_ERROR", "ignore"), ("EMBMEMO_TIMEOUT", "0"),
     ("EMBMEMO_URL", "postgres://db"), ("EMBMEMO_NAME", " ")],
)
def test_invalid_variables_name_the_variable_and_value(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.resolve(env={var: value})
    assert var in str(caught.value) and value.strip() in str(caught.value)


def test_cache_and_decorator_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBMEMO_URL", "memory://from-env")
    monkeypatch.setenv("EMBMEMO_NAME", "envns")
    monkeypatch.setenv("EMBMEMO_TTL", "42")
    cache = EmbeddingsCache()
    assert (cache.url, cache.name, cache.ttl) == ("memory://from-env", "envns", 42)

    @cached_embedding(model="m")
    def embed(text: str) -> list[float]:
        return [1.0]

    embed("t")
    assert embed.cache.url == "memory://from-env"
    assert embed.cache.get("t", "m").ttl == 42
    monkeypatch.setenv("EMBMEMO_TTL", "-1")
    with pytest.raises(ConfigError, match="EMBMEMO_TTL"):
        EmbeddingsCache().get("t", "m")  # the environment is read at first use


def test_settings_are_read_at_first_use_not_at_import(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="embmemo")

    @cached_embedding(model="m")  # decorated at import time, as modules do
    def embed(text: str) -> list[float]:
        return [1.0]

    cache = EmbeddingsCache(name="late")
    monkeypatch.setenv("EMBMEMO_URL", "memory://late")  # load_dotenv() in main(), say
    monkeypatch.setenv("EMBMEMO_ON_ERROR", "raise")
    monkeypatch.setenv("EMBMEMO_DISABLE", "0")
    assert embed("t") == [1.0]
    assert embed.cache.url == "memory://late" and cache.url == "memory://late"
    assert "memory://late" in repr(cache)
    embed("t")
    assert [r.getMessage() for r in caplog.records].count(
        "embmemo: cache 'embedcache' uses memory://late") == 1  # said once per cache
    with pytest.raises(ValueError, match="ttl"):
        EmbeddingsCache(ttl=-1)  # what is passed in is still checked at once
    with pytest.raises(ValueError, match="name"):
        EmbeddingsCache(name="has space")


def test_unknown_schemes_list_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"sqlite://.*redis\+cluster://"):
        EmbeddingsCache(url="mongodb://x")
    with pytest.raises(ConfigError, match="scheme"):
        EmbeddingsCache(url="localhost:6379")


def test_redaction() -> None:
    assert redact_url("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert redact_url("redis://pw@h:1") == "redis://***@h:1"
    assert redact_url("rediss://h:1/0?password=pw&db=1") == "rediss://h:1/0?password=***&db=1"
    assert redact_url("memory://") == "memory://"
    assert "pw" not in repr(EmbeddingsCache(url="redis://:pw@localhost:6379/0"))
    settings = Settings.resolve(url="redis://user:pw@localhost:6379/0")
    assert "pw" not in repr(settings) and "pw" not in str(settings)
    assert settings.url.endswith(":pw@localhost:6379/0")  # the real URL stays usable


def test_readme_documents_every_variable() -> None:
    readme = README.read_text()
    for var in ENV_VARS:
        assert f"`{var}`" in readme, var


def test_a_fresh_process_caches_to_the_user_directory_and_another_reads_it(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBMEMO_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    env["PYTHONPATH"] = str(Path(__file__).parent.parent)
    write = ("from embmemo import cached_embedding\n"
             "@cached_embedding(model='m')\n"
             "def embed(texts): return [[float(len(t)), 0.5] for t in texts]\n"
             "print(embed(['persisted', 'abc']), embed.cache.url)\n")
    read = ("from embmemo import EmbeddingsCache, cached_embedding\n"
            "@cached_embedding(model='m')\n"
            "def embed(texts): raise SystemExit('computed again')\n"
            "print(embed(['abc', 'persisted']))\n"
            "print(EmbeddingsCache().get('persisted', 'm').embedding.tolist())\n")
    first = subprocess.run([sys.executable, "-c", write], env=env, capture_output=True,
                           text=True, check=True)
    db = tmp_path / "xdg" / "embmemo" / "embmemo.sqlite3"
    assert str(db).lstrip("/") in first.stdout
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    second = subprocess.run([sys.executable, "-c", read], env=env, capture_output=True,
                            text=True, check=True)
    assert second.stdout.splitlines() == ["[[3.0, 0.5], [9.0, 0.5]]", "[9.0, 0.5]"]
    assert default_url() != f"sqlite:///{db}"  # this process keeps its own test directory


def test_a_missing_backend_dependency_is_a_one_line_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_sqlite(name: str, *args: object, **kwargs: object) -> object:
        if name == "sqlite3":
            raise ImportError("No module named 'sqlite3'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.delitem(sys.modules, "embmemo.backends.sqlite", raising=False)
    monkeypatch.delitem(sys.modules, "sqlite3", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_sqlite)
    with pytest.raises(ConfigError, match=r"sqlite:// backend needs the sqlite3 module") as caught:
        EmbeddingsCache(url="sqlite:////tmp/x.sqlite3").get("t", "m")
    assert "\n" not in str(caught.value)


async def test_a_sync_call_inside_a_running_loop_is_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = EmbeddingsCache(url="memory://in-loop")

    @cached_embedding(model="m", cache=cache)
    def embed(text: str) -> list[float]:
        return [1.0]

    cache.set("t", "m", [1.0])
    cache.get("t", "m")
    cache.mget(["t"], "m")
    embed("t")
    embed("t")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings  # once for the cache, once for the function
    assert "EmbeddingsCache.set was called" in warnings[0] and "await cache.aset(" in warnings[0]
    assert "async def" in warnings[1]
    await cache.aget("t", "m")  # the async twin: no warning
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 2
