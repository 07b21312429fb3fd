"""``CachingVectorizer``: what the vectorizers share, the cache in front of a model.

The caching is the decorator's, not a second implementation: a vectorizer decorates its
own compute functions with the current ``cache`` (rebuilt when ``cache`` is replaced), so
misses are batched, deduplicated, single-flight and fail-open exactly as for any
decorated function. A subclass provides ``compute`` (and, when its client has one, a
native ``acompute``) and the identity: the settings that change the output.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..decorator import cached_embedding
from ..errors import InvalidTypeError

if TYPE_CHECKING:
    from ..cache import EmbeddingsCache


class CachingVectorizer:
    """Embeds text with a model, through an optional cache.

    Args:
        model: The model; also the ``model_name`` entries are cached under.
        cache: An ``EmbeddingsCache``; None computes every time. May be replaced at any
            time (``vectorizer.cache = other_cache``).
        identity: The settings that change the output (part of each entry's identity;
            with none, ``cache.get(text, model_name=model)`` finds the entries).
    """

    def __init__(self, model: str, cache: EmbeddingsCache | None,
                 identity: dict[str, Any]) -> None:
        self.model = model
        self.identity = identity
        self._cache: EmbeddingsCache | None = None
        self._cached: Any = None
        self._acached: Any = None
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
        identity = self.identity
        # Without settings the identity is the model alone (the parameter is ignored).
        ignore = ("batch_size",) if identity else ("batch_size", "options")

        @cached_embedding(model=self.model, cache=cache, ignore=ignore)
        def compute(texts: list[str], batch_size: int | None = None,
                    options: dict[str, Any] = identity) -> Any:
            return self.compute(texts, batch_size)

        @cached_embedding(model=self.model, cache=cache, ignore=ignore)
        async def acompute(texts: list[str], batch_size: int | None = None,
                           options: dict[str, Any] = identity) -> Any:
            return await self.acompute(texts, batch_size)

        self._cached, self._acached = compute, acompute

    def compute(self, texts: list[str], batch_size: int | None) -> Any:
        """The uncached embeddings of ``texts``: a 2-D array or a list of lists."""
        raise NotImplementedError

    async def acompute(self, texts: list[str], batch_size: int | None) -> Any:
        """Async ``compute``; by default ``compute`` in a worker thread."""
        return await asyncio.to_thread(self.compute, texts, batch_size)

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

    def _metadata_items(self, texts: list[str], vectors: Any,
                        metadata: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Entries to rewrite with ``metadata`` (none when there is none to store)."""
        if metadata is None or self._cache is None:
            return []
        params = {"model_params": {"options": self.identity}} if self.identity else {}
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

    def embed_many(self, texts: Sequence[str], *, batch_size: int | None = None,
                   skip_cache: bool = False,
                   metadata: dict[str, Any] | None = None) -> list[list[float]]:
        """Embeddings of many texts in input order; only cache misses reach the model."""
        texts = self._texts(texts)
        if self._cached is None or skip_cache:
            return _lists(self.compute(texts, batch_size))
        vectors = self._cached(texts, batch_size)
        items = self._metadata_items(texts, vectors, metadata)
        if items:  # one more write, only when metadata is given
            self._cache.mset(items)  # type: ignore[union-attr]
        return _lists(vectors)

    async def aembed(self, text: str, *, skip_cache: bool = False,
                     metadata: dict[str, Any] | None = None) -> list[float]:
        """Async ``embed``."""
        return (await self.aembed_many([self._text(text)], skip_cache=skip_cache,
                                       metadata=metadata))[0]

    async def aembed_many(self, texts: Sequence[str], *, batch_size: int | None = None,
                          skip_cache: bool = False,
                          metadata: dict[str, Any] | None = None) -> list[list[float]]:
        """Async ``embed_many``."""
        texts = self._texts(texts)
        if self._acached is None or skip_cache:
            return _lists(await self.acompute(texts, batch_size))
        vectors = await self._acached(texts, batch_size)
        items = self._metadata_items(texts, vectors, metadata)
        if items:
            await self._cache.amset(items)  # type: ignore[union-attr]
        return _lists(vectors)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, cache={self._cache!r})"


def _lists(vectors: Any) -> list[list[float]]:
    """Rows as lists of Python floats (a list of lists is already new, made for this call)."""
    if isinstance(vectors, np.ndarray):
        return vectors.tolist()  # type: ignore[no-any-return]
    return list(vectors)
