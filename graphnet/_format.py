"""Numbers as a student reads them.

Every number shown (drawings, step frames, cache summaries, the HTML player) goes through
`num` (4 significant digits), every array through `stats`, so they read the same everywhere.
"""

import math

import numpy as np


def num(x):
    """4 significant digits, with a compact exponent: -12, 0.1966, 1.235e4, 3e-13."""
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return str(x)
    text = f"{x:.4g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return "0" if text == "-0" else text


def is_scalar(value):
    return value is not None and np.size(value) == 1


def scalar(value):
    return float(np.asarray(value).reshape(()))


def norm(value):
    """L2 norm in float64, so a float32 tensor of large values does not overflow to inf."""
    return float(np.linalg.norm(np.asarray(value, dtype=np.float64).ravel()))


def magnitude(value):
    """What an edge or a flag looks at: |x| for a scalar, the L2 norm for a tensor."""
    return abs(scalar(value)) if is_scalar(value) else norm(value)


def stats(value):
    """(name, number) pairs summarizing a tensor: mean, std, min, max and L2 norm."""
    array = np.asarray(value, dtype=np.float64)
    if array.size == 0:
        return [("empty", 0)]
    low, high, mean = array.min(), array.max(), array.mean()
    # A gradient's mean is often 0 up to rounding (2.8e-18): show it as the 0 it is.
    if abs(mean) <= 1e-12 * max(abs(low), abs(high)):
        mean = 0.0
    return [("mean", mean), ("std", array.std()), ("min", low), ("max", high), ("L2", norm(array))]


def describe(value):
    """A one-line text for a value or gradient: the number, or its shape and statistics."""
    if is_scalar(value):
        return num(scalar(value))
    return f"shape {shape_text(np.shape(value))}, " + ", ".join(
        f"{name} {num(x)}" for name, x in stats(value)
    )


def shape_text(shape):
    if shape is None:
        return "?"
    if shape == ():
        return "scalar"
    dims = ["?" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
