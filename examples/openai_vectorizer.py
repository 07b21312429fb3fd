"""OpenAI: embeddings through the official client, cached; the second pass sends nothing.

With OPENAI_API_KEY set this calls OpenAI. Without it, it starts a stand-in
OpenAI-compatible server on loopback (any compatible server works: point `base_url` at
it), so the example runs offline. Needs `pip install "embmemo[openai]"`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai

from embmemo import EmbeddingsCache
from embmemo.vectorizers import OpenAITextVectorizer

REQUESTS: list[int] = []


class StandIn(BaseHTTPRequestHandler):
    """POST /v1/embeddings, answered with deterministic vectors."""

    def do_POST(self) -> None:  # http.server calls it by this name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        REQUESTS.append(len(body["input"]))
        size = body.get("dimensions") or 8
        data = [{"object": "embedding", "index": i,
                 "embedding": [b / 255 for b in hashlib.sha256(t.encode()).digest()[:size]]}
                for i, t in enumerate(body["input"])]
        reply = json.dumps({"object": "list", "data": data, "model": body["model"],
                            "usage": {"prompt_tokens": 0, "total_tokens": 0}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def client() -> openai.OpenAI:
    if os.environ.get("OPENAI_API_KEY"):
        return openai.OpenAI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return openai.OpenAI(api_key="stand-in",
                         base_url=f"http://127.0.0.1:{server.server_address[1]}/v1")


def main() -> None:
    cache = EmbeddingsCache(name="openai_demo")
    cache.clear()  # start fresh: this example's namespace only
    vectorizer = OpenAITextVectorizer("text-embedding-3-small", client=client(),
                                      dimensions=8, cache=cache)
    texts = ["How do I reset my password?", "Where is my invoice?",
             "How do I reset my password?"]
    for run in (1, 2):
        vectors = vectorizer.embed_many(texts)
        print(f"run {run}: {len(vectors)} vectors; requests sent so far: {len(REQUESTS)}")
    if not os.environ.get("OPENAI_API_KEY"):
        assert REQUESTS == [2]  # one request, for the two distinct texts, in the first run


if __name__ == "__main__":
    main()
