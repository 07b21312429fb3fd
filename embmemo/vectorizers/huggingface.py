"""``HFTextVectorizer``: sentence-transformers behind embmemo's cache.

sentence-transformers is imported (and the model loaded) on first use; install it with
``pip install "embmemo[hf]"``. The caching is ``CachingVectorizer``'s.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError, InvalidInputError
from ..stats import logger
from .base import CachingVectorizer

if TYPE_CHECKING:
    from ..cache import EmbeddingsCache

Matrix = npt.NDArray[Any]


class HFTextVectorizer(CachingVectorizer):
    """Embeds text with a sentence-transformers model, through an optional cache.

    Args:
        model: A Hugging Face hub name, or the path of a local copy (a str or a
            ``pathlib.Path``).
        model_name: The name entries are cached under (default: ``model``). Give the hub
            name when ``model`` is a local path, so other machines and environments, and
            the hub name itself, find the same entries.
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
        model: str | os.PathLike[str],
        *,
        model_name: str | None = None,
        cache: EmbeddingsCache | None = None,
        cache_folder: str | None = None,
        device: str | None = None,
        dtype: str = "float32",
        **encode_kwargs: Any,
    ) -> None:
        if not isinstance(model, (str, os.PathLike)) or not os.fspath(model):
            raise InvalidInputError("model must be a non-empty hub name or local path")
        self.model_path = os.fspath(model)
        if dtype not in ("float16", "float32", "float64"):
            raise InvalidInputError(f"dtype must be float16, float32 or float64, got {dtype!r}")
        self.dtype = dtype
        self.cache_folder = cache_folder
        self.device = device
        self.encode_kwargs = dict(encode_kwargs)
        self._client: Any = None
        self._load_lock = threading.Lock()
        if model_name is None and os.path.isdir(self.model_path):
            logger.warning("embmemo: HFTextVectorizer caches under the path %s; pass "
                           "model_name= (the hub name) so other machines find the same "
                           "entries", self.model_path)
        super().__init__(model_name or self.model_path, cache, self.encode_kwargs)

    def load(self) -> None:
        """Load the model now (else it loads at the first text not in the cache)."""
        self._model()

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
                    try:
                        self._client = SentenceTransformer(
                            self.model_path, cache_folder=self.cache_folder,
                            device=self.device)
                    except Exception as exc:  # a missing model, a device torch lacks, ...
                        raise ConfigError(
                            f"cannot load {self.model_path} on "
                            f"{self.device or 'the default device'}: "
                            f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc
        return self._client

    def compute(self, texts: list[str], batch_size: int | None) -> Matrix:
        """The uncached computation: a 2-D array, one row per text (``batch_size``: texts
        per forward pass, 32 by default)."""
        vectors = self._model().encode(
            list(texts), batch_size=batch_size or 32, convert_to_numpy=True,
            show_progress_bar=False, **self.encode_kwargs,
        )
        return np.asarray(vectors).astype(self.dtype, copy=False)
