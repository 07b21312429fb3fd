"""What the framework adapters share: a wrapped model's document and query embeddings
behind ``@cached_embedding``, sync and async, so they get the decorator's batching,
single flight and fail-open, and not a second implementation of them.

The identity of an entry is the model name, plus ``dimensions`` when the wrapped object
has one set (it changes the output), plus, for queries, ``role="query"``: many models
embed a query differently from a document (an instruction or prefix: E5, BGE, Nomic,
Cohere's ``input_type``), so the two share entries only when the caller says so
(``query_as_document=True``).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from ..cache import EmbeddingsCache
from ..decorator import cached_embedding
from ..errors import ConfigError, InvalidInputError

Vector = list[float]


def require(module: str, extra: str) -> Any:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"this needs {module}: pip install 'embmemo[{extra}]'") from None


def model_name_of(wrapped: object, model: str | None) -> str:
    """``model``, else the wrapped object's ``model`` or ``model_name``."""
    if model is not None:
        return model
    for attribute in ("model", "model_name"):
        found = getattr(wrapped, attribute, None)
        if isinstance(found, str) and found and found != "unknown":
            return found
    raise InvalidInputError(
        f"{type(wrapped).__name__} has no model name to key the cache on; pass model=")


class CachedModel:
    """The four cached calls of one wrapped model.

    Args:
        model: The model name entries are stored under.
        cache: The cache; None builds one from the ``EMBMEMO_*`` settings, read now.
        ttl: Time to live of new entries, in seconds.
        batch_size: Send misses to the model at most this many at a time.
        dimensions: The wrapped model's output size setting, if it has one.
        query_as_document: Queries share the entries of documents with the same text.
        documents, adocuments, query, aquery: The wrapped model's own calls.
    """

    def __init__(
        self,
        *,
        model: str,
        cache: EmbeddingsCache | None,
        ttl: float | None,
        batch_size: int | None,
        dimensions: int | None,
        query_as_document: bool,
        documents: Callable[[list[str]], list[Vector]],
        adocuments: Callable[[list[str]], Awaitable[list[Vector]]],
        query: Callable[[str], Vector],
        aquery: Callable[[str], Awaitable[Vector]],
    ) -> None:
        if cache is None:  # LangChain and LlamaIndex models read their environment when
            cache = EmbeddingsCache(ttl=ttl)  # built; so does this one
            cache.store.settings  # noqa: B018 - resolves them now
        self.cache = cache
        # The identity beyond the model name rides in a parameter the decorator keys on;
        # with nothing in it, it is ignored, so entries are keyed by the model alone.
        documents_identity = {"dimensions": dimensions} if dimensions is not None else {}
        query_identity = {**documents_identity, **({} if query_as_document else
                                                   {"role": "query"})}
        options: dict[str, Any] = {"model": model, "cache": self.cache, "ttl": ttl}

        @cached_embedding(**options, batch_size=batch_size,
                          ignore=() if documents_identity else ("identity",))
        def cached_documents(texts: list[str],
                             identity: dict[str, Any] = documents_identity) -> list[Vector]:
            return documents(list(texts))

        @cached_embedding(**options, batch_size=batch_size,
                          ignore=() if documents_identity else ("identity",))
        async def cached_adocuments(texts: list[str],
                                    identity: dict[str, Any] = documents_identity
                                    ) -> list[Vector]:
            return await adocuments(list(texts))

        @cached_embedding(**options, ignore=() if query_identity else ("identity",))
        def cached_query(text: str, identity: dict[str, Any] = query_identity) -> Vector:
            return query(text)

        @cached_embedding(**options, ignore=() if query_identity else ("identity",))
        async def cached_aquery(text: str, identity: dict[str, Any] = query_identity) -> Vector:
            return await aquery(text)

        self.documents = cached_documents
        self.adocuments = cached_adocuments
        self.query = cached_query
        self.aquery = cached_aquery
