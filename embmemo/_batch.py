"""The decorator's pure core: dedupe a batch, read the wrapped function's output, and
rebuild results in the caller's order and in the type the function returns. No I/O.

An ``OutputForm`` records that type (container, row type, element type, dtype). It is
stored in each entry's header as a 16-bit hint, so a process that finds every text
cached, and never calls the function, still returns what the function would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import EmbeddingOutputError
from .keys import Text

_KINDS = ("ndarray", "list", "tuple")
_DTYPES = (None, np.dtype("float16"), np.dtype("float32"), np.dtype("float64"))
_DTYPE_NAMES = ("", "float16", "float32", "float64")  # np.dtype == None is True for float64


@dataclass(frozen=True)
class OutputForm:
    """How an embed function returns its result.

    Attributes:
        container: For a batch: ``"ndarray"`` (2-D), ``"list"`` or ``"tuple"`` of rows;
            None when only the single-text form is known.
        row: One embedding: ``"ndarray"`` (1-D), ``"list"`` or ``"tuple"``.
        numpy_elements: List/tuple rows hold numpy scalars rather than Python floats.
        dtype: The numpy dtype of arrays or scalars; None for Python floats.
    """

    container: str | None
    row: str
    numpy_elements: bool = False
    dtype: np.dtype[Any] | None = None

    def hint(self) -> int:
        """The 16-bit form stored in entry headers."""
        container = 0 if self.container is None else 1 + _KINDS.index(self.container)
        row = 1 + _KINDS.index(self.row)
        name = self.dtype.name if self.dtype is not None else ""
        dtype = _DTYPE_NAMES.index(name) if name in _DTYPE_NAMES else 0
        return container | row << 2 | int(self.numpy_elements) << 4 | dtype << 5

    @classmethod
    def from_hint(cls, hint: int) -> OutputForm | None:
        """The form a hint describes, or None for entries not written by the decorator."""
        row = hint >> 2 & 3
        if not row:
            return None
        container = hint & 3
        return cls(
            container=_KINDS[container - 1] if container else None,
            row=_KINDS[row - 1],
            numpy_elements=bool(hint >> 4 & 1),
            dtype=_DTYPES[hint >> 5 & 3],
        )

    def for_batch(self) -> OutputForm:
        """This form with a container, inferring one from the row type when unknown."""
        if self.container is not None:
            return self
        container = "ndarray" if self.row == "ndarray" else "list"
        return OutputForm(container, self.row, self.numpy_elements, self.dtype)


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


def _element_form(row: Sequence[Any]) -> tuple[bool, np.dtype[Any] | None]:
    first = row[0] if len(row) else 0.0
    if isinstance(first, np.generic):
        return True, np.dtype(type(first))
    return False, None


def read_batch(output: Any, expected: int, function: str) -> tuple[npt.NDArray[Any], OutputForm]:
    """Check a batch result (one row per text) and return it as a 2-D array with its form."""
    if isinstance(output, np.ndarray):
        if output.ndim != 2 or output.shape[0] != expected:
            raise _fail(function, f"returned an array of shape {output.shape} for "
                                  f"{expected} texts (expected ({expected}, dim))")
        _check_matrix(output, function)
        return output, OutputForm("ndarray", "ndarray", dtype=output.dtype)
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
        return matrix, OutputForm(container, "ndarray", dtype=first.dtype)
    if not isinstance(first, (list, tuple)):
        raise _fail(function, f"returned rows of type {type(first).__name__}")
    row = "list" if isinstance(first, list) else "tuple"
    numpy_elements, dtype = _element_form(first)
    try:
        matrix = np.array(output, dtype=np.float64)
    except (ValueError, TypeError):
        raise _fail(function, "returned ragged or non-numeric embeddings") from None
    if matrix.ndim != 2:
        raise _fail(function, "returned ragged or nested embeddings")
    _check_matrix(matrix, function)
    return matrix, OutputForm(container, row, numpy_elements, dtype)


def read_single(output: Any, function: str) -> tuple[npt.NDArray[Any], OutputForm]:
    """Check a single-text result (one 1-D embedding) and return it with its form."""
    if isinstance(output, np.ndarray):
        if output.ndim != 1:
            raise _fail(function, f"returned an array of shape {output.shape} for one text "
                                  "(expected a 1-D embedding)")
        _check_matrix(output, function)
        return output, OutputForm(None, "ndarray", dtype=output.dtype)
    if not isinstance(output, (list, tuple)):
        raise _fail(function, f"returned a {type(output).__name__} for one text; expected a "
                              "1-D numpy array or a list/tuple of numbers")
    numpy_elements, dtype = _element_form(output)
    try:
        row = np.array(output, dtype=np.float64)
    except (ValueError, TypeError):
        raise _fail(function, "returned a non-numeric or nested embedding for one text") from None
    if row.ndim != 1:
        raise _fail(function, f"returned shape {row.shape} for one text (expected 1-D)")
    _check_matrix(row, function)
    kind = "list" if isinstance(output, list) else "tuple"
    return row, OutputForm(None, kind, numpy_elements, dtype)


def build_single(row: npt.NDArray[Any], form: OutputForm) -> Any:
    """One embedding in the function's own type."""
    if form.row == "ndarray":
        return row.astype(form.dtype or row.dtype)
    values = list(row.astype(form.dtype)) if form.numpy_elements else row.tolist()
    return values if form.row == "list" else tuple(values)


def build_batch(rows: Sequence[npt.NDArray[Any]], positions: Sequence[int],
                form: OutputForm) -> Any:
    """The batch result in input order (``rows`` holds one row per unique text)."""
    form = form.for_batch()
    if form.container == "ndarray":
        if not rows:
            return np.empty((0, 0), dtype=form.dtype or np.float32)
        dimensions = {r.shape[0] for r in rows}
        if len(dimensions) > 1:
            raise EmbeddingOutputError(
                f"cached and computed embeddings have different dimensions "
                f"{sorted(dimensions)}; the model's output changed under the "
                "same model name (clear the cache)"
            )
        # One copy into the result; np.stack would also make a 2-D view of every row.
        matrix = np.concatenate(rows if len(positions) == len(rows)
                                else [rows[p] for p in positions])
        matrix = matrix.reshape(len(positions), dimensions.pop())
        return matrix.astype(form.dtype or matrix.dtype, copy=False)
    if form.row == "ndarray":
        dtype = form.dtype
        ordered: list[Any] = [rows[p].astype(dtype or rows[p].dtype) for p in positions]
    else:
        converted = [build_single(r, form) for r in rows]
        ordered = [converted[p] for p in positions]
    return ordered if form.container == "list" else tuple(ordered)

