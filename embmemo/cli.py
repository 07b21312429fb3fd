"""The ``embmemo`` command: ``stats``, ``clear``, ``warm`` and ``bench``.

It reads the same settings as the library (``EMBMEMO_*``), which ``--url`` and ``--name``
override. Every failure is one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NoReturn, TextIO

from . import __version__, codec
from .cache import EmbeddingsCache
from .errors import EmbmemoError
from .tier import storage_size
from .urls import redact_url


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"embmemo: error: {message} (see embmemo --help)\n")


def _ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _dtypes(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [v for v in values if v not in codec.DTYPES]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"dtypes must be among {', '.join(codec.DTYPES)}")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI)."""
    parser = _Parser(prog="embmemo", description="Inspect, fill and measure an embmemo cache.")
    parser.add_argument("--version", action="version", version=f"embmemo {__version__}")
    parser.add_argument("--url", help="backend URL (default: EMBMEMO_URL, else the embedded "
                                      "SQLite file)")
    parser.add_argument("--name", help="key namespace (default: EMBMEMO_NAME, else embedcache)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    commands.add_parser("stats", help="entries, bytes, TTLs and models in the namespace")
    commands.add_parser("info", help="versions, the backend in use, C loops, extras")

    clear = commands.add_parser("clear", help="delete every entry of the namespace")
    clear.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    warm = commands.add_parser("warm", help="embed a corpus into the cache (misses only)")
    warm.add_argument("file", type=Path, help="one text per line, or JSONL with --field")
    warm.add_argument("--model", required=True, help="sentence-transformers model name or path")
    warm.add_argument("--model-name", help="the name entries are stored under (default: "
                                           "--model; give the hub name for a local path)")
    warm.add_argument("--field", help="read JSON Lines and embed this field of each object")
    warm.add_argument("--batch-size", type=int, default=256, help="texts per model call")
    warm.add_argument("--device", help="cpu, cuda, ... (default: sentence-transformers')")

    copy = commands.add_parser("copy", help="copy a namespace's entries to another backend "
                                            "(resumable)")
    copy.add_argument("source", help="backend URL to copy from")
    copy.add_argument("dest", help="backend URL to copy to")
    copy.add_argument("--dest-name", help="namespace in the destination (default: --name)")

    imported = commands.add_parser("import-redisvl",
                                   help="store a RedisVL EmbeddingsCache's entries in embmemo")
    imported.add_argument("--from", dest="source", required=True,
                          help="Redis URL of the RedisVL cache")
    imported.add_argument("--to", dest="dest",
                          help="backend URL to store them in (default: --url, EMBMEMO_URL...)")
    imported.add_argument("--dest-name", help="namespace in embmemo (default: --name)")

    bench = commands.add_parser("bench", help="embmemo next to raw redis-py and sqlite3")
    bench.add_argument("--dims", type=_ints, default=[384, 768, 1536])
    bench.add_argument("--batch-sizes", type=_ints, default=[1, 100, 1000, 10000])
    bench.add_argument("--dtypes", type=_dtypes, default=["float32", "float16"])
    bench.add_argument("--repeat", type=int, default=15, help="alternations per case")
    bench.add_argument("--quick", action="store_true",
                       help="tiny sizes, two repetitions: proves it runs")
    bench.add_argument("--no-sqlite", action="store_true", help="skip the SQLite section")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        handler = {"stats": _stats, "info": _info, "clear": _clear, "warm": _warm, "copy": _copy,
                   "import-redisvl": _import_redisvl, "bench": _bench}
        return handler[args.command](args)
    except (EmbmemoError, OSError, ValueError) as exc:
        print(f"embmemo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("embmemo: interrupted", file=sys.stderr)
        return 130


def _cache(args: argparse.Namespace) -> EmbeddingsCache:
    return EmbeddingsCache(name=args.name, url=args.url)


def _stats(args: argparse.Namespace) -> int:
    cache = _cache(args)
    count = stored_bytes = 0
    ttls: list[float] = []
    forever = 0
    models: Counter[str] = Counter()
    for entry, value_bytes in cache.store.entries():
        count += 1
        stored_bytes += value_bytes
        models[entry.model_name] += 1
        if entry.ttl is None:
            forever += 1
        else:
            ttls.append(entry.ttl)
    print(f"backend:   {cache.url}")
    print(f"namespace: {cache.name}")
    print(f"entries:   {count}")
    print(f"bytes:     {human_bytes(stored_bytes)} (values only)")
    size = storage_size(cache.store.backend())
    if size is not None:  # local storage: what the whole file (or store) holds
        limit = "no limit" if size.limit is None else f"limit {human_bytes(size.limit)}"
        print(f"storage:   {human_bytes(size.used)} of all namespaces; {limit}")
    if ttls:
        print(f"ttl:       min {min(ttls):g}s, median {statistics.median(ttls):g}s, "
              f"max {max(ttls):g}s; {forever} without expiry")
    else:
        print(f"ttl:       {forever} without expiry")
    for model, n in models.most_common():
        print(f"model:     {model} ({n})")
    return 0


_EXTRAS = ("hiredis", "sentence-transformers", "torch", "langchain-core", "llama-index-core",
           "openai", "redisvl")


def _info(args: argparse.Namespace) -> int:
    import platform
    from importlib import metadata

    from ._native import speedups_status

    cache = _cache(args)
    print(f"embmemo:   {__version__}")
    print(f"python:    {platform.python_version()} ({sys.executable})")
    print(f"backend:   {cache.url}")
    print(f"namespace: {cache.name}")
    backend = cache.store.backend()
    try:
        server = backend.server_version()  # type: ignore[attr-defined]
    except EmbmemoError as exc:
        server = f"not reachable: {exc}"
    print(f"server:    {server}")
    print(f"C loops:   {speedups_status()}")
    for name in _EXTRAS:
        try:
            print(f"installed: {name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return 0


def _clear(args: argparse.Namespace, stdin: TextIO = sys.stdin) -> int:
    cache = _cache(args)
    if not args.yes:
        if not stdin.isatty():
            print("embmemo: error: clear needs --yes when not run interactively",
                  file=sys.stderr)
            return 1
        answer = input(f"Delete every entry of namespace {cache.name!r} in {cache.url}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    backend, scheme = cache.store.backend(), cache.store.scheme
    keys = backend.scan_keys(cache.name, scheme.scan_pattern())
    deleted = 0
    with _bar(len(keys), "clear", "entry") as bar:
        for start in range(0, len(keys), 1000):
            deleted += backend.delete_many(keys[start:start + 1000])
            bar(min(1000, len(keys) - start))
    deleted += cache.clear()  # what was written meanwhile
    print(f"deleted {deleted} entries from {cache.name!r}")
    return 0


def _corpus(path: Path, field: str | None) -> list[str]:
    texts: list[str] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if field is None:
                texts.append(line)
                continue
            try:
                value = json.loads(line)[field]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(
                    f"{path}:{number}: not a JSON object with a {field!r} field") from None
            if not isinstance(value, str):
                raise ValueError(f"{path}:{number}: field {field!r} is not a string")
            texts.append(value)
    return texts


def _warm(args: argparse.Namespace) -> int:
    from .vectorizers import HFTextVectorizer

    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    field = args.field
    if field is None and args.file.suffix.lower() in (".jsonl", ".ndjson"):
        field = _only_text_field(args.file)
    texts = list(dict.fromkeys(_corpus(args.file, field)))
    cache = _cache(args)
    vectorizer = HFTextVectorizer(args.model, model_name=args.model_name, cache=cache,
                                  device=args.device)
    if not all(cache.mexists(texts, vectorizer.model)):
        vectorizer.load()  # before the bar, so a model that cannot load is a clean error
    computed = 0
    with _bar(len(texts), "warm", "text") as bar:
        for start in range(0, len(texts), args.batch_size):
            batch = texts[start:start + args.batch_size]
            there = cache.mexists(batch, vectorizer.model)
            missing = [text for text, cached in zip(batch, there) if not cached]
            if missing:
                vectorizer.embed_many(missing, batch_size=min(len(missing), 64))
                computed += len(missing)
            bar(len(batch))
    print(f"{len(texts)} distinct texts: {computed} embedded, {len(texts) - computed} "
          f"already cached (model {vectorizer.model}, namespace {cache.name!r})")
    return 0


def _only_text_field(path: Path) -> str:
    """The field to embed of a JSON Lines file given without --field: its only text one."""
    with path.open(encoding="utf-8") as lines:
        first = next((line for line in lines if line.strip()), "{}")
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        raise ValueError(f"{path} is not JSON Lines: its first line is not JSON") from None
    fields = sorted(k for k, v in record.items() if isinstance(v, str)) if isinstance(
        record, dict) else []
    if len(fields) != 1:
        raise ValueError(f"{path} is JSON Lines: pass --field to say what to embed (its text "
                         f"fields: {', '.join(fields) or 'none'})")
    field: str = fields[0]
    print(f"warm: embedding the field {field!r} of each line (its only text field; "
          "--field chooses another)", file=sys.stderr)
    return field


@contextmanager
def _bar(total: int, label: str, unit: str) -> Iterator[Callable[[int], object]]:
    """A progress bar on stderr: tqdm's when it is installed, else a line of our own.
    Yields the function that advances it."""
    try:
        from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        tqdm = None
    if tqdm is not None:
        with tqdm(total=total, desc=label, unit=unit, file=sys.stderr) as bar:
            yield bar.update
        return
    done = [0]
    started = time.monotonic()

    def advance(count: int) -> None:
        done[0] += count
        rate = done[0] / max(time.monotonic() - started, 1e-9)
        sys.stderr.write(f"\r{label}: {done[0]}/{total} {unit}s, {rate:.0f}/s")
        sys.stderr.flush()

    yield advance
    sys.stderr.write("\n")


def human_bytes(size: float) -> str:
    """1536 -> "1.5 KiB"."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@contextmanager
def _progress_of(label: str) -> Iterator[Callable[[int, int], None]]:
    """A bar for an operation that reports (done, total) as it goes."""
    with ExitStack() as stack:
        state: dict[str, Any] = {"done": 0}

        def progress(done: int, total: int) -> None:
            if "bar" not in state:
                state["bar"] = stack.enter_context(_bar(total, label, "entry"))
            state["bar"](done - state["done"])
            state["done"] = done

        yield progress


def _copy(args: argparse.Namespace) -> int:
    from .migrate import copy

    with _progress_of("copy") as progress:
        report = copy(args.source, args.dest, name=args.name, dest_name=args.dest_name,
                      progress=progress)
    print(f"copied {report.copied}, already there {report.skipped}, corrupt (not copied) "
          f"{report.corrupt}, expired meanwhile {report.expired}")
    return 0


def _import_redisvl(args: argparse.Namespace) -> int:
    from .migrate import import_redisvl

    name = args.name or "embedcache"
    dest = EmbeddingsCache(name=args.dest_name or name, url=args.dest or args.url)
    with _progress_of("import") as progress:
        report = import_redisvl(args.source, dest, name=name, progress=progress)
    print(f"imported {report.imported}, already there {report.skipped}, without their text "
          f"(cannot be keyed) {report.without_text}, not RedisVL entries {report.invalid}, "
          f"expired meanwhile {report.expired}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from . import bench

    options = bench.Options(args.dims, args.batch_sizes, args.dtypes, args.repeat)
    if args.quick:
        options = bench.Options((8,), (1, 10), ("float32",), 2)

    def progress(message: str) -> None:
        sys.stderr.write(f"\rbench: {message:<60}")
        sys.stderr.flush()

    rows: list[bench.Row] = []
    with _bench_server(args.url) as url:
        if url is not None:
            rows.extend(bench.RedisBench(url, options, progress).run())
        if not args.no_sqlite:
            rows.extend(bench.sqlite_rows(options, progress))
    sys.stderr.write("\r" + " " * 70 + "\r")
    if args.json:
        print(json.dumps({"machine": bench.machine(), "redis_url": url and redact_url(url),
                          "rows": [row.as_dict() for row in rows]}, indent=2))
    else:
        machine = bench.machine()
        print("; ".join(f"{k} {v}" for k, v in machine.items()))
        bench.print_table(rows)
    return 0


@contextmanager
def _bench_server(url: str | None) -> Iterator[str | None]:
    """The Redis to measure: ``--url``, else a private redis-server, else none (SQLite only)."""
    from ._local_redis import LocalRedisServer, redis_server_binary

    if url is not None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("bench --url must be a redis://, rediss:// or unix:// URL")
        yield url
        return
    binary = redis_server_binary()
    if binary is None:
        yield None
        return
    with LocalRedisServer(binary) as server:
        yield server.url


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
