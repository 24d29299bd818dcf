"""Graph: the builder users see. It names nodes, infers and checks shapes as gates are
added, converts and checks feeds, and hands the walks over to the scheduler."""
from collections.abc import MutableMapping

import numpy as np

from ..errors import GraphError, UnknownNodeError
from ..gates import base, conv, elementwise, nn, norm, reduce
from .scheduler import Node, Scheduler


class Graph:
    """A DAG of gate nodes.

    >>> g = Graph()
    >>> x, y, z = g.input("x"), g.input("y"), g.input("z")
    >>> f = g.multiply(g.add(x, y, name="q"), z, name="f")
    >>> g.forward(x=-2.0, y=5.0, z=-4.0)
    -12.0

    `fuse` (default True): run each conv -> relu -> max_pool chain whose conv and relu
    feed nothing else as one fused step each way (graphnet/fusion.py). Every node still
    reads its value and gradient; False runs the gates one by one.
    """

    def __init__(self, dtype=np.float64):
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise GraphError(f"a graph's dtype must be a float type, got {self.dtype}")
        self.training = True
        self.fuse = True
        self._nodes, self._by_name, self._auto_names = [], {}, {}
        self._scheduler = Scheduler(self)
        self.params = ParamDict(self)

    # ----- sources ---------------------------------------------------------------------

    def input(self, name, shape=None, dtype=None, requires_grad=True):
        """A value fed at each `forward`. `shape` may hold None for sizes that vary
        (the batch size, say). Integer inputs (labels) never get a gradient."""
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        if dtype.kind not in "fiu":
            raise GraphError(f"input {name!r}: dtype must be a float or integer type, got "
                             f"{dtype} (use the graph's float dtype, or np.int64 for labels)")
        shape = None if shape is None else _static_shape(f"input {name!r}", shape)
        return self._add(Node(self, name, "input", shape=shape, dtype=dtype,
                              requires_grad=bool(requires_grad) and dtype.kind == "f"))

    def param(self, name, value, dtype=None):
        """A learnable array owned by the graph (a copy of `value`, in the graph's dtype
        unless `dtype` says otherwise); it gets a gradient on every backward."""
        value = self._as_float_array(value, f"param {name!r}", dtype or self.dtype)
        return self._add(Node(self, name, "param", shape=np.shape(value), dtype=value.dtype,
                              requires_grad=True, value=value))

    def const(self, value, name=None, dtype=None):
        """A fixed value that never gets a gradient. Integer values (labels) stay integers;
        floats take the graph's dtype unless `dtype` says otherwise."""
        array = np.asarray(value)
        if array.dtype.kind not in "fiu":
            raise GraphError(f"const {name or ''!r}: value must be real numbers, got dtype "
                             f"{array.dtype}; convert it (e.g. np.asarray(value, float))")
        if dtype is None and array.dtype.kind not in "iu":
            dtype = self.dtype
        array = array.astype(dtype if dtype is not None else array.dtype, copy=False)
        return self._add(Node(self, name or self._auto_name("const"), "const",
                              shape=array.shape, dtype=array.dtype, value=array[()]))

    # ----- gates -----------------------------------------------------------------------

    def add(self, a, b, name=None): return self._gate(elementwise.Add, (a, b), name)
    def subtract(self, a, b, name=None): return self._gate(elementwise.Subtract, (a, b), name)
    def multiply(self, a, b, name=None): return self._gate(elementwise.Multiply, (a, b), name)
    def divide(self, a, b, name=None): return self._gate(elementwise.Divide, (a, b), name)
    def max(self, a, b, name=None): return self._gate(elementwise.Maximum, (a, b), name)
    def relu(self, x, name=None): return self._gate(elementwise.Relu, (x,), name)
    def exp(self, x, name=None): return self._gate(elementwise.Exp, (x,), name)
    def log(self, x, name=None): return self._gate(elementwise.Log, (x,), name)
    def sigmoid(self, x, name=None): return self._gate(elementwise.Sigmoid, (x,), name)
    def tanh(self, x, name=None): return self._gate(elementwise.Tanh, (x,), name)
    def softmax(self, x, name=None): return self._gate(nn.Softmax, (x,), name)

    def sum(self, x, axis=None, keepdims=False, name=None):
        if isinstance(axis, (tuple, list)):
            axis = tuple(_ints("sum", name, **{f"axis[{i}]": a for i, a in enumerate(axis)}))
        elif axis is not None:
            (axis,) = _ints("sum", name, axis=axis)
        return self._gate(reduce.Sum, (x,), name, axis=axis, keepdims=keepdims)

    def affine(self, x, w, b, name=None):
        return self._gate(nn.Affine, (x, w, b), name)

    def conv(self, x, w, b, stride=1, pad=0, name=None):
        stride, pad = _ints("conv", name, stride=stride, pad=pad)
        return self._gate(conv.Conv, (x, w, b), name, stride=stride, pad=pad)

    def max_pool(self, x, pool_height=2, pool_width=2, stride=2, name=None):
        pool_height, pool_width, stride = _ints("max_pool", name, pool_height=pool_height,
                                                pool_width=pool_width, stride=stride)
        return self._gate(conv.MaxPool, (x,), name, pool_height=pool_height,
                          pool_width=pool_width, stride=stride)

    def batchnorm(self, x, gamma, beta, eps=1e-5, momentum=0.9, name=None):
        _check_norm_settings("batchnorm", name, eps, momentum)
        return self._gate(norm.BatchNorm, (x, gamma, beta), name, eps=eps, momentum=momentum)

    def spatial_batchnorm(self, x, gamma, beta, eps=1e-5, momentum=0.9, name=None):
        _check_norm_settings("spatial_batchnorm", name, eps, momentum)
        return self._gate(norm.SpatialBatchNorm, (x, gamma, beta), name, eps=eps,
                          momentum=momentum)

    def dropout(self, x, p, seed=None, name=None):
        """Drop each unit with probability p in train mode (see gates.norm.Dropout)."""
        if not _is_real(p):
            raise GraphError(f"dropout gate {name or ''!r}: p (the probability of dropping a "
                             f"unit) must be a number in [0, 1), got {p!r}")
        if seed is not None:
            (seed,) = _ints("dropout", name, seed=seed)
        return self._gate(norm.Dropout, (x,), name, p=p, seed=seed)

    def softmax_loss(self, scores, y, name=None):
        return self._gate(nn.SoftmaxLoss, (scores, self._labels(y)), name)

    def svm_loss(self, scores, y, name=None):
        return self._gate(nn.SvmLoss, (scores, self._labels(y)), name)

    def _labels(self, y):
        if isinstance(y, Node):
            if y.dtype.kind not in "iu":
                raise GraphError(f"labels node {y.name!r} has dtype {y.dtype}; class labels "
                                 f"must be integers: build it with dtype=np.int64")
            return y
        array = np.asarray(y)
        if array.dtype.kind not in "iu" and not (
                array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0)):
            raise GraphError(f"labels must be integers, got dtype {array.dtype} "
                             f"(shape {array.shape})")
        return self.const(array.astype(np.int64))

    # ----- running ---------------------------------------------------------------------

    def forward(self, feeds=None, /, **named_feeds):
        """Feed the inputs, compute every node, and return the value of the sink (a dict
        name -> value when the graph has several sinks)."""
        sinks = self._scheduler.sinks
        values = self.run(sinks, feeds, **named_feeds)
        return values[0] if len(sinks) == 1 else {n.name: v for n, v in zip(sinks, values)}

    def run(self, nodes, feeds=None, /, **named_feeds):
        """Compute only what `nodes` (a node, a name, or a list of them) depend on and
        return their values (one value, or a list; a scalar comes back as a Python number)."""
        single = isinstance(nodes, (str, Node))
        targets = [self._node(n) for n in ([nodes] if single else nodes)]
        _, inputs = self._scheduler.forward_plan(targets)
        self._feed(inputs, {**(feeds or {}), **named_feeds})
        self._scheduler.run_forward(targets)
        values = [t.value.item() if np.ndim(t.value) == 0 else t.value for t in targets]
        return values[0] if single else values

    def backward(self, node=None, grad=None):
        """Fill every node's `.grad` with d node / d that node. With no arguments, starts
        from the single sink, which must be a scalar (seeded with 1); from a non-scalar
        node, pass `grad` of its shape."""
        target = self._single_sink("backward") if node is None else self._node(node)
        if target.value is None:
            raise GraphError(f"node {target.name!r} has no value yet: call forward() first")
        value = np.asarray(target.value)
        if grad is None:
            if value.size != 1:
                raise GraphError(
                    f"backward from node {target.name!r} of shape {value.shape} needs an "
                    f"upstream gradient: pass grad= an array of shape {value.shape}")
            seed = np.ones_like(value)
        else:
            seed = np.asarray(grad, dtype=value.dtype)
            if seed.shape != value.shape:
                raise GraphError(f"grad for node {target.name!r} has shape {seed.shape}, "
                                 f"the node's value has shape {value.shape}")
        self._scheduler.run_backward(target, seed[()] if seed.ndim == 0 else seed)

    def train(self, mode=True):
        """Training mode: batchnorm uses batch statistics, dropout drops."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Evaluation mode: batchnorm uses its running averages, dropout is the identity."""
        return self.train(False)

    # ----- looking at the graph --------------------------------------------------------

    @property
    def nodes(self):
        """All nodes in topological order (every node after its inputs)."""
        return list(self._scheduler.order)

    @property
    def sinks(self):
        """Gate nodes whose value no other node uses (the outputs)."""
        return list(self._scheduler.sinks)

    @property
    def grads(self):
        """name -> gradient of every param, after a backward."""
        return {name: self._by_name[name].grad for name in self.params}

    def __getitem__(self, name):
        return self._node(name)

    def __contains__(self, name):
        return name in self._by_name

    def __len__(self):
        return len(self._nodes)

    def __iter__(self):
        return iter(self.nodes)

    def __repr__(self):
        return f"<graphnet.Graph: {len(self._nodes)} nodes, dtype {self.dtype}>"

    def render(self, **options):
        """A graphviz.Digraph of the graph with values, gradients and gradient flow."""
        from ..viz import draw
        return draw(self, **options)

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.render()._repr_mimebundle_(include, exclude)

    def to_networkx(self):
        from .networkx import to_networkx
        return to_networkx(self)

    @classmethod
    def from_networkx(cls, digraph):
        from .networkx import from_networkx
        return from_networkx(digraph, cls)

    # ----- internals -------------------------------------------------------------------

    def _add(self, node):
        if not isinstance(node.name, str) or not node.name:
            raise GraphError(f"a node name must be a non-empty string, got {node.name!r}")
        if node.name in self._by_name:
            raise GraphError(f"the graph already has a node named {node.name!r} "
                             f"({self._by_name[node.name].op}); pick another name")
        self._nodes.append(node)
        self._by_name[node.name] = node
        self._scheduler.invalidate()
        return node

    def _auto_name(self, op):
        count = self._auto_names.get(op, 0)
        while True:
            count += 1
            name = f"{op}_{count}"
            if name not in self._by_name:
                self._auto_names[op] = count
                return name

    def _gate(self, gate_class, inputs, name, **attrs):
        name = name or self._auto_name(gate_class.op)
        inputs = self._gate_inputs(gate_class, inputs, name)
        try:
            gate = gate_class(**attrs)
            shape = gate.shape(*[i.static_shape for i in inputs])
        except base.ShapeError as err:
            shapes = ", ".join(f"{i.name!r} {i.static_shape}" for i in inputs)
            raise GraphError(f"{gate_class.op} gate {name!r}: {err} (inputs: {shapes})") from None
        floats = {i.dtype for i in inputs if i.dtype.kind == "f"}
        # One float dtype is the common case, and np.result_type costs 2 us a call.
        dtype = (floats.pop() if len(floats) == 1 else np.result_type(*floats) if floats
                 else self.dtype)
        return self._add(Node(self, name, "gate", gate=gate, inputs=inputs,
                              shape=shape, dtype=dtype))

    def _gate_inputs(self, gate, inputs, name):
        float_dtype = next((i.dtype for i in inputs
                            if isinstance(i, Node) and i.dtype.kind == "f"), self.dtype)
        converted = []
        for item in inputs:
            if isinstance(item, Node):
                if item.graph is not self:
                    raise GraphError(f"{gate.op} gate {name!r}: node {item.name!r} belongs "
                                     "to another graph; build every node in one Graph")
                converted.append(item)
            elif isinstance(item, (int, float, np.number, np.ndarray, list, tuple)):
                converted.append(self.const(np.asarray(item, dtype=float_dtype)))
            else:
                raise GraphError(f"{gate.op} gate {name!r}: an input must be a Node or a "
                                 f"number, got {type(item).__name__}")
        return tuple(converted)

    def _node(self, ref):
        if isinstance(ref, Node):
            if ref.graph is not self:
                raise GraphError(f"node {ref.name!r} belongs to another graph")
            return ref
        node = self._by_name.get(ref)
        if node is None:
            raise UnknownNodeError(f"the graph has no node named {ref!r}; it has: "
                                   + _name_list(self._nodes))
        return node

    def _single_sink(self, action):
        sinks = self.sinks
        if len(sinks) != 1:
            raise GraphError(f"the graph has {len(sinks)} sinks ({_name_list(sinks)}); "
                             f"name the node to {action} from")
        return sinks[0]

    def _feed(self, needed_inputs, feeds):
        inputs = [n for n in self._nodes if n.kind == "input"]
        for key in feeds:
            node = self._by_name.get(key)
            if node is None:
                raise GraphError(f"unknown feed {key!r}: the graph's inputs are "
                                 + _name_list(inputs))
            if node.kind != "input":
                hint = (f"assign graph.params[{key!r}] instead" if node.kind == "param"
                        else "only inputs are fed")
                raise GraphError(f"cannot feed {key!r}: it is a {node.op} node; {hint}")
        missing = [n for n in needed_inputs if n.name not in feeds]
        if missing:
            raise GraphError("missing feed for input " + ", ".join(
                f"{n.name!r} (shape {n.static_shape}, {n.dtype})" for n in missing))
        for node in needed_inputs:
            node.value = _convert_feed(node, feeds[node.name])

    @staticmethod
    def _as_float_array(value, what, dtype):
        array = np.asarray(value)
        if array.dtype.kind not in "fiu":
            raise GraphError(f"{what} must be numeric, got dtype {array.dtype}")
        return np.array(array, dtype=dtype)  # a copy: the graph owns its params


def _convert_feed(node, value):
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as err:  # ragged nested lists, say
        raise GraphError(f"feed for input {node.name!r} is not an array of numbers: {err}; "
                         f"pass an ndarray of shape {node.static_shape}") from None
    if array.dtype.kind not in "fiu":  # bool, complex, object, strings: no silent guess
        raise GraphError(f"feed for input {node.name!r} has dtype {array.dtype}; it needs "
                         f"real numbers, which are converted to {node.dtype}")
    if node.dtype.kind in "iu" and array.dtype.kind == "f":
        if not np.all(np.mod(array, 1) == 0):
            raise GraphError(f"feed for integer input {node.name!r} holds non-integers")
    source = array
    with np.errstate(over="ignore", invalid="ignore"):
        array = array.astype(node.dtype, copy=False)
    if source.dtype.kind in "iu" and array.dtype.kind == "f" and array is not source and \
            not np.array_equal(array.astype(source.dtype), source):
        raise GraphError(f"feed for input {node.name!r} (shape {array.shape}): integers of dtype "
                         f"{source.dtype} too large to be exact in {node.dtype}; scale them "
                         "or convert them yourself")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        if source.dtype.kind == "f" and np.isfinite(source).all():
            raise GraphError(f"feed for input {node.name!r} (shape {array.shape}) overflows "
                             f"{node.dtype}: values up to {np.abs(source).max():g}; scale them")
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise GraphError(f"feed for input {node.name!r} (shape {array.shape}) holds {bad} NaN or "
                         "Inf values; clean or mask them before feeding")
    expected = node.static_shape
    if expected is not None and (array.ndim != len(expected) or any(
            e is not None and e != a for e, a in zip(expected, array.shape))):
        raise GraphError(f"feed for input {node.name!r} has shape {array.shape}, expected "
                         f"{expected} (None matches any size)")
    return array[()] if array.ndim == 0 else array


def _static_shape(what, shape):
    """A build-time shape: a tuple of non-negative ints or None (any size)."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise GraphError(f"{what}: shape must be a tuple of sizes (None for any), got "
                         f"{shape!r}") from None
    if isinstance(shape, str) or not all(
            d is None or (_is_int(d) and d >= 0) for d in dims):
        raise GraphError(f"{what}: shape must hold non-negative integers or None (any size), "
                         f"got {shape!r}")
    return tuple(None if d is None else int(d) for d in dims)


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and \
        not isinstance(value, (bool, np.bool_))


def _ints(op, name, **values):
    """Gate settings that must be integers (stride, pad, window sizes, axes, seeds)."""
    bad = {k: v for k, v in values.items() if not _is_int(v)}
    if bad:
        raise GraphError(f"{op} gate {name or ''!r}: " + ", ".join(
            f"{k} must be an integer, got {v!r}" for k, v in bad.items()))
    return [int(v) for v in values.values()]


def _check_norm_settings(op, name, eps, momentum):
    if not _is_real(eps) or not eps > 0:
        raise GraphError(f"{op} gate {name or ''!r}: eps must be a positive number (it keeps "
                         f"the division by the standard deviation finite), got {eps!r}")
    if not _is_real(momentum) or not 0 <= momentum <= 1:
        raise GraphError(f"{op} gate {name or ''!r}: momentum must be in [0, 1], got "
                         f"{momentum!r}")


def _name_list(nodes, limit=12):
    names = [repr(n.name) for n in nodes]
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


class ParamDict(MutableMapping):
    """name -> value of the graph's params. Assigning checks the shape and writes into the
    graph, so an optimizer's `params[name] = next_w` updates the model it trains."""

    def __init__(self, graph):
        self._graph = graph

    def _param(self, name):
        node = self._graph._by_name.get(name)
        if node is None or node.kind != "param":
            raise UnknownNodeError(f"no param named {name!r}; params: "
                                   + ", ".join(map(repr, self)))
        return node

    def __getitem__(self, name):
        return self._param(name).value

    def __setitem__(self, name, value):
        node = self._param(name)
        array = np.asarray(value)
        if array.shape != np.shape(node.value):
            raise GraphError(f"param {name!r} has shape {np.shape(node.value)}; cannot assign "
                             f"an array of shape {array.shape}")
        if array.dtype.kind != "f":
            raise GraphError(f"param {name!r} must be a float array, got dtype {array.dtype}")
        node.value = array.astype(node.dtype, copy=False)

    def __delitem__(self, name):
        raise GraphError(f"params cannot be deleted from a graph (asked to delete {name!r})")

    def __iter__(self):
        return (n.name for n in self._graph._nodes if n.kind == "param")

    def __len__(self):
        return sum(1 for n in self._graph._nodes if n.kind == "param")

    def __repr__(self):
        return "ParamDict({" + ", ".join(f"{k!r}: array{np.shape(v)}" for k, v in self.items()) + "})"
