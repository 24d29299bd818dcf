"""Nodes and the walk over them.

The scheduler turns a graph into plans once per graph change: a topological order
(Kahn's algorithm, iterative, so a chain of any length works), and for each set of
targets the list of steps forward and backward. Running a plan is then a plain loop.
"""
import numpy as np

from . import anomaly
from ..passes import conv_relu_pool as fusion
from ..passes.conv_relu_pool import Deferred
from ..errors import GraphError
from ..gates.base import unbroadcast


class _MaybeDeferred:
    """A node attribute that may hold a Deferred: reading it computes and keeps the array.
    Fused steps skip what only a person looking at the node would read, and that person
    still sees it."""

    def __init__(self, slot):
        self.slot = slot

    def __set_name__(self, owner, name):
        self.slot = owner.__dict__[self.slot]  # the slot's own descriptor: one lookup less

    def __get__(self, node, owner=None):
        if node is None:
            return self
        item = self.slot.__get__(node)
        if type(item) is Deferred:
            item = item.make()
            self.slot.__set__(node, item)
        return item

    def __set__(self, node, item):
        self.slot.__set__(node, item)


class Node:
    """One vertex of the graph: a source (input, param, const) or the output of a gate.

    After `forward`, `value` holds its output; after `backward`, `grad` holds d target /
    d this node (None for nodes that need no gradient); `cache` is what its gate saved
    for the backward pass; `state` is the gate's persistent per-node state (batchnorm's
    running averages, dropout's random stream). A fused step may leave a node's value,
    gradient or cache to be computed when first read (see fusion.py); reading them looks
    the same either way.
    """

    __slots__ = ("graph", "name", "kind", "gate", "inputs", "static_shape", "dtype",
                 "requires_grad", "_value", "_grad", "_cache", "state", "__weakref__")
    value = _MaybeDeferred("_value")
    grad = _MaybeDeferred("_grad")
    cache = _MaybeDeferred("_cache")

    def __init__(self, graph, name, kind, gate=None, inputs=(), shape=None, dtype=None,
                 requires_grad=False, value=None):
        self.graph, self.name, self.kind, self.gate = graph, name, kind, gate
        self.inputs = tuple(inputs)
        self.static_shape, self.dtype = shape, dtype
        self.requires_grad = requires_grad
        self._value, self._grad, self._cache, self.state = value, None, None, {}

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

    def forward_plan(self, targets, fuse=False):
        """The gate steps (node, function, inputs) in topological order, and the inputs to
        feed. fuse=True joins the steps that fusion.py knows how to run together."""
        key = (tuple(id(t) for t in targets), fuse)
        plan = self._forward_plans.get(key)
        if plan is None:
            needed = ancestors(targets)
            nodes = [n for n in self.order if id(n) in needed]
            steps = [(n, self._forward_function(n), n.inputs) for n in nodes if n.gate]
            if fuse:
                steps = fusion.fuse_forward(steps)
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

    def backward_plan(self, target, fuse=False):
        """The gate steps (node, function, inputs, which inputs need a gradient) in reverse
        order; the nodes wanting a gradient that the target does not depend on (they get
        zeros); and the nodes whose value or cache a fused forward may have deferred and a
        step here reads (a backward from inside a chain, or one run unfused). fuse=True as
        in forward_plan."""
        key = (id(target), fuse)
        plan = self._backward_plans.get(key)
        if plan is None:
            needed = ancestors([target])
            steps = [(n, n.gate.backward, n.inputs, tuple(i.requires_grad for i in n.inputs))
                     for n in reversed(self.order)
                     if n.gate and n.requires_grad and id(n) in needed]
            if fuse:
                steps = fusion.fuse_backward(steps)
            unreached = [n for n in self.order if n.requires_grad and id(n) not in needed]
            read = {id(n) for node, _, inputs, _ in steps for n in (node,) + tuple(inputs)}
            deferred_reads = [n for n in fusion.deferrable(self.order) if id(n) in read]
            plan = self._backward_plans[key] = (steps, unreached, deferred_reads)
        return plan

    def run_forward(self, targets):
        check = anomaly.checker()
        steps, _ = self.forward_plan(targets, fuse=self.graph.fuse and not check)
        node = None
        try:
            # The slots, not the properties, here and in run_backward: the properties cost a
            # call each, and no forward step reads what a fused step of the same walk
            # deferred (fusion._chains); run_backward computes what its steps read first.
            for step, (node, forward, inputs) in enumerate(steps, 1):
                node._value, node._cache = forward(*[i._value for i in inputs])
                if check:
                    check(node, node._value, "value", f"step {step} of forward")
        except (ValueError, TypeError) as err:
            raise _gate_failure("forward", node, err, getattr(forward, "chain", None)) from err

    def run_backward(self, target, seed):
        check = anomaly.checker()
        fuse = self.graph.fuse and not check
        steps, unreached, deferred_reads = self.backward_plan(target, fuse=fuse)
        for node in deferred_reads:  # the steps read the slots: compute what is deferred
            node._value, node._cache = node.value, node.cache
        for node in self.order:
            node._grad = None
        target._grad = seed
        node = None
        try:
            for step, (node, backward, inputs, needs) in enumerate(steps, 1):
                grads = backward(node._grad, node._cache, needs)
                for inp, need, grad in zip(inputs, needs, grads):
                    if need:
                        if check:
                            check(inp, grad, f"gradient from {node.name!r}",
                                  f"step {step} of backward")
                        if grad.shape != inp._value.shape:
                            grad = unbroadcast(grad, inp._value.shape)
                        # Fan-out: a node feeding several gates gets the sum of their gradients.
                        inp._grad = grad if inp._grad is None else inp._grad + grad
        except (ValueError, TypeError) as err:
            raise _gate_failure("backward", node, err, getattr(backward, "chain", None)) from err
        for node in unreached:
            if node._value is not None:
                node._grad = np.zeros_like(node.value)[()]


def _gate_failure(walk, node, err, chain=None):
    """A kernel's own error, with the node, its gate and its inputs' shapes added; for a
    fused step, the chain of nodes it runs, and the inputs of the chain's first."""
    if isinstance(err, GraphError) or node is None:
        return err
    first = chain[0] if chain else node
    inputs = ", ".join(f"{i.name!r} {np.shape(i.value)} {np.asarray(i.value).dtype}"
                       for i in first.inputs)
    if chain:
        names = " -> ".join(f"{n.name!r} ({n.op})" for n in chain)
        return GraphError(f"{walk} of the fused chain {names} failed: {err} "
                          f"[inputs of {first.name!r}: {inputs}]")
    return GraphError(f"{walk} of node {node.name!r} (gate {node.op!r}) failed: {err} "
                      f"[inputs: {inputs}]")
