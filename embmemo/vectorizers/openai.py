"""``OpenAITextVectorizer``: the official ``openai`` client behind embmemo's cache.

Built on ``openai.OpenAI``/``AsyncOpenAI``, so ``base_url``, Azure and every
OpenAI-compatible server work, and the client's own retries and timeouts apply.
``pip install "embmemo[openai]"``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, InvalidInputError
from .base import CachingVectorizer

if TYPE_CHECKING:
    from ..cache import EmbeddingsCache

MAX_INPUTS = 2048
"""The most inputs the embeddings endpoint takes in one request."""


class OpenAITextVectorizer(CachingVectorizer):
    """Embeds text with OpenAI's embeddings endpoint (or a compatible one), through an
    optional cache.

    Args:
        model: The embedding model (or an Azure deployment) requests name.
        model_name: The name entries are cached under (default: ``model``); give the
            model's own name when ``model`` is a deployment name.
        client: An ``openai.OpenAI`` (default: one built from ``OPENAI_API_KEY``,
            ``OPENAI_BASE_URL``, ... on first use).
        async_client: An ``openai.AsyncOpenAI`` for the async methods (default: likewise).
        dimensions: The output size (text-embedding-3 models); part of the identity.
        cache: An ``EmbeddingsCache``; None computes every time.
        batch_size: Texts per request, at most 2048 (the endpoint's limit).
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        model_name: str | None = None,
        client: Any = None,
        async_client: Any = None,
        dimensions: int | None = None,
        cache: EmbeddingsCache | None = None,
        batch_size: int = MAX_INPUTS,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise InvalidInputError("model must be a non-empty model name")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not (
                0 < batch_size <= MAX_INPUTS):
            raise InvalidInputError(f"batch_size must be 1 to {MAX_INPUTS}, got {batch_size!r}")
        if dimensions is not None and (isinstance(dimensions, bool)
                                       or not isinstance(dimensions, int) or dimensions < 1):
            raise InvalidInputError(f"dimensions must be a positive int, got {dimensions!r}")
        self.request_model = model
        self.dimensions = dimensions
        self.batch_size = batch_size
        self._client = client
        self._async_client = async_client
        self._lock = threading.Lock()
        super().__init__(model_name or model, cache,
                         {"dimensions": dimensions} if dimensions else {})

    def _clients(self, asynchronous: bool) -> Any:
        """The client, built on first use from the environment when none was given."""
        with self._lock:
            if (self._async_client if asynchronous else self._client) is None:
                try:
                    import openai
                except ImportError:
                    raise ConfigError("OpenAITextVectorizer needs openai: "
                                      "pip install 'embmemo[openai]'") from None
                if asynchronous:
                    self._async_client = openai.AsyncOpenAI()
                else:
                    self._client = openai.OpenAI()
            return self._async_client if asynchronous else self._client

    def _requests(self, texts: list[str], batch_size: int | None) -> list[list[str]]:
        size = min(batch_size or self.batch_size, MAX_INPUTS)
        return [texts[start:start + size] for start in range(0, len(texts), size)]

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"model": self.request_model, "encoding_format": "float"}
        if self.dimensions is not None:
            options["dimensions"] = self.dimensions
        return options

    def compute(self, texts: list[str], batch_size: int | None) -> list[list[float]]:
        """The uncached embeddings: one request per ``batch_size`` texts, in order."""
        client = self._clients(asynchronous=False)
        vectors: list[list[float]] = []
        for request in self._requests(texts, batch_size):
            vectors += _in_order(client.embeddings.create(input=request, **self._options()))
        return vectors

    async def acompute(self, texts: list[str], batch_size: int | None) -> list[list[float]]:
        """Async ``compute`` on the async client."""
        client = self._clients(asynchronous=True)
        vectors: list[list[float]] = []
        for request in self._requests(texts, batch_size):
            vectors += _in_order(await client.embeddings.create(input=request,
                                                                **self._options()))
        return vectors


def _in_order(response: Any) -> list[list[float]]:
    """The embeddings of a response in input order (the API returns an index with each)."""
    return [item.embedding for item in sorted(response.data, key=lambda item: item.index)]
