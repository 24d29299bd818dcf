"""The output-size rule of convolution and pooling windows, in checked integer arithmetic.

Python's integers never overflow, but the C++ kernels count in int64: a size, stride or
pad that does not fit there, or a padded size that does not, would wrap around inside
them. So every Python caller of the rule (the course-style functions, the gates' shape
rules) computes it here, and anything the kernels could not count exactly is a
ValueError naming the number, never a negative size.
"""

import operator
import os
from typing import Any, Optional, Sequence

__all__ = [
    "INT64_MIN",
    "INT64_MAX",
    "int64",
    "window_count",
    "element_count",
    "MEMORY_BYTES",
    "beyond_memory",
    "refuse_beyond_memory",
]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _show(value: int) -> str:
    """value for a message: in full unless it is absurdly long (str() of a 5000-digit
    int raises ValueError in Python 3.11+)."""
    return str(value) if value.bit_length() <= 128 else f"a {value.bit_length()}-bit number"


def int64(value: Any, name: str, minimum: int = 0) -> int:
    """`value` as a Python int in [minimum, INT64_MAX]; ValueError naming `name` if it is
    not an integer (bools are refused), is below `minimum` or does not fit in int64."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(
            f"{name} must be an integer, got {type(value).__name__} {value!r:.60}"
        ) from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {_show(value)}")
    if value > INT64_MAX:
        raise ValueError(
            f"{name} {_show(value)} does not fit in 64 bits (the largest is 2**63 - 1)"
        )
    return value


def window_count(
    size: Optional[int], kernel: Optional[int], stride: int = 1, pad: int = 0, axis: str = "height"
) -> Optional[int]:
    """Positions of a window along one axis: 1 + (size + 2 * pad - kernel) // stride.

    size: the input's extent along the axis (>= 0), kernel: the window's (>= 1), stride
    (>= 1), pad (>= 0); axis names the axis in messages. size or kernel None (unknown
    when a graph is built) gives None. Raises ValueError if a number is not an integer, is
    out of range or does not fit in int64, if the padded size does not fit in int64, or
    if the window is larger than the padded input.
    """
    stride, pad = int64(stride, "stride", 1), int64(pad, "pad", 0)
    if size is None or kernel is None:
        return None
    size = int64(size, f"input {axis}", 0)
    kernel = int64(kernel, f"window {axis}", 1)
    padded = size + 2 * pad
    if padded > INT64_MAX:
        raise ValueError(
            f"the padded input {axis} {size} + 2 * pad {_show(pad)} does not fit in 64 bits"
        )
    if kernel > padded:
        raise ValueError(
            f"window {axis} {kernel} is larger than the (padded) input {axis} {padded}"
        )
    return 1 + (padded - kernel) // stride


def element_count(shape: Sequence[int], what: str = "array") -> int:
    """The number of elements of an array of `shape` (a sequence of sizes).

    Like numpy, the product of the non-zero sizes must fit in int64 even when another size
    is 0 (so that every index into such an array does). Raises ValueError naming `what`.
    """
    count, nonzero = 1, 1
    for i, size in enumerate(shape):
        size = int64(size, f"size {i} of the {what} shape", 0)
        count *= size
        nonzero *= size or 1
        if nonzero > INT64_MAX:
            raise ValueError(f"the sizes of the {what} shape multiply to more than fits in 64 bits")
    return count


# The user address space of 64-bit x86 and ARM processes (Windows', Linux's and macOS's
# default: 47 bits): no array larger can be allocated, whatever the memory.
ADDRESS_SPACE_BYTES = 2**47


def _physical_memory() -> int:
    """The machine's physical memory in bytes; the address space where the OS does not
    say (os.sysconf is missing on Windows)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return ADDRESS_SPACE_BYTES


MEMORY_BYTES = _physical_memory()


def beyond_memory(array: Any, what: str) -> str:
    """The refusal of `array` (named `what`), whose nbytes exceed MEMORY_BYTES (callers
    compare, so that the message is made only then). A broadcast view (np.broadcast_to of
    one row to 2**40 rows) is cheap to make, but whatever reads it makes arrays of its
    shape (an output, a gradient, a copy), which cannot exist; a sum over it would first
    run for hours."""
    return (
        f"{what} of shape {array.shape} ({array.dtype}) stands for "
        f"{array.nbytes / 2**30:,.0f} GiB, more than this machine's memory "
        f"({MEMORY_BYTES / 2**30:,.0f} GiB); its outputs and gradients would be as large "
        "(is it a broadcast view?)"
    )


def refuse_beyond_memory(fn: str, **arrays: Any) -> None:
    """ValueError (beyond_memory's message, naming `fn` and the argument) for the first of
    `arrays` (ndarrays, by their argument names) whose nbytes exceed MEMORY_BYTES; nothing
    otherwise. The C++ fast paths call it only once their own comparison of nbytes found
    one: a comparison costs less than this call, and it runs on every call of theirs."""
    for name, array in arrays.items():
        if array.nbytes > MEMORY_BYTES:
            raise ValueError(beyond_memory(array, f"{fn}: {name}"))
