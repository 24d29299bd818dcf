"""The numbers a drawing shows of each array, computed in one pass and once per state.

A drawing reads an array's L2 norm for its label, its edge and its flag, and its full
statistics for its tooltip; the widget's live mode does so every few training steps.
`Measures` keeps each array's `Summary` for the state being drawn, so each array is
converted to float64 and summed once (the norm in float64: a float32 tensor of large
values would overflow to inf).
"""

import math

import numpy as np

from .._format import num, shape_text


class Summary:
    """size (|x| for a scalar, else the L2 norm), the statistics, and NaN/Inf presence; for
    integers (labels, indices, masks), whether they are and how many are nonzero."""

    def __init__(self, array):
        array = np.asarray(array)
        self.shape, self.scalar = array.shape, array.size == 1
        self.integers = array.dtype.kind in "biu"
        if self.scalar:  # most of a circuit's numbers: no array arithmetic for one
            self.value = float(array.reshape(()))
            self.nan, self.inf, self.empty = math.isnan(self.value), math.isinf(self.value), False
            self.size = abs(self.value)
            self.stats = [
                ("mean", self.value),
                ("std", 0.0),
                ("min", self.value),
                ("max", self.value),
                ("L2", self.size),
            ]
            return
        values = array.astype(np.float64, copy=False).ravel()
        self.empty = values.size == 0
        self.nan = bool(np.isnan(values).any())
        self.inf = not self.nan and bool(np.isinf(values).any())
        if self.empty:
            self.size, self.stats = 0.0, [("empty", 0)]
            return
        self.value = None
        self.size = math.sqrt(np.einsum("i,i->", values, values))
        self.nonzero = int(np.count_nonzero(values)) if self.integers else None
        low, high, mean = values.min(), values.max(), values.mean()
        # A gradient's mean is often 0 up to rounding (2.8e-18): show it as the 0 it is.
        if abs(mean) <= 1e-12 * max(abs(low), abs(high)):
            mean = 0.0
        self.stats = [
            ("mean", mean),
            ("std", values.std()),
            ("min", low),
            ("max", high),
            ("L2", self.size),
        ]

    def flag(self, vanishing, exploding):
        """'NaN', 'Inf', 'vanishing', 'exploding' or None (see draw.gradient_flag)."""
        if self.nan:
            return "NaN"
        if self.inf:
            return "Inf"
        if 0 < self.size < vanishing:
            return "vanishing"
        if self.size > exploding:
            return "exploding"
        return None

    def describe(self):
        """The number, or the shape and statistics, in one line."""
        if self.scalar:
            return num(self.value)
        return f"shape {shape_text(self.shape)}, " + ", ".join(
            f"{name} {num(x)}" for name, x in self.stats
        )


class Measures:
    """Summaries of the arrays of one state, by identity (the state holds the arrays)."""

    def __init__(self):
        self._known = {}

    def __call__(self, array):
        entry = self._known.get(id(array))
        if entry is None or entry[0] is not array:
            entry = self._known[id(array)] = (array, Summary(array))
        return entry[1]
