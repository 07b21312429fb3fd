"""embmemo: memoize text embeddings in Redis, Redis Cluster, SQLite or memory."""

from __future__ import annotations

from .cache import EmbeddingsCache
from .codec import CacheEntry
from .config import Settings
from .decorator import CachedEmbeddingFunction, bypass, cached_embedding
from .errors import (
    BackendError,
    ConfigError,
    EmbeddingOutputError,
    EmbmemoError,
    InvalidInputError,
    InvalidTypeError,
)
from .stats import CacheInfo

__version__ = "0.2.0"

__all__ = [
    "BackendError",
    "CacheEntry",
    "CacheInfo",
    "CachedEmbeddingFunction",
    "ConfigError",
    "EmbeddingOutputError",
    "EmbeddingsCache",
    "EmbmemoError",
    "InvalidInputError",
    "InvalidTypeError",
    "Settings",
    "__version__",
    "bypass",
    "cached_embedding",
]
