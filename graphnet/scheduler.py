"""Nodes and the walk over them.

The scheduler turns a graph into plans once per graph change: a topological order
(Kahn's algorithm, iterative, so a chain of any length works), and for each set of
targets the list of steps forward and backward. Running a plan is then a plain loop.
"""
import numpy as np

from . import anomaly
from .errors import GraphError
from .gates.base import unbroadcast


class Node:
    """One vertex of the graph: a source (input, param, const) or the output of a gate.

    After `forward`, `value` holds its output; after `backward`, `grad` holds d target /
    d this node (None for nodes that need no gradient); `cache` is what its gate saved
    for the backward pass; `state` is the gate's persistent per-node state (batchnorm's
    running averages, dropout's random stream).
    """

    __slots__ = ("graph", "name", "kind", "gate", "inputs", "static_shape", "dtype",
                 "requires_grad", "value", "grad", "cache", "state", "__weakref__")

    def __init__(self, graph, name, kind, gate=None, inputs=(), shape=None, dtype=None,
                 requires_grad=False, value=None):
        self.graph, self.name, self.kind, self.gate = graph, name, kind, gate
        self.inputs = tuple(inputs)
        self.static_shape, self.dtype = shape, dtype
        self.requires_grad = requires_grad
        self.value, self.grad, self.cache, self.state = value, None, None, {}

    @property
    def op(self):
        """The gate's name ('add', 'conv', ...) or the kind of source ('input', 'param', 'const')."""
        return self.gate.op if self.gate is not None else self.kind

    @property
    def shape(self):
        """The value's shape once computed, else the shape inferred at build time (None
        where unknown)."""
        return np.shape(self.value) if self.value is not None else self.static_shape

    def __repr__(self):
        parts = [repr(self.name), f"op={self.op!r}", f"shape={self.shape}"]
        for label in ("value", "grad"):
            item = getattr(self, label)
            if item is not None and np.ndim(item) == 0:
                parts.append(f"{label}={round(float(item), 6)!r}")
        return f"Node({', '.join(parts)})"

    # Arithmetic on nodes builds gates in the node's graph.
    def __add__(self, other): return self.graph.add(self, other)
    def __radd__(self, other): return self.graph.add(other, self)
    def __sub__(self, other): return self.graph.subtract(self, other)
    def __rsub__(self, other): return self.graph.subtract(other, self)
    def __mul__(self, other): return self.graph.multiply(self, other)
    def __rmul__(self, other): return self.graph.multiply(other, self)
    def __truediv__(self, other): return self.graph.divide(self, other)
    def __rtruediv__(self, other): return self.graph.divide(other, self)
    def __neg__(self): return self.graph.multiply(self, -1.0)

    # Nodes are graph vertices: identity, not value, decides equality.
    __eq__ = object.__eq__
    __hash__ = object.__hash__


def topological_order(nodes):
    """Kahn's algorithm over `nodes` (ties broken by insertion order). Raises GraphError
    naming the nodes of a cycle if there is one."""
    index = {id(n): i for i, n in enumerate(nodes)}
    missing_inputs = [0] * len(nodes)
    consumers = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        for inp in node.inputs:
            missing_inputs[i] += 1
            consumers[index[id(inp)]].append(i)
    ready = [i for i in range(len(nodes)) if missing_inputs[i] == 0]
    ready.reverse()  # a stack popped from the end: keeps insertion order for a builder's graph
    order = []
    while ready:
        i = ready.pop()
        order.append(nodes[i])
        for j in reversed(consumers[i]):
            missing_inputs[j] -= 1
            if missing_inputs[j] == 0:
                ready.append(j)
    if len(order) < len(nodes):
        raise GraphError("the graph has a cycle: " + _describe_cycle(nodes, missing_inputs))
    return order


def _describe_cycle(nodes, missing_inputs):
    stuck = {id(n) for n, m in zip(nodes, missing_inputs) if m > 0}
    node = next(n for n in nodes if id(n) in stuck)
    path, seen = [], {}
    while id(node) not in seen:
        seen[id(node)] = len(path)
        path.append(node)
        node = next(i for i in node.inputs if id(i) in stuck)
    cycle = path[seen[id(node)]:] + [node]
    return " <- ".join(n.name for n in cycle)


def ancestors(targets):
    """Every node some target depends on, targets included (iterative depth-first search)."""
    seen, stack = set(), list(targets)
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            stack.extend(node.inputs)
    return seen


class Scheduler:
    """Plans, cached until the graph changes, and the forward and backward walks."""

    def __init__(self, graph):
        self.graph = graph
        self.invalidate()

    def invalidate(self):
        self._order = self._sinks = None
        self._forward_plans = {}
        self._backward_plans = {}

    @property
    def order(self):
        if self._order is None:
            self._order = topological_order(self.graph._nodes)
            for node in self._order:
                if node.gate is not None:
                    node.requires_grad = any(i.requires_grad for i in node.inputs)
        return self._order

    def forward_plan(self, targets):
        key = tuple(id(t) for t in targets)
        plan = self._forward_plans.get(key)
        if plan is None:
            needed = ancestors(targets)
            nodes = [n for n in self.order if id(n) in needed]
            steps = [(n, self._forward_function(n), n.inputs) for n in nodes if n.gate]
            inputs = [n for n in nodes if n.kind == "input"]
            plan = self._forward_plans[key] = (steps, inputs)
        return plan

    def _forward_function(self, node):
        gate = node.gate
        if not gate.stateful:
            return gate.forward
        graph, state = self.graph, node.state
        return lambda *values: gate.forward(state, graph.training, *values)

    @property
    def sinks(self):
        """Gate nodes whose value no other node uses (sources, if there are no gates)."""
        if self._sinks is None:
            used = {id(i) for n in self.order for i in n.inputs}
            gates = [n for n in self.order if n.gate is not None]
            self._sinks = [n for n in (gates or self.order) if id(n) not in used]
        return self._sinks

    def backward_plan(self, target):
        """The gate steps in reverse order, and the nodes wanting a gradient that the
        target does not depend on (they get zeros)."""
        plan = self._backward_plans.get(id(target))
        if plan is None:
            needed = ancestors([target])
            steps = [(n, n.gate.backward, n.inputs, tuple(i.requires_grad for i in n.inputs))
                     for n in reversed(self.order)
                     if n.gate and n.requires_grad and id(n) in needed]
            unreached = [n for n in self.order if n.requires_grad and id(n) not in needed]
            plan = self._backward_plans[id(target)] = (steps, unreached)
        return plan

    def run_forward(self, targets):
        steps, _ = self.forward_plan(targets)
        check = anomaly.checker()
        node = None
        try:
            for step, (node, forward, inputs) in enumerate(steps, 1):
                node.value, node.cache = forward(*[i.value for i in inputs])
                if check:
                    check(node, node.value, "value", f"step {step} of forward")
        except (ValueError, TypeError) as err:
            raise _gate_failure("forward", node, err) from err

    def run_backward(self, target, seed):
        steps, unreached = self.backward_plan(target)
        for node in self.order:
            node.grad = None
        target.grad = seed
        check = anomaly.checker()
        node = None
        try:
            for step, (node, backward, inputs, needs) in enumerate(steps, 1):
                grads = backward(node.grad, node.cache, needs)
                for inp, need, grad in zip(inputs, needs, grads):
                    if need:
                        if check:
                            check(inp, grad, f"gradient from {node.name!r}",
                                  f"step {step} of backward")
                        if grad.shape != inp.value.shape:
                            grad = unbroadcast(grad, inp.value.shape)
                        # Fan-out: a node feeding several gates gets the sum of their gradients.
                        inp.grad = grad if inp.grad is None else inp.grad + grad
        except (ValueError, TypeError) as err:
            raise _gate_failure("backward", node, err) from err
        for node in unreached:
            if node.value is not None:
                node.grad = np.zeros_like(node.value)[()]


def _gate_failure(walk, node, err):
    """A kernel's own error, with the node, its gate and its inputs' shapes added."""
    if isinstance(err, GraphError) or node is None:
        return err
    inputs = ", ".join(f"{i.name!r} {np.shape(i.value)} {np.asarray(i.value).dtype}"
                       for i in node.inputs)
    return GraphError(f"{walk} of node {node.name!r} (gate {node.op!r}) failed: {err} "
                      f"[inputs: {inputs}]")
