"""``HFTextVectorizer``: sentence-transformers behind ``@cached_embedding``.

The caching is the decorator's, not a second implementation: the vectorizer decorates
its own encode function with the current ``cache`` (rebuilt when ``cache`` is replaced),
so misses are batched, deduplicated, single-flight and fail-open exactly as for any
decorated function. sentence-transformers is imported (and the model loaded) on first
use; install it with ``pip install "embmemo[hf]"``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..decorator import bypass, cached_embedding
from ..errors import ConfigError, InvalidInputError, InvalidTypeError

if TYPE_CHECKING:
    from ..cache import EmbeddingsCache

Matrix = npt.NDArray[Any]


class HFTextVectorizer:
    """Embeds text with a sentence-transformers model, through an optional cache.

    Args:
        model: A Hugging Face hub name or a local model path. It is also the
            ``model_name`` entries are cached under.
        cache: An ``EmbeddingsCache``; None computes every time. May be replaced at any
            time (``vectorizer.cache = other_cache``).
        cache_folder: Where sentence-transformers keeps downloaded models.
        device: ``"cpu"``, ``"cuda"``, ... (default: sentence-transformers' choice).
        dtype: The dtype of the returned values (``"float32"`` by default).
        **encode_kwargs: Passed to ``SentenceTransformer.encode`` (for example
            ``normalize_embeddings=True``); they change the output, so they are part of
            the cache identity.
    """

    def __init__(
        self,
        model: str,
        *,
        cache: EmbeddingsCache | None = None,
        cache_folder: str | None = None,
        device: str | None = None,
        dtype: str = "float32",
        **encode_kwargs: Any,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise InvalidInputError("model must be a non-empty hub name or local path")
        if dtype not in ("float16", "float32", "float64"):
            raise InvalidInputError(f"dtype must be float16, float32 or float64, got {dtype!r}")
        self.model = model
        self.dtype = dtype
        self.cache_folder = cache_folder
        self.device = device
        self.encode_kwargs = dict(encode_kwargs)
        self._client: Any = None
        self._load_lock = threading.Lock()
        self._cache: EmbeddingsCache | None = None
        self._cached: Callable[..., Matrix] | None = None
        self._acached: Callable[..., Any] | None = None
        self.cache = cache

    @property
    def cache(self) -> EmbeddingsCache | None:
        """The cache in front of the model (None: no caching)."""
        return self._cache

    @cache.setter
    def cache(self, cache: EmbeddingsCache | None) -> None:
        self._cache = cache
        if cache is None:
            self._cached = self._acached = None
            return
        options = self.encode_kwargs
        # encode_kwargs change the output, so they key the entries; without them the
        # identity is the model alone and cache.get(text, model_name=model) finds them.
        ignore = ("batch_size",) if options else ("batch_size", "options")

        @cached_embedding(model=self.model, cache=cache, ignore=ignore)
        def encode(texts: list[str], batch_size: int = 32,
                   options: dict[str, Any] = options) -> Matrix:
            return self._encode(texts, batch_size)

        @cached_embedding(model=self.model, cache=cache, ignore=ignore)
        async def aencode(texts: list[str], batch_size: int = 32,
                          options: dict[str, Any] = options) -> Matrix:
            return await asyncio.to_thread(self._encode, texts, batch_size)

        self._cached, self._acached = encode, aencode

    def _model(self) -> Any:
        """The SentenceTransformer, loaded once, on first use."""
        if self._client is None:
            with self._load_lock:
                if self._client is None:
                    try:
                        from sentence_transformers import SentenceTransformer
                    except ImportError:
                        raise ConfigError(
                            "HFTextVectorizer needs sentence-transformers: "
                            "pip install 'embmemo[hf]'"
                        ) from None
                    self._client = SentenceTransformer(
                        self.model, cache_folder=self.cache_folder, device=self.device
                    )
        return self._client

    def _encode(self, texts: list[str], batch_size: int) -> Matrix:
        """The uncached computation: a 2-D array, one row per text."""
        vectors = self._model().encode(
            list(texts), batch_size=batch_size, convert_to_numpy=True,
            show_progress_bar=False, **self.encode_kwargs,
        )
        return np.asarray(vectors).astype(self.dtype, copy=False)

    @staticmethod
    def _texts(texts: object) -> list[str]:
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise InvalidTypeError(f"texts must be a list of str, got {type(texts).__name__}")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidTypeError(f"texts[{index}] must be a str, got {type(text).__name__}")
        return list(texts)

    @staticmethod
    def _text(text: object) -> str:
        if not isinstance(text, str):
            raise InvalidTypeError(f"text must be a str, got {type(text).__name__}")
        return text

    def _metadata_items(self, texts: list[str], vectors: Matrix,
                        metadata: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Entries to rewrite with ``metadata`` (none when there is none to store)."""
        if metadata is None or self._cache is None:
            return []
        params = {"model_params": {"options": self.encode_kwargs}} if self.encode_kwargs else {}
        return [{"text": text, "model_name": self.model, "embedding": vector,
                 "metadata": metadata, **params} for text, vector in zip(texts, vectors)]

    def embed(self, text: str, *, skip_cache: bool = False,
              metadata: dict[str, Any] | None = None) -> list[float]:
        """The embedding of one text, from the cache when it is there.

        Args:
            text: The text to embed.
            skip_cache: Compute with the model and leave the cache untouched.
            metadata: Stored with the entry in the cache.
        """
        return self.embed_many([self._text(text)], skip_cache=skip_cache,
                               metadata=metadata)[0]

    def embed_many(self, texts: Sequence[str], *, batch_size: int = 32, skip_cache: bool = False,
                   metadata: dict[str, Any] | None = None) -> list[list[float]]:
        """Embeddings of many texts in input order; only cache misses reach the model."""
        texts = self._texts(texts)
        if self._cached is None or skip_cache:
            with bypass():
                vectors = self._encode(texts, batch_size)
        else:
            vectors = self._cached(texts, batch_size)
            items = self._metadata_items(texts, vectors, metadata)
            if items:  # one more write, only when metadata is given
                self._cache.mset(items)  # type: ignore[union-attr]
        return vectors.tolist()  # type: ignore[no-any-return]

    async def aembed(self, text: str, *, skip_cache: bool = False,
                     metadata: dict[str, Any] | None = None) -> list[float]:
        """Async ``embed``: the model runs in a worker thread, the cache asynchronously."""
        return (await self.aembed_many([self._text(text)], skip_cache=skip_cache,
                                       metadata=metadata))[0]

    async def aembed_many(self, texts: Sequence[str], *, batch_size: int = 32,
                          skip_cache: bool = False,
                          metadata: dict[str, Any] | None = None) -> list[list[float]]:
        """Async ``embed_many``."""
        texts = self._texts(texts)
        if self._acached is None or skip_cache:
            vectors = await asyncio.to_thread(self._encode, texts, batch_size)
        else:
            vectors = await self._acached(texts, batch_size)
            items = self._metadata_items(texts, vectors, metadata)
            if items:
                await self._cache.amset(items)  # type: ignore[union-attr]
        return vectors.tolist()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"HFTextVectorizer(model={self.model!r}, cache={self._cache!r})"
