"""A small OpenAI-compatible embeddings server on loopback, counting what it is asked.

The real ``openai`` client talks to it over real HTTP; each text gets a deterministic
vector, so a test can tell a cached answer from a computed one by the request count.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def vector_for(text: str, dimensions: int) -> list[float]:
    """What the server returns for ``text``: the same floats every time."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(digest[i % 32] / 255, 6) for i in range(dimensions)]


class EmbeddingsServer(ThreadingHTTPServer):
    """``POST /v1/embeddings``; ``requests`` holds each request's JSON body."""

    daemon_threads = True

    def __init__(self, default_dimensions: int = 8) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.default_dimensions = default_dimensions
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    @property
    def texts_embedded(self) -> int:
        with self.lock:
            return sum(len(request["input"]) for request in self.requests)


class _Handler(BaseHTTPRequestHandler):
    server: EmbeddingsServer

    def do_POST(self) -> None:  # http.server calls it by this name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/v1/embeddings" or not isinstance(body.get("input"), list):
            self.send_error(404)
            return
        with self.server.lock:
            self.server.requests.append(body)
        dimensions = body.get("dimensions") or self.server.default_dimensions
        data = [{"object": "embedding", "index": index, "embedding": vector_for(text, dimensions)}
                for index, text in enumerate(body["input"])]
        data.reverse()  # the API promises an index per item, not an order
        payload = json.dumps({"object": "list", "data": data, "model": body["model"],
                              "usage": {"prompt_tokens": 1, "total_tokens": 1}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet


@contextmanager
def embeddings_server(default_dimensions: int = 8) -> Iterator[EmbeddingsServer]:
    """A running server, shut down afterwards."""
    server = EmbeddingsServer(default_dimensions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
