"""The exceptions embmemo raises.

Input errors subclass the builtin ``TypeError`` / ``ValueError`` as well as
``EmbmemoError``, so callers can catch them either way.
"""

from __future__ import annotations


class EmbmemoError(Exception):
    """Base class of every error embmemo raises on purpose."""


class InvalidInputError(EmbmemoError, ValueError):
    """An argument has the right type but a value embmemo cannot accept."""


class InvalidTypeError(EmbmemoError, TypeError):
    """An argument has a type embmemo cannot accept."""


class ConfigError(EmbmemoError, ValueError):
    """A setting (argument, URL or ``EMBMEMO_*`` variable) is invalid."""


class BackendError(EmbmemoError):
    """The storage backend failed or timed out; the message never holds credentials."""


class PartialBackendError(BackendError):
    """Part of a batch failed (the keys of one cluster node, say) and the rest went through.

    Attributes:
        values: For a read, the values read, None where the read failed.
        failed: For a read, the positions that failed.
    """

    def __init__(self, message: str, values: list[bytes | None] | None = None,
                 failed: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.values = values
        self.failed = failed


class MigratingError(BackendError):
    """A Redis Cluster slot stayed busy migrating (``TRYAGAIN``) past the retries: says
    nothing of the cluster's health, so the circuit breaker does not count it."""


class ValueTooLargeError(InvalidInputError, BackendError):
    """An entry larger than the backend accepts. Bad input for the direct API; for a
    decorated function, a write the cache cannot take, so the call still succeeds."""


class EmbeddingOutputError(EmbmemoError, ValueError):
    """A decorated embed function returned something that does not match its input."""
