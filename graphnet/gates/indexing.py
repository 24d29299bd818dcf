"""Indexing gates: `x[:, 2:5]` (slice: ints, slices, ... and None, like numpy's basic
indexing) and `W[ids]` (take: rows picked by an integer array, as an embedding does).
Backward puts the upstream gradient back where the picked numbers came from; rows picked
several times add up their gradients."""

import numpy as np

from .base import Gate, GateError, ShapeError, integer, is_int, register_gate
from .tensor import normalized_axis


def key_text(key):
    """A basic index as the text a checkpoint keeps and a drawing shows:
    (slice(None), slice(2, 5)) -> ':, 2:5'; (0, Ellipsis, None) -> '0, ..., None'."""
    return ", ".join(_part_text(part) for part in (key if isinstance(key, tuple) else (key,)))


def _part_text(part):
    if part is Ellipsis:
        return "..."
    if part is None:
        return "None"
    if isinstance(part, slice):
        bounds = [part.start, part.stop] + ([] if part.step is None else [part.step])
        return ":".join("" if b is None else str(integer("a slice bound", b)) for b in bounds)
    if is_int(part):
        return str(integer("an index", part))
    raise GateError(f"a basic index holds ints, slices, ... and None, got {part!r}")


def parse_key(text):
    """The key `key_text` wrote, as a tuple numpy indexes with."""
    if not text.strip():
        return ()
    parts = []
    for item in (item.strip() for item in text.split(",")):
        if item in ("...", "None"):
            parts.append(Ellipsis if item == "..." else None)
        elif ":" in item and item.count(":") <= 2:
            parts.append(
                slice(*(_parse_int(b, text) if b.strip() else None for b in item.split(":")))
            )
        else:
            parts.append(_parse_int(item, text))
    if parts.count(Ellipsis) > 1:
        raise GateError(f"index [{text}] holds more than one '...'")
    if any(isinstance(p, slice) and p.step == 0 for p in parts):
        raise GateError(f"index [{text}]: a slice step cannot be zero")
    return tuple(parts)


def _parse_int(item, text):
    try:
        return int(item)
    except ValueError:
        raise GateError(
            f"cannot read {item!r} in the index [{text}]: expected an int, a "
            "slice start:stop:step, '...' or None"
        ) from None


@register_gate
class Slice(Gate):
    """x[key] for a basic index `key` (ints, slices, ... and None): a view of x. Backward
    writes the upstream gradient into zeros of x's shape, at the picked places."""

    op = "slice"
    keeps_integers = True
    inputs = ("x",)
    formula = "{0}[{key}]"
    rule = (
        "a slice routes: the picked entries of {0} receive the upstream gradient, the rest "
        "receive 0"
    )
    derivatives = ("1 at the picked entries, else 0",)

    def __init__(self, key):
        self.key = parse_key(key if isinstance(key, str) else key_text(key))
        self.text = key_text(self.key)  # one spelling, whatever spacing it came with

    def attrs(self):
        return {"key": self.text}

    def shape(self, x):
        if x is None:
            return None
        indexed = sum(p is not None and p is not Ellipsis for p in self.key)
        if indexed > len(x):
            raise ShapeError(f"index [{self.text}] indexes {indexed} axes but x has {len(x)}")
        full = (slice(None),) * (len(x) - indexed)
        key = (
            self.key + full
            if Ellipsis not in self.key
            else sum((full if p is Ellipsis else (p,) for p in self.key), ())
        )
        out, axis = [], 0
        for part in key:
            if part is None:
                out.append(1)
                continue
            size, axis = x[axis], axis + 1
            if isinstance(part, slice):
                out.append(
                    len(range(*part.indices(size)))
                    if size is not None
                    else None
                    if part != slice(None)
                    else size
                )
            elif size is not None and not -size <= part < size:
                raise ShapeError(f"index {part} is out of range for axis {axis - 1} of size {size}")
        return tuple(out)

    def forward(self, x):
        try:
            return x[self.key], np.shape(x)
        except IndexError as err:
            raise GateError(
                f"index [{self.text}] on an input of shape {np.shape(x)}: {err}"
            ) from None

    def backward(self, dout, cache, needs):
        dx = np.zeros(cache, dtype=np.result_type(dout))
        dx[self.key] = dout
        return (dx,)

    def summarize_cache(self, cache, input_names):
        return [f"saved the shape of {input_names[0]}: {cache}"]


@register_gate
class Take(Gate):
    """np.take(x, indices, axis): along `axis`, the entries of x at `indices` (an integer
    array of any shape, which replaces that axis): W[ids] is an embedding lookup. Backward
    adds each picked entry's upstream gradient back at its index (repeats add up)."""

    op = "take"
    keeps_integers = True
    inputs = ("x", "indices")
    integer_inputs = (1,)
    formula = "{0}[{1}]"
    rule = (
        "take routes like a slice: each entry of {0} receives the upstream gradient of "
        "every place it was picked for, added up; the indices get no gradient"
    )
    derivatives = ("1 where picked (repeats add up), else 0", "none (indices)")

    def __init__(self, axis=0):
        self.axis = integer("axis", axis)

    def attrs(self):
        return {"axis": self.axis}

    def shape(self, x, indices):
        if x is None:
            return None
        axis = normalized_axis(self.axis, len(x))
        if indices is None:
            return None
        return x[:axis] + tuple(indices) + x[axis + 1 :]

    def forward(self, x, indices):
        axis = normalized_axis(self.axis, np.ndim(x))
        size = np.shape(x)[axis]
        if np.size(indices) and not -size <= np.min(indices) <= np.max(indices) < size:
            wrong = np.asarray(indices)[(indices < -size) | (indices >= size)]
            raise GateError(
                f"indices {wrong[:5].tolist()} are out of range for axis {axis} "
                f"of size {size} (indices go from {-size} to {size - 1})"
            )
        return np.take(x, indices, axis=axis), (np.shape(x), indices)

    def backward(self, dout, cache, needs):
        shape, indices = cache
        axis = normalized_axis(self.axis, len(shape))
        rest = shape[:axis] + shape[axis + 1 :]
        picked = list(range(axis, axis + np.ndim(indices)))
        # The picked axes first, flattened to one list of rows, then scattered with add.
        rows = np.moveaxis(dout, picked, list(range(len(picked)))).reshape(
            (np.size(indices),) + rest
        )
        dx = np.zeros((shape[axis],) + rest, dtype=np.result_type(dout))
        np.add.at(dx, np.ravel(indices), rows)
        return np.moveaxis(dx, 0, axis), None

    def summarize_cache(self, cache, input_names):
        shape, indices = cache
        return [
            f"saved {np.size(indices)} indices into axis {self.axis} of {input_names[0]} {shape}"
        ]
