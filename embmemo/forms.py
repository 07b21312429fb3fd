"""The shapes of a decorated call, pure: dedupe a batch, read the wrapped function's
output, and rebuild results in the caller's order and in the type the function returns.

An ``OutputForm`` records that type (container, row type, element type, dtype). It is
stored in each entry's header as a 16-bit hint, so a process that finds every text
cached, and never calls the function, still returns what the function would have. A
cold call builds its result from the form as a warm read decodes it from the hint, so
the two cannot differ.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from . import codec
from .errors import EmbeddingOutputError
from .keys import Text

_KINDS = ("ndarray", "list", "tuple")


@dataclass(frozen=True)
class OutputForm:
    """How an embed function returns its result.

    Attributes:
        container: For a batch: ``"ndarray"`` (2-D), ``"list"`` or ``"tuple"`` of rows;
            None when only the single-text form is known.
        row: One embedding: ``"ndarray"`` (1-D), ``"list"`` or ``"tuple"``.
        numpy_elements: List/tuple rows hold numpy scalars rather than Python numbers.
        dtype: The numpy dtype of arrays or scalars; None for Python numbers (and for a
            dtype no entry header can name).
        int_elements: List/tuple rows hold Python ints rather than floats.
    """

    container: str | None
    row: str
    numpy_elements: bool = False
    dtype: np.dtype[Any] | None = None
    int_elements: bool = False

    def hint(self) -> int:
        """The 16-bit form stored in entry headers.

        Bits 0-1 container, 2-3 row, 4 numpy elements, 5-8 the dtype's storage code
        (0: none), 9 Python int elements.
        """
        container = 0 if self.container is None else 1 + _KINDS.index(self.container)
        row = 1 + _KINDS.index(self.row)
        dtype = 0 if self.dtype is None else codec.dtype_code(self.dtype)
        return (container | row << 2 | int(self.numpy_elements) << 4 | dtype << 5
                | int(self.int_elements) << 9)

    @classmethod
    def from_hint(cls, hint: int) -> OutputForm | None:
        """The form a hint describes, or None for entries not written by the decorator."""
        return _form_of_hint(hint)

    @classmethod
    def parse_hint(cls, hint: int) -> OutputForm | None:
        """``from_hint`` without the memo."""
        row = hint >> 2 & 3
        if not row:
            return None
        container = hint & 3
        return cls(
            container=_KINDS[container - 1] if container else None,
            row=_KINDS[row - 1],
            numpy_elements=bool(hint >> 4 & 1),
            dtype=codec.dtype_of_code(hint >> 5 & 15),
            int_elements=bool(hint >> 9 & 1),
        )

    def storable(self) -> OutputForm:
        """This form as an entry header keeps it (a dtype no header can name is dropped)."""
        same = OutputForm.from_hint(self.hint())
        assert same is not None
        return same

    def for_batch(self) -> OutputForm:
        """This form with a container, inferring one from the row type when unknown."""
        if self.container is not None:
            return self
        container = "ndarray" if self.row == "ndarray" else "list"
        return replace(self, container=container)

    def with_container_of(self, other: OutputForm | None) -> OutputForm:
        """This (single-text) form with the batch container ``other`` knows, if any."""
        if other is None or other.container is None:
            return self
        return replace(self, container=other.container)


DEFAULT_FORM = OutputForm(container="ndarray", row="ndarray")
"""For entries written through the direct API: numpy, in the storage dtype."""


@dataclass(frozen=True)
class BatchPlan:
    """A batch deduplicated: ``unique`` texts in first-appearance order, and for each
    input position the index of its text in ``unique``."""

    unique: list[Text]
    positions: Sequence[int]

    @property
    def has_duplicates(self) -> bool:
        """Whether some text appears more than once."""
        return len(self.unique) != len(self.positions)


def plan(texts: Sequence[Text]) -> BatchPlan:
    """Deduplicate ``texts``, keeping first-appearance order.

    A str never equals a bytes, so ``"a"`` and ``b"a"`` stay two texts.
    """
    if len(texts) == 1:
        return BatchPlan(list(texts), range(1))
    unique = list(dict.fromkeys(texts))
    if len(unique) == len(texts):
        return BatchPlan(unique, range(len(texts)))
    index = {text: i for i, text in enumerate(unique)}
    return BatchPlan(unique, [index[text] for text in texts])


def _fail(function: str, problem: str) -> EmbeddingOutputError:
    return EmbeddingOutputError(f"{function} {problem}; nothing from this call was cached")


def _check_matrix(matrix: npt.NDArray[Any], function: str) -> None:
    if matrix.dtype.kind not in "fiu":
        raise _fail(function, f"returned values of dtype {matrix.dtype}, not real numbers")
    if matrix.shape[-1] == 0:
        raise _fail(function, "returned an empty embedding")
    if not np.isfinite(matrix).all():
        raise _fail(function, "returned NaN or infinite values")


def _list_form(container: str | None, first_row: Sequence[Any],
               matrix: npt.NDArray[Any]) -> OutputForm:
    """The form of list/tuple rows: numpy scalars (of the first one's dtype), Python ints
    (every value was one) or Python floats."""
    row = "list" if isinstance(first_row, list) else "tuple"
    first = first_row[0]
    if isinstance(first, np.generic):
        return OutputForm(container, row, numpy_elements=True, dtype=np.dtype(type(first)))
    return OutputForm(container, row, int_elements=matrix.dtype.kind in "iu")


def _numbers(output: Any, function: str, what: str) -> npt.NDArray[Any]:
    """Nested lists/tuples of numbers as an array in the dtype numpy infers (ints stay ints)."""
    try:
        return np.array(output)
    except (ValueError, TypeError):
        raise _fail(function, f"returned {what}") from None


def read_batch(output: Any, expected: int, function: str) -> tuple[npt.NDArray[Any], OutputForm]:
    """Check a batch result (one row per text) and return it as a 2-D array with its form.

    The form is what an entry header can record (``OutputForm.storable``).
    """
    if isinstance(output, np.ndarray):
        if output.ndim != 2 or output.shape[0] != expected:
            raise _fail(function, f"returned an array of shape {output.shape} for "
                                  f"{expected} texts (expected ({expected}, dim))")
        _check_matrix(output, function)
        return output, OutputForm("ndarray", "ndarray", dtype=output.dtype).storable()
    if not isinstance(output, (list, tuple)):
        raise _fail(function, f"returned a {type(output).__name__}; a batch must return a "
                              "2-D numpy array or a list/tuple of embeddings")
    if len(output) != expected:
        raise _fail(function, f"returned {len(output)} embeddings for {expected} texts")
    container = "list" if isinstance(output, list) else "tuple"
    first = output[0]
    if isinstance(first, np.ndarray):
        if not all(isinstance(r, np.ndarray) and r.shape == first.shape for r in output):
            raise _fail(function, "returned embeddings of different shapes (ragged)")
        if first.ndim != 1:
            raise _fail(function, f"returned rows of shape {first.shape}, not 1-D")
        matrix = np.stack(output)
        _check_matrix(matrix, function)
        return matrix, OutputForm(container, "ndarray", dtype=first.dtype).storable()
    if not isinstance(first, (list, tuple)):
        raise _fail(function, f"returned rows of type {type(first).__name__}")
    if not all(isinstance(r, (list, tuple)) for r in output):
        raise _fail(function, "returned rows of mixed types")
    matrix = _numbers(output, function, "ragged or non-numeric embeddings")
    if matrix.ndim != 2:
        raise _fail(function, "returned ragged or nested embeddings")
    _check_matrix(matrix, function)
    return matrix, _list_form(container, first, matrix).storable()


def read_single(output: Any, function: str) -> tuple[npt.NDArray[Any], OutputForm]:
    """Check a single-text result (one 1-D embedding) and return it with its form."""
    if isinstance(output, np.ndarray):
        if output.ndim != 1:
            raise _fail(function, f"returned an array of shape {output.shape} for one text "
                                  "(expected a 1-D embedding)")
        _check_matrix(output, function)
        return output, OutputForm(None, "ndarray", dtype=output.dtype).storable()
    if not isinstance(output, (list, tuple)):
        raise _fail(function, f"returned a {type(output).__name__} for one text; expected a "
                              "1-D numpy array or a list/tuple of numbers")
    row = _numbers(output, function, "a non-numeric or nested embedding for one text")
    if row.ndim != 1:
        raise _fail(function, f"returned shape {row.shape} for one text (expected 1-D)")
    _check_matrix(row, function)
    return row, _list_form(None, output, row).storable()


def _python_numbers(row: npt.NDArray[Any], form: OutputForm) -> list[Any]:
    """A row as Python numbers: floats, or ints where the form says so and ints are stored."""
    if form.int_elements or row.dtype.kind == "f":
        return row.tolist()  # type: ignore[no-any-return]
    return row.astype(np.float64).tolist()  # type: ignore[no-any-return]


def build_single(row: npt.NDArray[Any], form: OutputForm) -> Any:
    """One embedding in the function's own type, always a new object."""
    if form.row == "ndarray":
        return row.astype(row.dtype if form.dtype is None else form.dtype)
    values = list(row.astype(form.dtype)) if form.numpy_elements else _python_numbers(row, form)
    return values if form.row == "list" else tuple(values)


def build_batch(rows: Sequence[npt.NDArray[Any]], positions: Sequence[int],
                form: OutputForm) -> Any:
    """The batch result in input order (``rows``: one row per unique text, all of one
    dimension); always new objects, never one of ``rows``."""
    form = form.for_batch()
    if form.container == "ndarray":
        if not rows:
            return np.empty((0, 0), dtype=np.float32 if form.dtype is None else form.dtype)
        ordered = rows if len(positions) == len(rows) else [rows[p] for p in positions]
        dtype = rows[0].dtype
        if len({row.dtype for row in rows}) == 1:
            # One copy into a new, writable buffer: twice as fast as np.concatenate.
            matrix = np.frombuffer(bytearray().join(ordered), dtype)  # type: ignore[arg-type]
        else:  # entries stored in different dtypes (written by different producers)
            matrix = np.concatenate(ordered)
        matrix = matrix.reshape(len(positions), rows[0].shape[0])
        return matrix if form.dtype is None or form.dtype == dtype else matrix.astype(form.dtype)
    ordered = [build_single(rows[p], form) for p in positions]  # a repeated text: two objects
    return ordered if form.container == "list" else tuple(ordered)


def dimension_mismatch(rows: Sequence[npt.NDArray[Any]]) -> set[int] | None:
    """The dimensions of 1-D ``rows`` when they are not all the same."""
    dimensions = set(map(len, rows))
    return dimensions if len(dimensions) > 1 else None


@functools.lru_cache(maxsize=1024)  # a warm read of a function's first hit asks every time
def _form_of_hint(hint: int) -> OutputForm | None:
    return OutputForm.parse_hint(hint)
