"""Helpers for the reliability tests: servers broken on purpose, a fake model, TLS files."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import multiprocessing
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import redis
from servers import RedisServer, free_port, redis_server_binary

DIM = 8


def vector_for(text: str | bytes, dim: int = DIM) -> np.ndarray:
    """A deterministic stand-in for a model: distinct texts give distinct vectors."""
    data = text.encode() if isinstance(text, str) else b"b" + text
    seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
    return np.random.default_rng(seed).random(dim, dtype=np.float32)


class Model:
    """A fake embed function's bookkeeping: how often each text was computed."""

    def __init__(self) -> None:
        self.computed: Counter[str | bytes] = Counter()
        self.lock = threading.Lock()

    def compute(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            self.computed.update(texts)
        return np.stack([vector_for(t) for t in texts])

    @property
    def calls(self) -> int:
        return sum(self.computed.values())


@contextmanager
def running(*extra: str, **kwargs: Any) -> Iterator[RedisServer]:
    """A private redis-server, always stopped (and SIGCONT-ed) afterwards."""
    server = RedisServer(*extra, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()


def reports_of(target: Callable[..., None], args: list[tuple[Any, ...]],
               timeout: float = 120) -> list[Any]:
    """Run ``target(*each, queue)`` in a spawned process per ``each`` of ``args``; what
    each put on the queue, in the order they finished (stragglers are killed)."""
    spawn = multiprocessing.get_context("spawn")
    out = spawn.Queue()
    procs = [spawn.Process(target=target, args=(*each, out)) for each in args]
    for proc in procs:
        proc.start()
    try:
        return [out.get(timeout=timeout) for _ in procs]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


@contextmanager
def paused(server: RedisServer) -> Iterator[None]:
    """SIGSTOP the server for the block; SIGCONT it whatever happens."""
    server.pause()
    try:
        yield
    finally:
        server.resume()


def elapsed(action: Callable[[], object]) -> tuple[float, BaseException | None]:
    """Seconds ``action`` took and the exception it raised, if any."""
    started = time.monotonic()
    try:
        action()
    except BaseException as exc:  # the caller inspects it
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0,
               interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def in_forked_child(work: Callable[[], bool]) -> int:
    """Run ``work`` in a forked child; its exit status (0: passed, 1: failed, 2: raised)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 2
        try:
            signal.alarm(20)  # a hung child dies instead of hanging the parent
            status = 0 if work() else 1
        except BaseException:  # the parent sees status 2
            status = 2
        finally:
            os._exit(status)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child hung")


def client_count(raw: redis.Redis) -> int:
    """Connections the server has open, not counting ``raw``'s own."""
    return len(raw.client_list()) - 1


# -- TLS ---------------------------------------------------------------------------------


def _candidate_binaries() -> list[str]:
    found = [redis_server_binary()]
    directories = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]
    for directory in directories:
        path = os.path.join(directory, "redis-server")
        if os.access(path, os.X_OK) and not _is_shell_shim(path):
            found.append(path)
    unique: list[str] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def _is_shell_shim(path: str) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"#!"


def make_tls_files(directory: Path) -> dict[str, str]:
    """A CA, a server cert for 127.0.0.1/localhost, one for another name, a foreign CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> str:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return str(path)

    def write_cert(cert: x509.Certificate, path: Path) -> str:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return str(path)

    def ca(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(name(common)).issuer_name(name(common))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def leaf(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
             names: list[x509.GeneralName]) -> tuple[ec.EllipticCurvePrivateKey,
                                                     x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(name("embmemo test server"))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return key, cert

    ca_key, ca_cert = ca("embmemo test CA")
    _, foreign_cert = ca("some other CA")
    server_key, server_cert = leaf(ca_key, ca_cert, [
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    other_key, other_cert = leaf(ca_key, ca_cert, [x509.DNSName("other.example")])
    return {
        "ca": write_cert(ca_cert, directory / "ca.pem"),
        "foreign_ca": write_cert(foreign_cert, directory / "foreign-ca.pem"),
        "cert": write_cert(server_cert, directory / "server.pem"),
        "key": write_key(server_key, directory / "server.key"),
        "other_cert": write_cert(other_cert, directory / "other.pem"),
        "other_key": write_key(other_key, directory / "other.key"),
    }


class TLSRedisServer(RedisServer):
    """A redis-server that listens only on a TLS port."""

    def __init__(self, binary: str, cert: str, key: str, ca: str,
                 check_hostname: bool = True) -> None:
        super().__init__()
        self.binary = binary
        self.tls = (cert, key, ca)
        self.check_hostname = check_hostname

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        args = super().args()
        args[0] = self.binary
        port = args.index("--port")
        args[port + 1] = "0"
        cert, key, ca = self.tls
        return [*args, "--tls-port", str(self.port), "--tls-cert-file", cert,
                "--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, ssl=True,
                           ssl_ca_certs=self.tls[2], ssl_check_hostname=self.check_hostname,
                           **kwargs)  # type: ignore[arg-type]


def tls_binary(files: dict[str, str]) -> str | None:
    """The first redis-server build that serves TLS, or None."""
    for binary in _candidate_binaries():
        probe = TLSRedisServer(binary, files["cert"], files["key"], files["ca"])
        try:
            probe.start(timeout=5)
        except (RuntimeError, OSError, redis.RedisError):
            continue
        finally:
            probe.stop()
        return binary
    return None


def redis_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                         timeout=10).stdout
    version = out.split("v=", 1)[1].split()[0]
    return tuple(int(p) for p in version.split("."))


__all__ = ["DIM", "Model", "RedisServer", "TLSRedisServer", "client_count", "elapsed",
           "free_port", "make_tls_files", "paused", "redis_version", "running",
           "tls_binary", "vector_for", "wait_until"]
