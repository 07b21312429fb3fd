"""Backend URLs: checked when a cache is built, and shown only with the password redacted.

Redis URLs are split by hand, not with ``urllib``: real passwords (base64 tokens) hold
unencoded ``/``, ``#``, ``?`` and ``@``, which ``urlsplit`` takes for the path, fragment,
query or host, so the password would leak into what is shown and the host would be
wrong. Here the credentials end at the last ``@`` before the host (for ``unix://``, at
the ``@/`` where the socket path starts), are percent-decoded, and everything else is
checked: host, port range, numeric database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlencode

from .errors import ConfigError

SCHEMES = ("sqlite", "memory", "redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
REDIS_SCHEMES = frozenset(SCHEMES[2:])
DEFAULT_PORT = 6379
LOCAL_URL_OPTIONS = ("max_size",)
"""What the query of a ``sqlite://`` or ``memory://`` URL may set."""


def scheme_of(url: str) -> str:
    """The lower-case scheme of a URL ('' when it has none)."""
    head, found, _ = url.partition("://")
    return head.lower() if found else ""


def _split(url: str) -> tuple[str, str | None, str]:
    """(scheme, credentials or None, what follows them), credentials not decoded."""
    scheme = scheme_of(url)
    rest = url.partition("://")[2]
    if scheme in ("sqlite", "memory") or (scheme == "unix" and rest.startswith("/")):
        return scheme, None, rest  # a path: an '@' in it is no password
    at = rest.rfind("@/") if scheme == "unix" and "@/" in rest else rest.rfind("@")
    if at < 0:
        return scheme, None, rest
    return scheme, rest[:at], rest[at + 1:]


def _redacted_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(key.lower() == "password" for key, _ in pairs):
        return query
    return "&".join(f"{quote(k)}={'***' if k.lower() == 'password' else quote(v)}"
                    for k, v in pairs)


def redact_url(url: str) -> str:
    """The URL with any password (in the credentials or the query) replaced by ``***``."""
    scheme, credentials, rest = _split(url)
    if credentials is not None:
        user, has_password, _ = credentials.partition(":")
        rest = f"{user}:***@{rest}" if has_password else f"***@{rest}"
    address, mark, query = rest.partition("?")
    prefix = url[:len(scheme) + 3] if "://" in url else ""
    return prefix + address + (mark + _redacted_query(query) if mark else "")


@dataclass(frozen=True)
class RedisUrl:
    """A checked ``redis://``, ``rediss://``, ``unix://`` or ``redis[s]+cluster://`` URL."""

    scheme: str
    username: str | None
    password: str | None
    nodes: tuple[tuple[str, int], ...]
    """(host, port) of the server, or of each cluster startup node; empty for unix://."""
    socket_path: str | None
    db: int
    query: str
    """The query string, for redis-py's own options (``ssl_cert_reqs=...``)."""

    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS."""
        return self.scheme.startswith("rediss")

    @property
    def cluster(self) -> bool:
        """Whether this names a Redis Cluster."""
        return self.scheme.endswith("+cluster")

    def for_redis_py(self) -> str:
        """The URL re-encoded for ``redis.from_url`` (credentials percent-encoded)."""
        credentials = ""
        if self.password is not None:
            credentials = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        elif self.username:
            credentials = f"{quote(self.username, safe='')}@"
        options = [(k, v) for k, v in parse_qsl(self.query, keep_blank_values=True) if k != "db"]
        query = "?" + urlencode([*options, ("db", str(self.db))])
        if self.socket_path is not None:
            return f"unix://{credentials}{self.socket_path}{query}"
        host, port = self.nodes[0]
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{credentials}{host}:{port}{query}"


def parse_redis_url(url: str, setting: str = "url") -> RedisUrl:
    """Check a Redis URL; a ``ConfigError`` names ``setting`` and shows the URL redacted."""
    scheme, credentials, rest = _split(url)

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{setting}: {problem} in {redact_url(url)!r}")

    if scheme not in REDIS_SCHEMES:
        raise bad(f"{scheme or 'no'} scheme is not a Redis one")
    username = password = None
    if credentials is not None:
        user, has_password, secret = credentials.partition(":")
        if has_password:
            username, password = unquote(user) or None, unquote(secret)
        else:  # redis://secret@host: a bare password, as redis-py reads it
            password = unquote(user)
    address, _, query = rest.partition("?")
    address = address.partition("#")[0]
    options = dict(parse_qsl(query, keep_blank_values=True))
    if scheme == "unix":
        if not address.startswith("/") or address == "/":
            raise bad("a unix:// URL needs an absolute socket path")
        return RedisUrl(scheme, username, password, (), address,
                        _database(options.pop("db", "0"), bad), query)
    hosts, _, path = address.partition("/")
    if "@" in hosts:
        raise bad("unexpected '@' in the host")
    nodes = tuple(_node(item.strip(), bad) for item in hosts.split(",") if item.strip())
    if not nodes:
        raise bad("a host is missing")
    if scheme.endswith("+cluster"):
        if path.strip("/"):
            raise bad("a cluster URL takes no database (a cluster has only database 0)")
        return RedisUrl(scheme, username, password, nodes, None, 0, query)
    if len(nodes) > 1:
        raise bad(f"several hosts need the {scheme}+cluster:// scheme")
    db = _database(path if path.strip("/") else options.get("db", "0"), bad)
    return RedisUrl(scheme, username, password, nodes, None, db, query)


def _node(item: str, bad: Callable[[str], ConfigError]) -> tuple[str, int]:
    if item.startswith("["):  # [::1]:6379
        host, _, tail = item[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ("" if not tail else None)
    else:
        host, has_port, port_text = item.rpartition(":") if ":" in item else (item, "", "")
        port_text = port_text if has_port else ""
    if not host:
        raise bad(f"a host is missing before {item!r}")
    if port_text is None or (port_text and not port_text.isdigit()):
        raise bad(f"bad port in {item!r}")
    port = int(port_text) if port_text else DEFAULT_PORT
    if not 0 < port < 65536:
        raise bad(f"port {port} is out of range (1-65535)")
    return host, port


def _database(text: str, bad: Callable[[str], ConfigError]) -> int:
    value = text.strip("/")
    if not value.isdigit():
        raise bad(f"the database must be a number, got {value!r}")
    return int(value)


def url_option(url: str, option: str) -> str | None:
    """The value of ``?option=`` in a SQLite or memory:// URL, if given."""
    query = url.partition("?")[2]
    values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == option]
    return values[-1] if values else None


def without_query(url: str) -> str:
    """A SQLite or memory:// URL without its options."""
    return url.partition("?")[0]


def check_url(url: str, setting: str = "url") -> str:
    """Check any backend URL; return its scheme. A ``ConfigError`` names ``setting``."""
    scheme = scheme_of(url)
    if scheme not in SCHEMES:
        raise ConfigError(
            f"{setting}: unsupported backend URL {redact_url(url)!r}: "
            f"the scheme must be one of {', '.join(s + '://' for s in SCHEMES)}"
        )
    if scheme in REDIS_SCHEMES:
        parse_redis_url(url, setting)
    else:
        path, _, query = url.partition("://")[2].partition("?")
        if scheme == "sqlite" and not path.lstrip("/").strip():
            raise ConfigError(f"{setting}: a SQLite URL looks like sqlite:///path/to/file, "
                              f"got {url!r}")
        unknown = sorted({k for k, _ in parse_qsl(query, keep_blank_values=True)}
                         - set(LOCAL_URL_OPTIONS))
        if unknown:
            raise ConfigError(f"{setting}: a {scheme}:// URL takes only "
                              f"{', '.join(f'?{o}=' for o in LOCAL_URL_OPTIONS)}; unknown "
                              f"option(s) {', '.join(unknown)} in {url!r}")
    return scheme
