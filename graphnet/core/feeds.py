"""What a feed may be: a value for an input, converted to the input's dtype only where
that loses nothing, or a GraphError saying why not."""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

from ..errors import GraphError
from ..kernels import _C
from ..kernels.geometry import MEMORY_BYTES, beyond_memory, element_count

_FLOAT64 = np.dtype(np.float64)
_KERNEL_DTYPES = (np.dtype(np.float32), _FLOAT64)  # dtypes, not types: faster `in`


def static_shape(what: str, shape: Any) -> Optional[Tuple[Optional[int], ...]]:
    """A build-time shape: a tuple of non-negative ints or None (any size)."""
    if shape is None:
        return None
    try:
        dims = tuple(shape)
    except TypeError:
        raise GraphError(
            f"{what}: shape must be a tuple of sizes (None for any), got {shape!r}"
        ) from None
    if isinstance(shape, str) or not all(
        d is None
        or (isinstance(d, (int, np.integer)) and not isinstance(d, bool) and 0 <= d <= 2**62)
        for d in dims
    ):
        raise GraphError(
            f"{what}: shape must hold non-negative integers or None (any size), got {shape!r}"
        )
    shape = tuple(None if d is None else int(d) for d in dims)
    try:
        element_count([d for d in shape if d is not None], "input")
    except ValueError as err:
        raise GraphError(f"{what}: shape {shape}: {err}") from None
    return shape


def feed_dtype(node: Any, float_dtype: np.dtype, integer_use: bool) -> np.dtype:
    """The dtype a fed array takes: the input's own, or, for an input built without one,
    integers (int64) where every gate reading it takes integers (class labels), else the
    graph's float dtype."""
    if node.declared_dtype is not None:
        return node.declared_dtype
    return np.dtype(np.int64) if integer_use else float_dtype


def convert_feed(node: Any, value: Any, dtype: np.dtype, finite: bool = True) -> Any:
    """`value` as an array of `dtype` and of the input's shape, or a GraphError: nothing is
    rounded, wrapped around or overflowed silently. finite=False: an array already of the
    input's float dtype is not checked for NaN and Inf here (the caller checks it another
    way, passes/feed_check.py)."""
    # A finite number for a float64 input of any or no shape: what the checks below come
    # to, at a tenth of their cost (a scalar circuit feeds many).
    if (
        type(value) is float
        and dtype == _FLOAT64
        and not node.static_shape
        and math.isfinite(value)
    ):
        return np.float64(value)
    # An array already of the input's dtype (a model's batch, a sequence's words, labels):
    # only its shape to check, and a float array's finiteness (an integer array of its own
    # dtype holds nothing to refuse; the checks below took 2-3 us on 50 words).
    if type(value) is np.ndarray and value.dtype == dtype and value.ndim:
        _check_shape(node, value)
        if dtype.kind in "iu" or not finite or all_finite(value):
            return value
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as err:  # ragged nested lists, say
        raise GraphError(
            f"feed for input {node.name!r} is not an array of numbers: {err}; "
            f"pass an ndarray of shape {node.static_shape}"
        ) from None
    if array.dtype.kind not in "fiu":  # bool, complex, object, strings: no silent guess
        raise GraphError(
            f"feed for input {node.name!r} has dtype {array.dtype}; it needs "
            f"real numbers, which are converted to {dtype}"
        )
    _check_shape(node, array)
    if dtype.kind in "iu":
        _check_integers(node, array, dtype)
    elif array.dtype.kind in "iu":
        _check_exact_floats(node, array, dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        converted = array.astype(dtype, copy=False)
    if converted.dtype.kind == "f" and not all_finite(converted):
        if array.dtype.kind == "f" and np.isfinite(array).all():
            raise GraphError(
                f"feed for input {node.name!r} (shape {array.shape}) overflows "
                f"{dtype}: values up to {np.abs(array).max():g}; scale them"
            )
        check_finite(node, array)
    return converted[()] if converted.ndim == 0 else converted


def all_finite(array: np.ndarray) -> bool:
    """Whether the float array holds no NaN and no Inf: one C++ pass for float32 and
    float64 (0.3 us on a 3072-float image, np.isfinite(array).all() 1.3 us)."""
    if array.dtype in _KERNEL_DTYPES:
        return _C.all_finite(array)
    return bool(np.isfinite(array).all())


def check_finite(node: Any, array: np.ndarray) -> None:
    """A GraphError if the feed `array` of input `node` holds NaN or Inf."""
    if not all_finite(array):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise GraphError(
            f"feed for input {node.name!r} (shape {array.shape}) holds {bad} NaN "
            "or Inf values; clean or mask them before feeding"
        )


def _check_shape(node: Any, array: np.ndarray) -> None:
    """A GraphError if the feed does not fit the input's shape, or stands for more than the
    machine's memory (a broadcast view: the gates would make arrays of its size, a sum
    over its integers run for hours)."""
    if array.nbytes > MEMORY_BYTES:
        raise GraphError(beyond_memory(array, f"feed for input {node.name!r}"))
    expected = node.static_shape
    if expected is None:
        return
    shape = array.shape
    # A plain loop: every feed of a batch passes here, and a generator costs more than it.
    fits = len(shape) == len(expected)
    for e, a in zip(expected, shape):
        if e is not None and e != a:
            fits = False
    if not fits:
        raise GraphError(
            f"feed for input {node.name!r} has shape {array.shape}, expected "
            f"{expected} (None matches any size)"
        )


def _check_integers(node: Any, array: np.ndarray, dtype: np.dtype) -> None:
    """Integer inputs take whole numbers within the dtype's range, nothing else."""
    if array.size == 0 or (array.dtype.kind in "iu" and np.can_cast(array.dtype, dtype)):
        return  # every value of its own dtype fits (a batch of words or labels as int64)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not np.all(np.mod(array, 1) == 0):
            raise GraphError(
                f"feed for integer input {node.name!r} ({dtype}) holds "
                "non-integers (values that are not whole numbers, or NaN/Inf)"
            )
    info = np.iinfo(dtype)
    low, high = array.min(), array.max()
    if low < info.min or high > info.max:
        raise GraphError(
            f"feed for input {node.name!r} holds values from {low:.17g} to "
            f"{high:.17g}, outside the range of its dtype {dtype} "
            f"[{info.min}, {info.max}]; they would wrap around"
        )


def _check_exact_floats(node: Any, array: np.ndarray, dtype: np.dtype) -> None:
    """Integers fed to a float input must be exact in its dtype (2**53 + 1 is not a
    float64)."""
    with np.errstate(over="ignore", invalid="ignore"):
        exact = np.array_equal(array.astype(dtype).astype(array.dtype), array)
    if not exact:
        raise GraphError(
            f"feed for input {node.name!r} (shape {array.shape}): integers of "
            f"dtype {array.dtype} too large to be exact in {dtype}; scale them "
            "or convert them yourself"
        )
