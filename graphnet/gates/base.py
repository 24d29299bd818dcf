"""What every gate is, the registry of gates, and the shape rules several gates share.

A gate is the recipe for one kind of node, complete in one class: its name (`op`), its
hyperparameters (the constructor's keyword arguments, checked there), how its output shape
follows from its inputs' shapes, how to compute the output (`forward`), how to turn the
gradient of the output into gradients of the inputs (`backward`), and how it reads to a
person: the formula of its forward pass, the sentence of its local rule, the formula of
each local derivative, and a summary of what it caches. It keeps no arrays: values and
caches live in the graph's value store.

    @gn.register_gate
    class Cube(gn.Gate):
        op = "cube"
        formula = "{0}³"
        rule = "a cube gate scales the upstream gradient by 3·{0}²"
        derivatives = ("3·{0}²",)

        def shape(self, x):
            return x

        def forward(self, x):
            return x ** 3, x

        def backward(self, dout, cache, needs):
            return (3 * cache ** 2 * dout,)

    g.apply("cube", x, name="c")

Every registered gate works everywhere a built-in one does: `Graph.apply`, checkpoints,
networkx conversion, drawings, the step player, anomaly mode and gradcheck.
"""

from __future__ import annotations

import keyword
import re
from typing import (
    Any,
    Callable,
    ClassVar,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    cast,
)

import numpy as np

from .._format import is_scalar, num, scalar
from ..errors import GraphError

Shape = Optional[Tuple[Optional[int], ...]]


class GateError(ValueError):
    """A gate refused its hyperparameters or its inputs' shapes; the graph adds the node's
    and the gate's names and the input shapes to the message."""


class ShapeError(GateError):
    """A gate's shape rule failed."""


class Gate:
    """The base class of every gate (see the module docstring for a complete example).

    Class attributes a gate sets:
      op: the name it is registered and built under ("add", "conv", ...).
      inputs: names of its inputs, for messages and the docs ("x", "w", "b").
      integer_inputs: positions of inputs that hold integers (class labels): they never
        get a gradient, and an input fed there without a dtype keeps its integer values.
      formula: its forward pass over the inputs {0}, {1}, ... and its output {f}.
      rule: its local rule in one sentence, shown by the step player.
      derivatives: the local derivative d{f}/d{i} per input, as formulas.
      stateful: True for gates with per-node state across calls (batchnorm's running
        averages, dropout's random stream) or whose forward depends on the graph's mode
        (the lstm's saves no states in eval mode); forward then receives (state,
        training, ...).
      keeps_integers: True for gates that only move numbers (reshape, slice, ...): on
        integer inputs (labels, indices) their output is integers too, not the graph's
        float dtype.
      output_dtype: the dtype of every output, for gates whose output is not a float to
        differentiate (a comparison's 0/1 mask): such a node needs no gradient.

    A gate may also define eval_forward(*values) -> (output, cache): what forward returns
    in eval mode (the same output, bit for bit), without the work only training needs
    (dropout's checks, a loss's gradient) and without state. Eval-mode walks call it
    instead of forward. A backward may still follow an eval-mode forward (gradcheck, a
    validation loss differentiated), so its cache must serve backward as forward's does.
    """

    op: ClassVar[str] = ""
    inputs: ClassVar[Tuple[str, ...]] = ()
    integer_inputs: ClassVar[Tuple[int, ...]] = ()
    formula: ClassVar[str] = ""
    rule: ClassVar[str] = ""
    derivatives: ClassVar[Tuple[str, ...]] = ()
    stateful: ClassVar[bool] = False
    keeps_integers: ClassVar[bool] = False
    output_dtype: ClassVar[Optional[np.dtype]] = None
    eval_forward: Optional[Callable[..., tuple]] = None

    def attrs(self) -> dict:
        """The gate's hyperparameters, as keyword arguments of its constructor."""
        return {}

    def shape(self, *shapes: Shape) -> Shape:
        """Output shape from the input shapes (tuples that may hold None for unknown sizes,
        or None for an unknown shape). Raise ShapeError on a mismatch."""
        return None

    def forward(self, *values: Any) -> tuple:
        """Return (output, cache)."""
        raise NotImplementedError

    def backward(self, dout: Any, cache: Any, needs: Sequence[bool]) -> tuple:
        """Return one gradient per input; `needs[i]` is False when nobody wants input i's
        gradient, and the gate may then return None for it instead of computing it."""
        raise NotImplementedError

    def summarize_cache(self, cache: Any, input_names: Sequence[str]) -> list:
        """Lines of text saying what `cache` (this gate's forward's) holds, for drawings."""
        return [] if cache is None else [f"saved {generic_summary(cache)}"]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.attrs().items())
        return f"{type(self).__name__}({args})"


# ----- the registry ----------------------------------------------------------------------

_REGISTRY: Dict[str, Type[Gate]] = {}
_SOURCE_KINDS = ("input", "param", "const")
GateClass = TypeVar("GateClass", bound=type)


def register_gate(cls: GateClass) -> GateClass:
    """Class decorator: make `cls` (a Gate subclass) buildable as `graph.apply(cls.op,
    ...)` and known to checkpoints, conversions and drawings. Registering the same class
    again (a notebook cell run twice) replaces it; another class may not take an op that
    is already registered.

    Examples:
        >>> @gn.register_gate
        ... class Cube(gn.Gate):
        ...     op, inputs, formula, derivatives = "cube", ("x",), "{0}³", ("3·{0}²",)
        ...     def shape(self, x): return x
        ...     def forward(self, x): return x ** 3, x
        ...     def backward(self, dout, cache, needs): return (3 * cache ** 2 * dout,)
        >>> g.apply("cube", g.input("x"), name="c")
    """
    if not (isinstance(cls, type) and issubclass(cls, Gate)):
        raise TypeError(f"register_gate takes a subclass of graphnet.Gate, got {cls!r}")
    op = cls.op
    if (
        not (
            isinstance(op, str)
            and op.isidentifier()
            and not keyword.iskeyword(op)
            and not op.startswith("_")
        )
        or op in _SOURCE_KINDS
    ):
        raise GraphError(
            f"gate class {cls.__qualname__}: op must be a Python identifier "
            f"that does not start with '_' and is not one of {_SOURCE_KINDS}, "
            f"got {op!r}"
        )
    for method in ("forward", "backward"):
        if getattr(cls, method) is getattr(Gate, method):
            raise GraphError(f"gate class {cls.__qualname__} ({op!r}) does not define {method}()")
    known = _REGISTRY.get(op)
    if known is not None and (known.__module__, known.__qualname__) != (
        cls.__module__,
        cls.__qualname__,
    ):
        raise GraphError(
            f"op {op!r} is already registered by {known.__module__}."
            f"{known.__qualname__}; give {cls.__qualname__} another op"
        )
    _REGISTRY[op] = cls
    return cls


def gate_names() -> List[str]:
    """The ops of every registered gate, sorted."""
    return sorted(_REGISTRY)


#: The gate class registered as an op, or None (no checks: building a node calls it).
lookup: Callable[[str], Optional[Type[Gate]]] = _REGISTRY.get


def gate_class(op: str) -> Type[Gate]:
    """The gate class registered as `op`, or a GraphError naming it."""
    cls = _REGISTRY.get(op) if isinstance(op, str) else None
    if cls is None:
        raise GraphError(
            f"unknown gate {op!r}: no gate is registered under that op (is the "
            f"module that defines it imported?); registered: " + ", ".join(gate_names())
        )
    return cls


# ----- how a gate reads --------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(\d+|[A-Za-z_]\w*)\}")


def fill(template: str, inputs: Sequence[str], output: str, attrs: Optional[dict] = None) -> str:
    """A formula or rule with {0}, {1}, ... replaced by input names, {f} by the output
    name and {name} by the gate's hyperparameter `name` (pow's {exponent}); any other
    braces are left as written."""
    attrs = attrs or {}

    def replace(match):
        key = match.group(1)
        if key == "f":
            return output
        if key.isdigit():
            return inputs[int(key)] if int(key) < len(inputs) else match.group(0)
        if key not in attrs:
            return match.group(0)
        value = attrs[key]
        return num(value) if is_real(value) else str(value)

    return _PLACEHOLDER.sub(replace, template)


def formula_of(gate_cls: Type[Gate], arity: int) -> str:
    """The gate's forward formula, or op(inputs) for a gate that gives none."""
    if gate_cls.formula:
        return gate_cls.formula
    return f"{gate_cls.op}(" + ", ".join(f"{{{i}}}" for i in range(arity)) + ")"


def rule_of(gate_cls: Type[Gate]) -> str:
    """The gate's local rule, or the first line of its docstring for a gate that gives none."""
    if gate_cls.rule:
        return gate_cls.rule
    doc = (gate_cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else f"the {gate_cls.op} gate's local derivative"


def mask_summary(mask: Any, what: str) -> str:
    mask = np.asarray(mask)
    if mask.size == 1:
        return f"{what}: {bool(mask.reshape(()))}"
    return f"{what}: {int(mask.sum())}/{mask.size} true {share(mask)}"


def share(mask: Any) -> str:
    """The share of true entries of a mask, as "(25%)"; "(empty)" for an empty batch's."""
    mask = np.asarray(mask)
    return f"({num(100 * mask.mean())}%)" if mask.size else "(empty)"


def generic_summary(item: Any) -> str:
    """A cache described without knowing its gate: arrays by shape, masks by how many pass."""
    if item is None:
        return "nothing"
    if isinstance(item, np.ndarray) and item.dtype == bool:
        return mask_summary(item, "mask")
    if isinstance(item, (np.ndarray, np.generic, float, int)):
        return num(scalar(item)) if is_scalar(item) else f"array {np.shape(item)}"
    if isinstance(item, dict):
        return "{" + ", ".join(f"{k}: {generic_summary(v)}" for k, v in item.items()) + "}"
    if isinstance(item, tuple) and hasattr(item, "_fields"):
        return ", ".join(f"{k} {generic_summary(v)}" for k, v in zip(item._fields, item))
    if isinstance(item, (tuple, list)):
        # A tuple of ints is a shape (conv and pool keep the input's shape).
        if item and all(isinstance(v, int) for v in item):
            return f"shape {item}"
        return ", ".join(generic_summary(v) for v in item)
    return type(item).__name__


# ----- shape rules shared by several gates -----------------------------------------------


def dims_match(a: Optional[int], b: Optional[int]) -> bool:
    return a is None or b is None or a == b


def broadcast_shape(*shapes: Shape) -> Shape:
    """numpy's broadcasting rule on shapes that may hold None (unknown) sizes."""
    if None in shapes:
        return None
    given = cast(Tuple[Tuple[Optional[int], ...], ...], shapes)
    ndim = max(len(s) for s in given)
    padded = [(1,) * (ndim - len(s)) + tuple(s) for s in given]
    out = []
    for dims in zip(*padded):
        sizes = {d for d in dims if d != 1}
        known = {d for d in sizes if d is not None}
        if len(known) > 1:
            raise ShapeError("shapes " + " and ".join(map(str, shapes)) + " do not broadcast")
        out.append(known.pop() if known else (None if None in sizes else 1))
    return tuple(out)


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a gradient back down to the shape of an input that numpy broadcast up."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(extra))) if extra else grad
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def check_rank(shape: Shape, rank: int, layout: str, what: str) -> None:
    if shape is not None and len(shape) != rank:
        raise ShapeError(f"{what} must be {layout}, got {shape}")


# ----- hyperparameters --------------------------------------------------------------


def is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


#: Sizes, strides and pads beyond this cannot describe an array in memory; refusing them
#: here keeps every product the kernels form within int64.
MAX_SIZE = 2**31 - 1


def integer(what: str, value: Any, minimum: Optional[int] = None) -> int:
    """A hyperparameter that must be an integer (stride, pad, a window size, a seed) in
    [minimum, MAX_SIZE], as a Python int, or a GateError saying what is wrong."""
    if not is_int(value):
        raise GateError(f"{what} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise GateError(f"{what} must be >= {minimum}, got {what}={value}")
    if abs(value) > MAX_SIZE:
        raise GateError(f"{what} = {value} is absurdly large (at most {MAX_SIZE})")
    return value


def real(what: str, value: Any, check: Callable[[float], bool], expected: str) -> float:
    """A hyperparameter that must be a real number passing `check`, as a float."""
    if not is_real(value) or not check(float(value)):
        raise GateError(f"{what} must be {expected}, got {value!r}")
    return float(value)
