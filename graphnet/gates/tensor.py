"""Tensor gates that move or combine numbers without changing them (reshape, flatten,
transpose, concat), the matrix product, and the mean. Their backward passes undo the move:
the upstream gradient is reshaped, transposed or split back into the inputs' shapes."""

import functools
import math

import numpy as np

from ..kernels import _C
from .base import (
    Gate,
    GateError,
    ShapeError,
    broadcast_shape,
    dims_match,
    integer,
    is_int,
    register_gate,
    unbroadcast,
)
from .nn import matmul
from .reduce import Sum, spread


def batched_matmul(a, b, transpose_a=False, transpose_b=False, summed_to=None):
    """op(a) @ op(b) for arrays of rank >= 2 whose leading (batch) axes broadcast, op
    transposing the last two axes; with `summed_to` (the batch shape of an operand
    broadcast along some of the product's batch axes: its gradient), summed over those
    axes. graphnet's own C++ product does the work for float arrays, so the whole walk
    runs on one team of threads (see nn.matmul): one product for a stack of rows times a
    matrix (x @ W), else one call for the stack, which multiplies its matrices in C++ (a
    broadcast operand read in place), each as nn.matmul would, and adds up a sum one
    product at a time (not from the stack of them all)."""
    if a.ndim == 2 and b.ndim == 2:
        return matmul(a, b, transpose_a, transpose_b)
    if b.ndim == 2 and not transpose_a and summed_to in (None, a.shape[:-2]):
        rows = matmul(as_rows(a), b, transpose_b=transpose_b)  # the batch in the rows
        return rows.reshape(a.shape[:-1] + rows.shape[-1:])
    if a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
        out = np.matmul(
            np.swapaxes(a, -1, -2) if transpose_a else a,
            np.swapaxes(b, -1, -2) if transpose_b else b,
        )
        return out if summed_to is None else unbroadcast(out, summed_to + out.shape[-2:])
    return _C.batched_matmul(a, b, transpose_a, transpose_b, summed_to)  # by position


def summed(operand, dout):
    """The batch shape `operand`'s gradient sums to, or None where that is dout's."""
    batch = operand.shape[:-2]
    return None if batch == dout.shape[:-2] else batch


def as_rows(a):
    """A stack of matrices as one matrix of all their rows (not reshape(-1, k): that fails
    on an empty stack)."""
    return a.reshape(math.prod(a.shape[:-1]), a.shape[-1])


@register_gate
class Matmul(Gate):
    """a @ b like np.matmul: matrices, stacks of matrices whose batch axes broadcast, and
    vectors (a 1-D a is a row, a 1-D b a column, and that axis is dropped from the output)."""

    op = "matmul"
    inputs = ("a", "b")
    formula = "{0} @ {1}"
    rule = (
        "a matmul gate swaps like multiply, as matrices: d{0} = dout @ {1}ᵀ and "
        "d{1} = {0}ᵀ @ dout (summed over broadcast batch axes)"
    )
    derivatives = ("dout @ {1}ᵀ", "{0}ᵀ @ dout")

    def shape(self, a, b):
        if a is None or b is None:
            return None
        if not a or not b:
            raise ShapeError(
                f"matmul takes arrays of rank >= 1, got a {a} and b {b} "
                "(scale by a scalar with multiply)"
            )
        a2 = (1,) + a if len(a) == 1 else a
        b2 = b + (1,) if len(b) == 1 else b
        if not dims_match(a2[-1], b2[-2]):
            raise ShapeError(f"a {a} has {a2[-1]} columns but b {b} has {b2[-2]} rows")
        try:
            batch = broadcast_shape(a2[:-2], b2[:-2])
        except ShapeError:
            raise ShapeError(f"the batch axes of a {a} and b {b} do not broadcast") from None
        rows = a2[-2:-1] if len(a) > 1 else ()
        columns = b2[-1:] if len(b) > 1 else ()
        return batch + rows + columns

    def forward(self, a, b):
        a2 = a[np.newaxis] if a.ndim == 1 else a
        b2 = b[:, np.newaxis] if b.ndim == 1 else b
        out = batched_matmul(a2, b2)
        dropped = (-2,) * (a.ndim == 1) + (-1,) * (b.ndim == 1)
        return np.squeeze(out, dropped) if dropped else out, (a2, b2, a.ndim, b.ndim)

    def backward(self, dout, cache, needs):
        a2, b2, a_rank, b_rank = cache
        if a_rank == 1:
            dout = np.expand_dims(dout, -2 if b_rank > 1 else (-2, -1))
        elif b_rank == 1:
            dout = dout[..., np.newaxis]
        # Each gradient summed over the batch axes its operand was broadcast along (in
        # C++, a product at a time), or not at all: its shape is the operand's.
        da = db = None
        if needs[0]:
            da = batched_matmul(dout, b2, False, True, summed(a2, dout))
            da = da[..., 0, :] if a_rank == 1 else da
        if needs[1] and b2.ndim == 2:  # every matrix of the batch met the same b: one product
            db = matmul(as_rows(a2), as_rows(dout), transpose_a=True)
        elif needs[1]:
            db = batched_matmul(a2, dout, True, False, summed(b2, dout))
        if needs[1] and b_rank == 1:
            db = db[..., 0]
        return da, db

    def summarize_cache(self, cache, input_names):
        a2, b2 = cache[:2]
        return [f"saved {input_names[0]} {a2.shape} and {input_names[1]} {b2.shape}"]


def reshaped(a, shape):
    """np.reshape(a, shape): an array by its own method, as np.reshape calls it, without that
    function's Python wrapper (0.4 against 1.2 us: a transformer's call at batch 1 runs
    eight reshapes)."""
    return a.reshape(shape) if type(a) is np.ndarray else np.reshape(a, shape)


class ShapeMove(Gate):
    """A gate whose backward puts the upstream gradient back into the input's shape."""

    inputs = ("x",)
    keeps_integers = True

    def summarize_cache(self, cache, input_names):
        return [f"saved the shape of {input_names[0]}: {tuple(cache)}"]


@register_gate
class Reshape(ShapeMove):
    """The same numbers in a new shape (one size may be -1: whatever is left)."""

    op = "reshape"
    formula = "reshape({0})"
    rule = "reshape moves no numbers: the upstream gradient is reshaped back to {0}'s shape"
    derivatives = ("1 (reshaped back)",)

    def __init__(self, shape):
        sizes = (shape,) if is_int(shape) else tuple(shape)
        self.shape_to = tuple(integer(f"shape[{i}]", n, -1) for i, n in enumerate(sizes))
        if self.shape_to.count(-1) > 1:
            raise GateError(f"shape {self.shape_to} may hold at most one -1")

    def attrs(self):
        return {"shape": self.shape_to}

    def shape(self, x):
        total = None if x is None or None in x else math.prod(x)
        known = math.prod(n for n in self.shape_to if n != -1)
        if -1 not in self.shape_to:
            if total is not None and total != known:
                raise ShapeError(f"cannot reshape {x} ({total} elements) into {self.shape_to}")
            return self.shape_to
        if total is not None and (known == 0 or total % known):
            raise ShapeError(f"cannot reshape {x} ({total} elements) into {self.shape_to}")
        rest = None if total is None else total // known
        return tuple(rest if n == -1 else n for n in self.shape_to)

    def forward(self, x):
        return reshaped(x, self.shape_to), np.shape(x)

    def backward(self, dout, cache, needs):
        return (reshaped(dout, cache),)


@register_gate
class Flatten(ShapeMove):
    """Keep the axes before `axis` and merge the rest into one: (N, C, H, W) -> (N, C*H*W)
    with axis=1 (the default), a vector with axis=0."""

    op = "flatten"
    formula = "flatten({0})"
    rule = "flatten moves no numbers: the upstream gradient is reshaped back to {0}'s shape"
    derivatives = ("1 (reshaped back)",)

    def __init__(self, axis=1):
        self.axis = integer("axis", axis, 0)

    def attrs(self):
        return {"axis": self.axis}

    def shape(self, x):
        if x is None:
            return None
        if len(x) < self.axis:
            raise ShapeError(f"cannot flatten from axis {self.axis} an input of rank {len(x)}")
        rest = x[self.axis :]
        return x[: self.axis] + (None if None in rest else math.prod(rest),)

    def forward(self, x):
        shape = np.shape(x)
        return reshaped(x, shape[: self.axis] + (math.prod(shape[self.axis :]),)), shape

    def backward(self, dout, cache, needs):
        return (reshaped(dout, cache),)


def normalized_axis(axis, rank, what="axis"):
    if not -rank <= axis < rank:
        raise ShapeError(f"{what} {axis} is out of range for an input of rank {rank}")
    return axis % rank


@functools.lru_cache(maxsize=256)
def axes_permutation(axes, rank):
    """Transpose's axes (None: reversed) for an input of `rank` axes, checked and made
    non-negative; kept per (axes, rank), as a walk transposes the same ranks call after
    call (1.5 us a call worked out afresh, against 0.4 for the move itself)."""
    if axes is None:
        return tuple(reversed(range(rank)))
    permutation = tuple(normalized_axis(a, rank, "axes entry") for a in axes)
    if sorted(permutation) != list(range(rank)):
        raise ShapeError(f"axes {axes} are not a permutation of the {rank} axes")
    return permutation


@functools.lru_cache(maxsize=256)
def inverse_permutation(permutation):
    """The axes that undo transpose(permutation): np.argsort's, kept per permutation (in
    a training step its Python wrapper cost more than the transposes themselves: at batch
    1 a transformer's eight head split and merge backwards spent 4.5% of the walk in it)."""
    return tuple(np.argsort(permutation).tolist())


@register_gate
class Transpose(Gate):
    """The axes permuted: output axis i is input axis axes[i] (reversed when axes is None),
    like np.transpose."""

    op = "transpose"
    keeps_integers = True
    inputs = ("x",)
    formula = "{0}ᵀ"
    rule = "transpose moves numbers: the upstream gradient is transposed back by the inverse axes"
    derivatives = ("1 (transposed back)",)

    def __init__(self, axes=None):
        self.axes = (
            None if axes is None else tuple(integer(f"axes[{i}]", a) for i, a in enumerate(axes))
        )

    def attrs(self):
        return {"axes": self.axes}

    def _permutation(self, rank):
        return axes_permutation(self.axes, rank)

    def shape(self, x):
        return None if x is None else tuple(x[a] for a in self._permutation(len(x)))

    def forward(self, x):
        if type(x) is np.ndarray:  # the method np.transpose calls, without its wrapper
            permutation = self._permutation(x.ndim)
            return x.transpose(permutation), permutation
        permutation = self._permutation(np.ndim(x))
        return np.transpose(x, permutation), permutation

    def backward(self, dout, cache, needs):
        inverse = inverse_permutation(tuple(cache))
        if type(dout) is np.ndarray:  # the method np.transpose calls, without its wrapper
            return (dout.transpose(inverse),)
        return (np.transpose(dout, inverse),)

    def summarize_cache(self, cache, input_names):
        return [f"saved the axes {tuple(cache)}"]


@register_gate
class Concat(Gate):
    """Any number of inputs joined along `axis`; every other axis must match. Backward
    splits the upstream gradient back into the inputs' pieces."""

    op = "concat"
    keeps_integers = True
    inputs = ()  # variadic: one or more (and no formula: the drawings write concat(a, b, ...))
    rule = (
        "concat distributes by position: each input receives its own slice of the upstream gradient"
    )
    derivatives = ("1 on its own slice",)

    def __init__(self, axis=0):
        self.axis = integer("axis", axis)

    def attrs(self):
        return {"axis": self.axis}

    def shape(self, *shapes):
        if not shapes:
            raise ShapeError("concat needs at least one input")
        known = [s for s in shapes if s is not None]
        if not known:
            return None
        rank = len(known[0])
        if rank == 0 or any(len(s) != rank for s in known):
            raise ShapeError(f"concat joins inputs of one rank >= 1, got {known}")
        axis = normalized_axis(self.axis, rank)
        out = []
        for i in range(rank):
            sizes = {s[i] for s in known if s[i] is not None}
            if i != axis and len(sizes) > 1:
                raise ShapeError(
                    f"the inputs differ along axis {i} ({sorted(sizes)}), which "
                    f"concat along axis {axis} keeps"
                )
            out.append(sizes.pop() if len(sizes) == 1 else None)
        if len(known) < len(shapes):
            return None
        joined = [s[axis] for s in known]
        out[axis] = None if None in joined else sum(joined)
        return tuple(out)

    def forward(self, *xs):
        return np.concatenate(xs, axis=self.axis), [np.shape(x)[self.axis] for x in xs]

    def backward(self, dout, cache, needs):
        return tuple(np.split(dout, np.cumsum(cache)[:-1], axis=self.axis))

    def summarize_cache(self, cache, input_names):
        return [f"saved the sizes along axis {self.axis}: {list(cache)}"]


#: dtypes whose np.mean is their own sum divided by the count (float16 sums in float32)
_MEAN_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@functools.lru_cache(maxsize=256)
def _kept_leading_axes(axis, ndim):
    """k when a mean over `axis` of a rank-`ndim` array averages exactly its trailing axes
    k, ..., ndim - 1 (and keeps the k before them), else None."""
    if axis is None:
        return 0
    axes = sorted(a % ndim if -ndim <= a < ndim else a for a in np.atleast_1d(axis).tolist())
    kept = ndim - len(axes)
    return kept if axes and axes == list(range(kept, ndim)) else None


@functools.lru_cache(maxsize=256)
def _middle_axis(axis, shape):
    """The axis when a mean over `axis` of an array of `shape` averages a single axis
    with more than one entry after it, else None: numpy adds such an axis's slices in
    order (its iterator keeps the entries after it as the inner loop), where it sums the
    last axis, or one with only single entries after it, pairwise."""
    axes = None if axis is None else np.atleast_1d(axis).tolist()
    if axes is None or len(axes) != 1 or not -len(shape) <= axes[0] < len(shape):
        return None
    middle = axes[0] % len(shape)
    return middle if math.prod(shape[middle + 1 :]) > 1 else None


@register_gate
class Mean(Sum):
    """The mean over `axis` (None: all axes); a sum scaled by 1/n, so backward spreads
    dout/n to every averaged element."""

    op = "mean"
    formula = "mean {0}"
    rule = (
        "a mean distributes like a sum, scaled: every averaged element receives the "
        "upstream gradient / n"
    )
    derivatives = ("1/n",)

    def forward(self, x):
        if type(x) is np.ndarray and x.size and x.dtype in _MEAN_DTYPES:
            kept = _kept_leading_axes(self.axis, x.ndim)
            if kept is not None and x.flags.c_contiguous:
                # The trailing axes of a contiguous array: rows of values, each averaged in
                # C++ with numpy's pairwise summation (cpp/row_means.h), np.mean's numbers
                # without numpy's iterator, which costs 25-30 ns a row.
                means = _C.row_means(x.reshape(math.prod(x.shape[:kept]), -1))
                if self.keepdims:
                    return means.reshape(x.shape[:kept] + (1,) * (x.ndim - kept)), x.shape
                return (means.reshape(x.shape[:kept]) if kept else means[0]), x.shape
            shape = x.shape
            middle = _middle_axis(self.axis, shape)
            if middle is not None and x.flags.c_contiguous:
                # One axis before the last (a transformer's mean over the steps), summed in
                # order in C++ (cpp/row_means.h), without numpy's reduction machinery: 3.3
                # -> 1.8 us a call on (1, 32, 64).
                means = _C.middle_means(x.reshape(math.prod(shape[:middle]), shape[middle], -1))
                kept_shape = shape[:middle] + (1,) * self.keepdims + shape[middle + 1 :]
                return means.reshape(kept_shape), shape
            # np.mean's own numbers (the sum, divided by the count) without its Python
            # wrapper, which costs as much as a small mean: 2.7 of 5.4 us on (1, 64, 8, 8).
            total = np.add.reduce(x, axis=self.axis, keepdims=self.keepdims)
            count = x.size // np.size(total)
            if type(total) is np.ndarray:
                return np.true_divide(total, count, out=total), x.shape
            return total / count, x.shape
        return np.mean(x, axis=self.axis, keepdims=self.keepdims), np.shape(x)

    def backward(self, dout, cache, needs):
        middle = _middle_axis(self.axis, tuple(cache))
        if middle is not None and type(dout) is np.ndarray and dout.dtype in _MEAN_DTYPES:
            # dout / n copied to each averaged entry in one call, the numbers of the
            # division and copy below without their three numpy calls: 2.6 -> 1.3 us a
            # call on a transformer's (1, 64) gradient at one sequence.
            rows = dout.reshape(math.prod(cache[:middle]), math.prod(cache[middle + 1 :]))
            return (_C.spread_means(rows, cache[middle]).reshape(cache),)
        divided = self.divided(dout, cache)
        if divided is not None:
            # dout / n once per result, then copied out: the same divisions, where dividing
            # while broadcasting into dx ran numpy's strided loop per entry (2.3x the copy's
            # time on a global average pool's (16, 9, 35, 28) gradient)
            dx = np.empty(cache, dout.dtype)
            np.copyto(dx, divided)
            return (dx,)
        return super().backward(dout / max(spread(self.axis, tuple(cache))[1], 1), cache, needs)

    def divided(self, dout, cache):
        """dout / n shaped to broadcast to x's shape `cache` (the averaged axes of size 1):
        what backward copies to every averaged element; None where dout is not a float
        array (backward divides it as the sum's gradient)."""
        if type(dout) is not np.ndarray or dout.dtype.kind != "f":
            return None
        kept, count = spread(self.axis, tuple(cache))
        return np.true_divide(dout.reshape(kept), max(count, 1))  # n = 0: dx is empty
