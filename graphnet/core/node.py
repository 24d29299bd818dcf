"""Node: one vertex of a graph, a description fixed when it is built."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Tuple

import numpy as np

if TYPE_CHECKING:
    from ..gates.base import Gate
    from .graph import Graph


class Node:
    """A source (input, param, const) or the output of a gate.

    A node describes: its name, kind, gate (with the gate's hyperparameters), inputs,
    the shape inferred when it was built (`static_shape`, None where unknown), its dtype
    and whether it gets a gradient. These are fixed when the node is built. What the walks
    compute lives in the graph's value store and reads through the node: `value` (after
    forward), `grad` (d target / d this node after backward; None for nodes that need no
    gradient), `cache` (what the gate saved for its backward) and `state` (a stateful
    gate's per-node state: batchnorm's running averages, dropout's random stream).
    Reading them never changes anything but an entry a fused step left to compute on
    first read.
    """

    __slots__ = (
        "graph",
        "index",
        "name",
        "kind",
        "gate",
        "inputs",
        "static_shape",
        "requires_grad",
        "declared_dtype",
        "__weakref__",
    )

    graph: Graph
    index: int
    name: str
    kind: str
    gate: Optional[Gate]
    inputs: Tuple[Node, ...]
    static_shape: Optional[Tuple[Optional[int], ...]]
    requires_grad: bool
    declared_dtype: Optional[np.dtype]

    def __init__(
        self,
        graph: Graph,
        index: int,
        name: str,
        kind: str,
        gate: Optional[Gate],
        inputs: Tuple[Node, ...],
        shape,
        dtype: Optional[np.dtype],
        requires_grad: bool,
    ):
        # Plain slot stores: a __setattr__ guard would cost more than the rest of building
        # a gate. The graph indexes nodes by name and walks their inputs: treat every
        # attribute here as read-only.
        self.graph, self.index, self.name, self.kind, self.gate = graph, index, name, kind, gate
        self.inputs, self.static_shape, self.declared_dtype = inputs, shape, dtype
        self.requires_grad = requires_grad

    @property
    def op(self) -> str:
        """The gate's op ('add', 'conv', ...) or the kind of source ('input', 'param',
        'const')."""
        return self.gate.op if self.gate is not None else self.kind

    @property
    def dtype(self) -> Optional[np.dtype]:
        """The node's dtype; for an input built without one, that of what was fed to it
        (None until then)."""
        if self.declared_dtype is not None:
            return self.declared_dtype
        value = self.graph.store.peek_value(self.index)
        return None if value is None else np.asarray(value).dtype

    @property
    def value(self) -> Any:
        """The output of the last forward that computed this node (None before). Inputs,
        params and consts may be assigned a new value (a param keeps its shape)."""
        return self.graph.store.value(self.index)

    @value.setter
    def value(self, item: Any) -> None:
        self.graph.store.set_value(self, item)

    @property
    def grad(self) -> Any:
        """The gradient of the last backward's target with respect to this node, in the
        node's shape. None before a backward; None again once a forward recomputed values
        that backward read (the gradient belonged to the old ones); None for nodes that
        need no gradient: integer inputs, consts, inputs built with requires_grad=False."""
        return self.graph.store.grad(self.index)

    @property
    def cache(self) -> Any:
        """What this node's gate saved in the last forward for its backward (a mask, the
        inputs, batchnorm's x_hat, ...; None for sources). `Gate.summarize_cache` says it
        in words."""
        return self.graph.store.cache(self.index)

    @property
    def state(self) -> dict:
        """The state a stateful gate keeps across calls: batchnorm's running averages,
        dropout's random stream (saved in checkpoints); empty for other nodes."""
        return self.graph.store.state(self.index)

    @property
    def shape(self) -> Optional[Tuple[Optional[int], ...]]:
        """The value's shape once computed, else the shape inferred at build time (None
        where unknown). Never computes anything."""
        shape = self.graph.store.peek_shape(self.index)
        return self.static_shape if shape is None else shape

    def __repr__(self) -> str:
        parts = [repr(self.name), f"op={self.op!r}", f"shape={self.shape}"]
        store = self.graph.store
        for label, item in (
            ("value", store.peek_value(self.index)),
            ("grad", store.peek_grad(self.index)),
        ):
            if item is not None and np.ndim(item) == 0:
                parts.append(f"{label}={round(float(item), 6)!r}")
        return f"Node({', '.join(parts)})"

    # Arithmetic on nodes builds gates in the node's graph.
    def __add__(self, other):
        return self.graph.add(self, other)

    def __radd__(self, other):
        return self.graph.add(other, self)

    def __sub__(self, other):
        return self.graph.subtract(self, other)

    def __rsub__(self, other):
        return self.graph.subtract(other, self)

    def __mul__(self, other):
        return self.graph.multiply(self, other)

    def __rmul__(self, other):
        return self.graph.multiply(other, self)

    def __truediv__(self, other):
        return self.graph.divide(self, other)

    def __rtruediv__(self, other):
        return self.graph.divide(other, self)

    def __neg__(self):
        return self.graph.negate(self)

    def __abs__(self):
        return self.graph.abs(self)

    def __pow__(self, exponent):
        return self.graph.pow(self, exponent)

    def __matmul__(self, other):
        return self.graph.matmul(self, other)

    def __rmatmul__(self, other):
        return self.graph.matmul(other, self)

    def __getitem__(self, key):
        return self.graph.index(self, key)

    def __iter__(self):
        # Without this, __getitem__ would make a node iterable, building gates forever.
        raise TypeError(
            f"node {self.name!r} is not iterable; index it (node[i]) to build a "
            "gate that picks part of its value"
        )

    # numpy hands `array @ node`, `array * node`, ... to the operators above (one gate)
    # instead of building an object array of one gate per entry.
    __array_ufunc__ = None

    # Nodes are graph vertices: identity, not value, decides equality.
    __eq__ = object.__eq__
    __hash__ = object.__hash__
