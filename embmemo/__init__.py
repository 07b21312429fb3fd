"""embmemo: memoize text embeddings in Redis, Redis Cluster, SQLite or memory."""

from __future__ import annotations

from .cache import EmbeddingsCache
from .codec import CacheEntry
from .config import Settings
from .errors import (
    BackendError,
    ConfigError,
    EmbeddingOutputError,
    EmbmemoError,
    InvalidInputError,
    InvalidTypeError,
)
from .stats import CacheInfo

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "CacheEntry",
    "CacheInfo",
    "ConfigError",
    "EmbeddingOutputError",
    "EmbeddingsCache",
    "EmbmemoError",
    "InvalidInputError",
    "InvalidTypeError",
    "Settings",
    "__version__",
]
