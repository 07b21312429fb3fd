"""The backend matrix and a sync/async adapter, so each behaviour is written once."""

from __future__ import annotations

import inspect
from typing import Any

from embmemo import EmbeddingsCache


class Api:
    """Calls a cache's sync method, or awaits its async twin, under one name."""

    def __init__(self, cache: EmbeddingsCache, mode: str) -> None:
        self.cache = cache
        self.mode = mode

    def __getattr__(self, name: str) -> Any:
        if self.mode == "sync":
            method = getattr(self.cache, name)

            async def call_sync(*args: Any, **kwargs: Any) -> Any:
                return method(*args, **kwargs)

            return call_sync
        twin = getattr(self.cache, "am" + name[1:] if name.startswith("m") else "a" + name)
        assert inspect.iscoroutinefunction(twin)
        return twin
