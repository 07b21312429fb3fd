"""The public API's arguments, in every spelling RedisVL users write them. Pure: no I/O.

RedisVL 0.6 says ``text``/``texts``; RedisVL 0.13 and later say ``content``/``contents``.
Both work everywhere; giving both at once is an error. Batches take any iterable (a
generator, a set, a numpy array of str, a pandas Series), not only lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar, cast

from .errors import InvalidInputError, InvalidTypeError
from .keys import Text

T = TypeVar("T")


def either(value: T | None, alias: T | None, name: str, alias_name: str) -> T:
    """The one of two spellings that was given."""
    if value is not None:
        if alias is not None:
            raise InvalidInputError(f"give {name}= or {alias_name}=, not both")
        return value
    if alias is not None:
        return alias
    raise InvalidTypeError(f"{name} (or {alias_name}) is required")


def text_of(text: Text | None, content: Text | None) -> Text:
    """One text, spelled ``text`` or ``content``."""
    return cast(Text, either(text, content, "text", "content"))


def model_of(model_name: str | None) -> str:
    """The model name, which every call needs (it is optional in signatures only so the
    text can come first by keyword, as ``content=``)."""
    if model_name is None:
        raise InvalidTypeError("model_name is required")
    return model_name


def batch(values: Iterable[Any] | None, name: str) -> list[Any]:
    """Any iterable but a bare str or bytes (one text is not a batch), as a list."""
    if isinstance(values, (str, bytes)):
        raise InvalidTypeError(f"{name} must be an iterable of them, not one "
                               f"{type(values).__name__}; wrap it in a list")
    try:
        return list(values)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidTypeError(
            f"{name} must be an iterable (a list, a generator, ...), got "
            f"{type(values).__name__}") from None


def texts_of(texts: Iterable[Text] | None, contents: Iterable[Text] | None) -> list[Text]:
    """A batch of texts, spelled ``texts`` or ``contents``."""
    return batch(either(texts, contents, "texts", "contents"), "texts")


def spread(count: int, positions: Sequence[int], values: Sequence[T], default: T) -> list[T]:
    """``values`` at ``positions`` of a list of ``count``, ``default`` elsewhere."""
    if len(positions) == count:
        return list(values)
    out = [default] * count
    for position, value in zip(positions, values):
        out[position] = value
    return out
