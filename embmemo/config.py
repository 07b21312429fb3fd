"""Settings: arguments > ``EMBMEMO_*`` environment > defaults, resolved in one place.

``EmbeddingsCache``, ``@cached_embedding`` and the CLI all call ``Settings.resolve``,
so a variable means the same thing everywhere.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from .errors import ConfigError, InvalidInputError, InvalidTypeError
from .keys import KeyScheme
from .urls import REDIS_SCHEMES, check_url, redact_url, scheme_of, url_option

DEFAULT_NAME = "embedcache"
DEFAULT_TIMEOUT = 1.0
MAX_TTL_SECONDS = 2**47 / 1000  # codec.MAX_TTL_MS
ON_ERROR_CHOICES = ("compute", "raise")

ENV_VARS: dict[str, str] = {
    "EMBMEMO_URL": "Backend URL (see Backends). Default: the embedded SQLite file.",
    "EMBMEMO_NAME": f"Key namespace. Default: {DEFAULT_NAME}.",
    "EMBMEMO_TTL": "Default time to live in seconds; empty or 'none' for no expiry.",
    "EMBMEMO_REFRESH_TTL": "1/0: reads slide the TTL of hits. Default: 1.",
    "EMBMEMO_DISABLE": "1/0: the decorator calls straight through, caching nothing.",
    "EMBMEMO_ON_ERROR": "compute (fail open) or raise, for decorated functions.",
    "EMBMEMO_TIMEOUT": f"Connect and read timeout in seconds. Default: {DEFAULT_TIMEOUT}.",
    "EMBMEMO_MAX_SIZE": "Size limit of a SQLite or memory:// cache (bytes, or '512MiB'); "
                        "'none' for no limit. Default: 1GiB for the embedded default file, "
                        "none otherwise.",
    "EMBMEMO_COORDINATE": "1/0: processes sharing the backend compute each missing text "
                          "once (leases in the backend). Default: 0.",
    "EMBMEMO_LOCAL_CACHE": "Bytes of entries kept in process in front of the backend "
                           "('32MiB'); 0 turns it off. Default: 32MiB.",
}

DEFAULT_MAX_SIZE = 1 << 30
"""The embedded default file's limit: diskcache's default too, about 270,000 768-d float32
entries, and small next to the disk of any machine that runs a model."""
DEFAULT_LOCAL_CACHE = 32 << 20
"""About 8,000 768-d float32 entries in process: the hot set of a query workload, for less
memory than one loaded tokenizer."""

_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6,
               "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 1 << 10,
               "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def ttl_seconds(value: object) -> float | None:
    """Validate a TTL in seconds: None (no expiry) or a positive finite number."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(
            f"ttl must be a positive number of seconds or None, got {value!r}"
        )
    if not math.isfinite(value) or value <= 0 or value > MAX_TTL_SECONDS:
        raise InvalidInputError(
            f"ttl must be a positive number of seconds up to {MAX_TTL_SECONDS:.0f}, got {value!r}"
        )
    return float(value)


def parse_size(value: object, setting: str) -> int:
    """A size in bytes from an int or a string such as ``"512MiB"``, ``"1.5GB"``, ``"0"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError(f"{setting} must not be negative, got {value!r}")
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.lower())
        if match and match.group(2) in _SIZE_UNITS:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    raise ConfigError(f"{setting} must be a number of bytes or a size such as '512MiB' "
                      f"or '2GB', got {value!r}")


def _max_size(value: object, setting: str) -> int | None:
    """A size limit: None for 'none' (no limit); zero is refused (it would keep nothing)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    size = parse_size(value, setting)
    if size == 0:
        raise ConfigError(f"{setting} must be positive (or 'none' for no limit), got {value!r}")
    return size


def ttl_ms(seconds: float | None) -> int | None:
    """Seconds to whole milliseconds, at least 1, for SET PX and the record header."""
    return None if seconds is None else max(1, round(seconds * 1000))


def user_cache_dir() -> Path:
    """The platform's per-user cache directory for embmemo (``platformdirs``: on Linux
    ``$XDG_CACHE_HOME/embmemo``, else ``~/.cache/embmemo``)."""
    return platformdirs.user_cache_path("embmemo", appauthor=False)


def default_url() -> str:
    """The embedded SQLite file in the user cache directory."""
    return "sqlite:///" + str(user_cache_dir() / "embmemo.sqlite3").lstrip("/")


def _env_bool(env: Mapping[str, str], var: str, default: bool) -> bool:
    raw = env.get(var)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{var} must be 1/0, true/false, yes/no or on/off, got {raw!r}")


def _env_ttl(env: Mapping[str, str]) -> float | None:
    raw = env.get("EMBMEMO_TTL")
    if raw is None or raw.strip().lower() in ("", "none"):
        return None
    try:
        return ttl_seconds(float(raw))
    except (ValueError, InvalidInputError):
        raise ConfigError(
            f"EMBMEMO_TTL must be a positive number of seconds or 'none', got {raw!r}"
        ) from None


def _env_timeout(env: Mapping[str, str]) -> float:
    raw = env.get("EMBMEMO_TIMEOUT")
    if raw is None or not raw.strip():
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"EMBMEMO_TIMEOUT must be a positive number of seconds, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Resolved configuration shared by the cache, the decorator and the CLI."""

    url: str
    name: str = DEFAULT_NAME
    ttl: float | None = None
    refresh_ttl: bool = True
    disable: bool = False
    on_error: str = "compute"
    timeout: float = DEFAULT_TIMEOUT
    max_size: int | None = None
    """Bytes a SQLite or memory:// cache may hold (None: no limit)."""
    coordinate: bool = False
    """Processes sharing the backend compute each missing text once (leases)."""
    local_cache: int | None = None
    """Bytes of entries kept in process in front of the backend (0: none; None: not
    set, so ``DEFAULT_LOCAL_CACHE`` where the backend can keep a tier coherent)."""

    @classmethod
    def resolve(
        cls,
        *,
        url: str | None = None,
        name: str | None = None,
        ttl: float | None = None,
        refresh_ttl: bool | None = None,
        on_error: str | None = None,
        max_size: int | str | None = None,
        local_cache: int | str | None = None,
        coordinate: bool | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """Arguments win; what is None comes from ``EMBMEMO_*``, then the defaults."""
        env = os.environ if env is None else env
        if url is not None and not isinstance(url, str):
            raise InvalidTypeError(f"url must be a str, got {type(url).__name__}")
        resolved_url = url or env.get("EMBMEMO_URL") or default_url()
        check_url(resolved_url, "url" if url else "EMBMEMO_URL")
        env_name = env.get("EMBMEMO_NAME")
        if name is None and env_name is not None and not env_name.strip():
            raise ConfigError(f"EMBMEMO_NAME must be a non-empty namespace, got {env_name!r}")
        resolved_on_error = on_error or env.get("EMBMEMO_ON_ERROR", "compute").strip().lower()
        if resolved_on_error not in ON_ERROR_CHOICES:
            source = "on_error" if on_error else "EMBMEMO_ON_ERROR"
            raise ConfigError(
                f"{source} must be one of {', '.join(ON_ERROR_CHOICES)}, "
                f"got {on_error or env.get('EMBMEMO_ON_ERROR')!r}"
            )
        return cls(
            url=resolved_url,
            max_size=_resolve_max_size(max_size, resolved_url, url or env.get("EMBMEMO_URL"),
                                       env),
            coordinate=(coordinate if coordinate is not None
                        else _env_bool(env, "EMBMEMO_COORDINATE", False)),
            local_cache=parse_size(local_cache, "local_cache") if local_cache is not None
            else parse_size(env["EMBMEMO_LOCAL_CACHE"], "EMBMEMO_LOCAL_CACHE")
            if env.get("EMBMEMO_LOCAL_CACHE", "").strip() else None,
            name=name if name is not None else (env_name or DEFAULT_NAME),
            ttl=ttl_seconds(ttl) if ttl is not None else _env_ttl(env),
            refresh_ttl=(
                refresh_ttl if refresh_ttl is not None
                else _env_bool(env, "EMBMEMO_REFRESH_TTL", True)
            ),
            disable=_env_bool(env, "EMBMEMO_DISABLE", False),
            on_error=resolved_on_error,
            timeout=_env_timeout(env),
        )

    @classmethod
    def deferred(cls, **arguments: Any) -> Callable[[], Settings]:
        """Check the arguments now; read the environment (and fill in the defaults) when
        the returned function is called, at first use.

        So a variable set after a cache or a decorated function was built, by
        ``load_dotenv()`` in ``main()`` say, still counts.
        """
        checked = cls.resolve(env={}, **arguments)  # the explicit values, validated
        KeyScheme(checked.name)
        return functools.partial(cls.resolve, **arguments)

    @property
    def redacted_url(self) -> str:
        """The URL, safe to show."""
        return redact_url(self.url)

    def __repr__(self) -> str:  # the dataclass repr would show the password
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in
                           ("name", "ttl", "refresh_ttl", "disable", "on_error", "timeout",
                            "max_size", "local_cache", "coordinate"))
        return f"Settings(url={self.redacted_url!r}, {fields})"


def _resolve_max_size(argument: object, url: str, given_url: str | None,
                      env: Mapping[str, str]) -> int | None:
    """``max_size=`` > ``?max_size=`` in the URL > ``EMBMEMO_MAX_SIZE`` > the default (a
    limit for the embedded default file only: an explicit file is the user's to size)."""
    in_url = url_option(url, "max_size")
    if argument is not None:
        size, setting = _max_size(argument, "max_size"), "max_size"
    elif in_url is not None:
        size, setting = _max_size(in_url, "?max_size= in the URL"), "?max_size="
    elif "EMBMEMO_MAX_SIZE" in env:
        size = _max_size(env["EMBMEMO_MAX_SIZE"], "EMBMEMO_MAX_SIZE")
        setting = "EMBMEMO_MAX_SIZE"
    else:
        return DEFAULT_MAX_SIZE if given_url is None else None
    if size is not None and scheme_of(url) in REDIS_SCHEMES:
        raise ConfigError(
            f"{setting} limits a SQLite or memory:// cache; Redis limits itself: set "
            "maxmemory on the server, with maxmemory-policy allkeys-lru for a server that "
            "holds only caches, volatile-lru for one that also holds data without a TTL")
    return size
