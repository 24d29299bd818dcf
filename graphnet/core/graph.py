"""Graph: the builder users see. It names nodes, infers and checks shapes as gates are
added, converts and checks feeds, and hands the walks to the executor."""

from __future__ import annotations

import re
import threading
from operator import attrgetter
from collections import Counter
from collections.abc import MutableMapping
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import GraphError, UnknownNodeError
from ..gates import base as gates
from ..kernels.geometry import MEMORY_BYTES, beyond_memory
from .builders import GateBuilders, Operand
from .executor import Executor, Hook, HookHandle
from .feeds import convert_feed, feed_dtype, static_shape
from .node import Node
from .plan import Fusion, Plan
from .store import ValueStore

NodeRef = Union[Node, str]
_static_shape = attrgetter("static_shape")


class Graph(GateBuilders):
    """A DAG of gate nodes.

    Nodes are added in topological order (a gate's inputs exist before it), so the build
    order is the walk's order. Every gate registered with `graphnet.register_gate` is built
    with `apply(op, *inputs, **attrs)`; the built-in ones also have a method each.

    Node names are unique in a graph, and printable text of at most 4096 characters (no
    control character such as NUL or a newline, no lone surrogate): they are drawn, and
    written to checkpoints and ONNX files. A name that is not raises a GraphError saying
    why; a gate left unnamed gets its op and a number (`relu_1`).

    `fuse` (default True): the plan rewrites in graphnet/passes/ may run chains of gates
    as one fused step (conv -> relu -> max_pool); every node still reads its value and
    gradient. False runs the gates one by one.

    `lock`: each call (forward, run, backward) holds it, so two threads never interleave
    inside one walk; a sequence of calls that must see each other's values (forward,
    then backward, then reading grads) holds it around them (`with graph.lock:`), as the
    models' `loss` does. Separate graphs run in parallel.

    Args:
        dtype: the float dtype of params, float inputs and gradients (float64 or float32).

    Examples:
        >>> g = Graph()
        >>> x, y, z = g.input("x"), g.input("y"), g.input("z")
        >>> f = g.multiply(g.add(x, y, name="q"), z, name="f")
        >>> g.forward(x=-2.0, y=5.0, z=-4.0)
        -12.0
        >>> g.backward(); print(g["x"].grad, g["z"].grad)
        -4.0 3.0
    """

    def __init__(self, dtype: Any = np.float64):
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise GraphError(f"a graph's dtype must be a float type, got {self.dtype}")
        self.training = True
        self.fuse = True
        self.lock = threading.RLock()
        self.store = ValueStore()
        self.executor = Executor(self)
        self.params = ParamDict(self)
        self._nodes: List[Node] = []
        self._by_name: Dict[str, Node] = {}
        self._auto_names: Dict[str, int] = {}
        self._sinks: Optional[List[Node]] = None
        self._integer_inputs: Optional[set] = None
        self._param_slots: Optional[Dict[str, int]] = None

    # ----- sources ---------------------------------------------------------------------

    def input(
        self,
        name: str,
        shape: Optional[Sequence[Optional[int]]] = None,
        dtype: Any = None,
        requires_grad: bool = True,
    ) -> Node:
        """A value fed at each `forward`. `shape` may hold None for sizes that vary (the
        batch size, say). Without a dtype the feed decides: integers stay integers where
        every gate reading the input takes integers (class labels), anything else takes
        the graph's dtype. Integer inputs never get a gradient."""
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype.kind not in "fiu":
                raise GraphError(
                    f"input {name!r}: dtype must be a float or integer type, "
                    f"got {dtype} (use the graph's float dtype, or np.int64 for "
                    "labels)"
                )
        shape = static_shape(f"input {name!r}", shape)
        wants_grad = bool(requires_grad) and (dtype is None or dtype.kind == "f")
        return self._add(name, "input", None, (), shape, dtype, wants_grad)

    def param(self, name: str, value: Any, dtype: Any = None) -> Node:
        """A learnable array owned by the graph (a copy of `value`, in the graph's dtype
        unless `dtype` says otherwise); it gets a gradient on every backward."""
        array = np.asarray(value)
        if array.dtype.kind not in "fiu":
            raise GraphError(f"param {name!r} must be numeric, got dtype {array.dtype}")
        if array.nbytes > MEMORY_BYTES:
            raise GraphError(beyond_memory(array, f"param {name!r}"))
        array = line_aligned_copy(array, dtype or self.dtype)  # the graph owns its params
        return self._add(name, "param", None, (), array.shape, array.dtype, True, array)

    def const(self, value: Any, name: Optional[str] = None, dtype: Any = None) -> Node:
        """A fixed value that never gets a gradient. Integer values (labels) stay integers;
        floats take the graph's dtype unless `dtype` says otherwise."""
        array = np.asarray(value)
        if array.dtype.kind not in "fiu":
            raise GraphError(
                f"const {name or ''!r}: value must be real numbers, got dtype "
                f"{array.dtype}; convert it (e.g. np.asarray(value, float))"
            )
        if array.nbytes > MEMORY_BYTES:  # kept as it is: a view the gates would read whole
            raise GraphError(beyond_memory(array, f"const {name or ''!r}"))
        if dtype is None and array.dtype.kind not in "iu":
            dtype = self.dtype
        array = array.astype(dtype if dtype is not None else array.dtype, copy=False)
        return self._add(
            name or self._auto_name("const"),
            "const",
            None,
            (),
            array.shape,
            array.dtype,
            False,
            array[()],
        )

    # ----- gates -----------------------------------------------------------------------

    def apply(self, op: str, *inputs: Operand, name: Optional[str] = None, **attrs: Any) -> Node:
        """A node of the gate registered as `op` on `inputs` (nodes, or numbers and arrays,
        which become consts), with the gate's hyperparameters `attrs`."""
        return self._build(op, inputs, name, attrs)

    def _build(self, op: str, inputs: tuple, name: Optional[str], attrs: Optional[dict]) -> Node:
        """`apply`, called with its arguments packed (the builders call it directly).

        The common case, every input a node of this graph and none an integer input, takes
        the short way: no conversion of literals, and one float dtype or none among the
        inputs. Anything else (literals, labels, mixed dtypes) goes through the general
        checks below, which also name the node, the gate and the shapes on a mistake."""
        gate_cls = gates.lookup(op) if type(op) is str else None
        if gate_cls is None:
            gate_cls = gates.gate_class(op)  # a GraphError naming the op
        by_name = self._by_name
        if name is None:
            count = self._auto_names.get(op, 0) + 1
            name = f"{op}_{count}"
            while name in by_name:  # a user took that name
                count += 1
                name = f"{op}_{count}"
            self._auto_names[op] = count
        else:
            name = self._new_name(name, op)
        arity = len(gate_cls.inputs)
        if arity and len(inputs) != arity:
            raise GraphError(
                f"{op} gate {name!r} takes {arity} input{'s' * (arity != 1)} "
                f"({', '.join(gate_cls.inputs)}), got {len(inputs)}"
            )
        sources: Any = inputs
        if gate_cls.integer_inputs:
            sources = None
        else:
            for item in inputs:
                if type(item) is not Node or item.graph is not self:
                    sources = None
                    break
        if sources is None:
            sources = self._gate_inputs(gate_cls, inputs, name)
        try:
            gate = gate_cls(**attrs) if attrs else gate_cls()
            shape = (
                gate.shape(*map(_static_shape, sources))
                if type(sources) is tuple
                else gate.shape(*[s.static_shape if type(s) is Node else s.shape for s in sources])
            )
        except gates.GateError as err:
            listed = ", ".join(
                f"{s.name!r} {s.static_shape}" if type(s) is Node else f"a constant {s.shape}"
                for s in sources
            )
            raise GraphError(f"{op} gate {name!r}: {err} (inputs: {listed})") from None
        except TypeError as err:  # a hyperparameter the gate does not take
            raise GraphError(f"{op} gate {name!r}: {err}") from None
        if gate_cls.output_dtype is not None:  # a mask: its own dtype, no gradient
            made = tuple(s if type(s) is Node else self.const(s, dtype=s.dtype) for s in sources)
            return self._add(name, "gate", gate, made, shape, gate_cls.output_dtype, False)
        if type(sources) is tuple:  # nodes only, no integer inputs
            dtype: Any = None  # the one float dtype; False: the general rule decides
            wants_grad = False
            for source in sources:
                if source.requires_grad:
                    wants_grad = True
                declared = source.declared_dtype
                if declared is not None and declared is not dtype:
                    if dtype is not None or declared.kind != "f":
                        dtype = False  # several dtypes, or integers: the general rule
                        break
                    dtype = declared
            if dtype is not False:
                return self._add(
                    name,
                    "gate",
                    gate,
                    sources,
                    shape,
                    self.dtype if dtype is None else dtype,
                    wants_grad,
                )
        dtype, wants_grad = self._output_dtype(gate_cls, sources)
        return self._add(name, "gate", gate, tuple(sources), shape, dtype, wants_grad)

    def _output_dtype(self, gate_cls, sources: list) -> Tuple[np.dtype, bool]:
        """Consts for the literals among `sources` (now that the gate checked out), the
        float dtype of the output, and whether it needs a gradient."""
        integer, floats, wants_grad = gate_cls.integer_inputs, set(), False
        whole = []  # the integer dtypes of the inputs that are not labels or indices
        for position, source in enumerate(sources):
            if type(source) is not Node:
                source = sources[position] = self.const(source, dtype=source.dtype)
            dtype = source.declared_dtype
            if dtype is not None and dtype.kind == "f":
                floats.add(dtype)
            elif dtype is not None and position not in integer:
                whole.append(dtype)
            if source.requires_grad and position not in integer:
                wants_grad = True
        # One float dtype is the common case, and np.result_type costs 2 us a call.
        if floats:
            dtype = floats.pop() if len(floats) == 1 else np.result_type(*floats)
        elif gate_cls.keeps_integers and whole:
            dtype = np.result_type(*whole)  # labels reshaped or sliced stay labels
        else:
            dtype = self.dtype
        return dtype, wants_grad

    def _gate_inputs(self, gate_cls, inputs, name) -> list:
        """Nodes stay; numbers and arrays become arrays (consts once the gate checks out):
        floats in the dtype of the float nodes beside them, integers where the gate takes
        integers."""
        sources: List[Any] = []
        for position, item in enumerate(inputs):
            integer = position in gate_cls.integer_inputs
            if type(item) is Node and item.graph is self and not integer:
                sources.append(item)
                continue
            what = gate_cls.inputs[position] if position < len(gate_cls.inputs) else position
            if isinstance(item, Node):
                if item.graph is not self:
                    raise GraphError(
                        f"{gate_cls.op} gate {name!r}: node {item.name!r} belongs "
                        "to another graph; build every node in one Graph"
                    )
                dtype = item.declared_dtype
                if integer and dtype is not None and dtype.kind not in "iu":
                    raise GraphError(
                        f"{gate_cls.op} gate {name!r}: input {what} takes "
                        f"integers, but node {item.name!r} has dtype {item.dtype}; "
                        "build it with dtype=np.int64"
                    )
                sources.append(item)
            elif isinstance(item, (int, float, np.number, np.ndarray, list, tuple)):
                declared = [i.declared_dtype for i in inputs if isinstance(i, Node)]
                float_dtype = next(
                    (d for d in declared if d is not None and d.kind == "f"), self.dtype
                )
                sources.append(self._literal(item, integer, gate_cls.op, name, what, float_dtype))
            else:
                raise GraphError(
                    f"{gate_cls.op} gate {name!r}: an input must be a Node or a "
                    f"number, got {type(item).__name__}"
                )
        return sources

    @staticmethod
    def _literal(item, integer, op, name, what, float_dtype) -> np.ndarray:
        try:
            array = np.asarray(item)
        except ValueError as err:
            raise GraphError(f"{op} gate {name!r}: input {what} is not an array: {err}") from None
        if not integer:
            return array.astype(float_dtype)
        whole = array.dtype.kind in "iu" or (
            array.dtype.kind == "f" and np.isfinite(array).all() and np.all(np.mod(array, 1) == 0)
        )
        if not whole:
            raise GraphError(
                f"{op} gate {name!r}: input {what}: class labels must be "
                f"integers, got dtype {array.dtype} (shape {array.shape})"
            )
        return array.astype(np.int64)

    # ----- running ---------------------------------------------------------------------

    def forward(self, feeds: Optional[dict] = None, /, **named_feeds: Any) -> Any:
        """Feed the inputs, compute every node, and return the value of the sink (a dict
        name -> value when the graph has several sinks)."""
        sinks = self.sinks
        values = self.run(sinks, feeds, **named_feeds)
        return values[0] if len(sinks) == 1 else {n.name: v for n, v in zip(sinks, values)}

    def run(
        self,
        nodes: Union[NodeRef, Sequence[NodeRef]],
        feeds: Optional[dict] = None,
        /,
        **named_feeds: Any,
    ) -> Any:
        """Compute only what `nodes` (a node, a name, or a list of them) depend on and
        return their values (one value, or a list; a scalar comes back as a Python number)."""
        single = isinstance(nodes, (str, Node))
        targets = [self._node(nodes)] if isinstance(nodes, (str, Node)) else self._nodes_of(nodes)
        if named_feeds or type(feeds) is not dict:
            feeds = {**(feeds or {}), **named_feeds}
        with self.lock:
            executor = self.executor
            hooks = executor.active_hooks()
            plan = executor.forward_plan(targets, executor.fusing_forward(hooks, feeds))
            self._feed(plan, feeds, hooks)
            executor.run_forward(plan, hooks)
            if single:  # one target (a model's scores): no lists built per call
                return _returned(self.store.value(targets[0].index))
            values = [self.store.value(t.index) for t in targets]
        return [_returned(v) for v in values]

    def backward(self, node: Optional[NodeRef] = None, grad: Any = None) -> None:
        """Fill every node's `.grad` with d node / d that node. With no arguments, starts
        from the single sink, which must be a scalar (seeded with 1); from a non-scalar
        node, pass `grad` of its shape."""
        with self.lock:
            target, seed = self.backward_seed(node, grad)
            hooks = self.executor.active_hooks()
            plan = self.executor.backward_plan(target, self.executor.fusing(hooks))
            self.executor.run_backward(plan, seed, self.store, hooks)

    def backward_seed(
        self, node: Optional[NodeRef] = None, grad: Any = None, action: str = "backward"
    ) -> Tuple[Node, Any]:
        """The node a backward starts from and its seed gradient, checked: 1 for a scalar,
        else `grad`, which must have the node's shape."""
        target = self.single_sink(action) if node is None else self._node(node)
        value = self.store.value(target.index)
        if value is None:
            raise GraphError(f"node {target.name!r} has no value yet: call forward() first")
        if grad is None and isinstance(value, np.floating):
            # A loss: the seed is the 1 np.ones_like makes, of the loss's type (1.2 us less).
            return target, type(value)(1)
        value = np.asarray(value)
        if grad is None:
            if value.size != 1:
                raise GraphError(
                    f"{action} from node {target.name!r} of shape {value.shape} needs an "
                    f"upstream gradient: pass grad= an array of shape {value.shape}"
                )
            seed = np.ones_like(value)
        else:
            seed = np.asarray(grad, dtype=value.dtype)
            if seed.shape != value.shape:
                raise GraphError(
                    f"grad for node {target.name!r} has shape {seed.shape}, the "
                    f"node's value has shape {value.shape}"
                )
        return target, seed[()] if seed.ndim == 0 else seed

    def train(self, mode: bool = True) -> Graph:
        """Training mode: batchnorm uses batch statistics, dropout drops."""
        self.training = bool(mode)
        return self

    def eval(self) -> Graph:
        """Evaluation mode: batchnorm uses its running averages, dropout is the identity."""
        return self.train(False)

    def add_hook(
        self,
        forward: Optional[Callable] = None,
        backward: Optional[Callable] = None,
        *,
        start: Optional[Callable] = None,
        end: Optional[Callable] = None,
    ) -> HookHandle:
        """Call `forward(event)` after each forward step and `backward(event)` after each
        backward step of this graph's walks (see graphnet.core.executor for the events),
        `start(direction, plan)` and `end(direction, plan)` around each walk. Returns a
        handle: `handle.remove()`, or `with graph.add_hook(...):`."""
        hook = Hook(forward, backward, start, end)
        self.executor.hooks.append(hook)
        return HookHandle(self.executor.hooks, hook)

    def plan(
        self,
        nodes: Union[None, NodeRef, Sequence[NodeRef]] = None,
        direction: str = "forward",
        fuse: bool = False,
    ) -> Plan:
        """The steps a walk takes: forward towards `nodes` (default: every sink), or
        backward from one node (default: the single sink), fused or gate by gate."""
        if direction == "forward":
            targets = self.sinks if nodes is None else self._nodes_of(nodes)
            return self.executor.forward_plan(targets, Fusion.FULL if fuse else Fusion.NONE)
        if direction == "backward":
            if nodes is not None and not isinstance(nodes, (str, Node)):
                raise GraphError("a backward plan starts from one node; pass its name")
            target = self.single_sink("plan a backward") if nodes is None else self._node(nodes)
            return self.executor.backward_plan(target, fuse)
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")

    # ----- looking at the graph --------------------------------------------------------

    @property
    def nodes(self) -> List[Node]:
        """All nodes in topological order (every node after its inputs)."""
        return list(self._nodes)

    @property
    def sinks(self) -> List[Node]:
        """Gate nodes whose value no other node uses (the outputs; sources if there are no
        gates)."""
        if self._sinks is None:
            used = {id(i) for n in self._nodes for i in n.inputs}
            gate_nodes = [n for n in self._nodes if n.gate is not None]
            self._sinks = [n for n in (gate_nodes or self._nodes) if id(n) not in used]
        return list(self._sinks)

    @property
    def grads(self) -> Dict[str, Any]:
        """name -> gradient of every param, after a backward."""
        return self.store.grads_of(self.param_slots())

    def param_slots(self) -> Dict[str, int]:
        """name -> store index of every param, in the order they were built. Kept until
        the graph grows: a training step reads and assigns each param and its gradient by
        name, and a walk over all nodes per read cost more than the update of a small
        param (docs/performance/overhead.md)."""
        slots = self._param_slots
        if slots is None:
            slots = self._param_slots = {n.name: n.index for n in self._nodes if n.kind == "param"}
        return slots

    def shown_walk(self, store: Optional[ValueStore] = None) -> Optional[Plan]:
        """The forward plan whose values the graph shows: the one whose walk fed the last
        backward, else the last forward's (None before any forward, or once the graph
        changed). Its `writes` are the indices of the nodes that walk computed or fed.
        `store`: a store kept earlier (ValueStore.keep) to ask instead of the graph's."""
        last = (self.store if store is None else store).last_backward
        if last is not None and last.forward is not None:
            return last.forward
        return self.executor.last_forward

    def edge_gradients(
        self, compute: bool = True, store: Optional[ValueStore] = None
    ) -> Dict[Tuple[str, int], Any]:
        """{(consumer name, input position): the gradient the last backward sent along
        that edge} (not the input's total, which also holds what other consumers sent).
        compute=False leaves out the gradients a fused step left to compute on first read
        (inside a conv -> relu -> max_pool chain) instead of computing them. `store`: a
        store kept earlier (ValueStore.keep) to read instead of the graph's (compute=False
        only: a kept store computes nothing)."""
        store = self.store if store is None else store
        last = store.last_backward
        if last is None:
            return {}
        plan = last.plan
        edges = [
            (consumer, position, inp)
            for step in plan.steps
            for consumer in step.nodes
            for position, inp in enumerate(consumer.inputs)
            if inp.requires_grad and position not in consumer.gate.integer_inputs
        ]
        arrivals = Counter(inp.index for _, _, inp in edges)
        sent = {}
        for consumer, position, inp in edges:
            slot = plan.edge_slots.get((consumer.index, position))
            grad = None if slot is None else last.edges[slot]
            if grad is None and arrivals[inp.index] == 1:  # its one consumer sent it all
                grad = store.grad(inp.index) if compute else store.peek_grad(inp.index)
            if grad is not None:
                sent[consumer.name, position] = grad
        return sent

    def __getitem__(self, name: NodeRef) -> Node:
        return self._node(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __repr__(self) -> str:
        return f"<graphnet.Graph: {len(self._nodes)} nodes, dtype {self.dtype}>"

    def render(self, **options: Any) -> Any:
        """A graphviz.Digraph of the graph with values, gradients and gradient flow (see
        graphnet.viz.draw for the options)."""
        from ..viz import draw

        return draw(self, **options)

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.render()._repr_mimebundle_(include, exclude)

    def to_networkx(self) -> Any:
        """A networkx.DiGraph of the graph (see graphnet.core.networkx)."""
        from .networkx import to_networkx

        return to_networkx(self)

    @classmethod
    def from_networkx(cls, digraph: Any) -> Graph:
        """Rebuild a Graph from a DiGraph in the layout `to_networkx` writes."""
        from .networkx import from_networkx

        return from_networkx(digraph, cls)

    # ----- internals -------------------------------------------------------------------

    def _new_name(self, name: Optional[str], op: str) -> str:
        if name is None:
            return self._auto_name(op)
        if not isinstance(name, str) or not name:
            raise GraphError(f"a node name must be a non-empty string, got {name!r}")
        if len(name) > MAX_NAME_LENGTH or _UNWRITABLE.search(name):
            raise GraphError(_name_problem(name))
        if name in self._by_name:
            raise GraphError(
                f"the graph already has a node named {name!r} "
                f"({self._by_name[name].op}); pick another name"
            )
        return name

    def _add(self, name, kind, gate, inputs, shape, dtype, requires_grad, value=None) -> Node:
        if gate is None:
            name = self._new_name(name, kind)
        node = Node(self, len(self._nodes), name, kind, gate, inputs, shape, dtype, requires_grad)
        self._nodes.append(node)
        self._by_name[name] = node
        self.store.grow(value)
        self._sinks = self._integer_inputs = self._param_slots = None
        return node

    def _auto_name(self, op: str) -> str:
        count = self._auto_names.get(op, 0)
        while True:
            count += 1
            name = f"{op}_{count}"
            if name not in self._by_name:
                self._auto_names[op] = count
                return name

    def _node(self, ref: NodeRef) -> Node:
        if isinstance(ref, Node):
            if ref.graph is not self:
                raise GraphError(f"node {ref.name!r} belongs to another graph")
            return ref
        node = self._by_name.get(ref) if isinstance(ref, str) else None
        if node is None:
            raise UnknownNodeError(
                f"the graph has no node named {ref!r}; it has: " + name_list(self._nodes)
            )
        return node

    def _nodes_of(self, refs: Union[NodeRef, Sequence[NodeRef]]) -> List[Node]:
        if isinstance(refs, (str, Node)):
            return [self._node(refs)]
        return [self._node(ref) for ref in refs]

    def single_sink(self, action: str = "start from") -> Node:
        """The graph's one sink, or a GraphError asking which node to `action`."""
        sinks = self.sinks
        if len(sinks) != 1:
            raise GraphError(
                f"the graph has {len(sinks)} sinks ({name_list(sinks)}); "
                f"name the node to {action} from"
            )
        return sinks[0]

    def _feed(self, plan: Plan, feeds: dict, hooks: Sequence = ()) -> None:
        """Check and store the feeds of the inputs `plan` needs (none stored if one fails).
        A feed its plan's first step checks for NaN and Inf (passes/feed_check.py, a walk
        without hooks) is checked by that step's `check` instead."""
        table = plan.feed_table
        if table is None or table[0] is not self.dtype:
            integer = self._integer_only_inputs()
            table = plan.feed_table = (
                self.dtype,
                {n.name: (n, feed_dtype(n, self.dtype, n.index in integer)) for n in plan.inputs},
                next((s.run for s in plan.steps[:1] if hasattr(s.run, "check")), None),
            )
        wanted, checker = table[1], None if hooks else table[2]
        if feeds.keys() != wanted.keys():  # a feed the plan does not read, or one missing
            self._check_feed_names(plan.inputs, feeds)
        checked = None if checker is None else checker.checks
        converted = []  # all checked before any is stored: a bad feed changes nothing
        for name, (node, dtype) in wanted.items():  # a loop: a comprehension is a frame
            converted.append(
                (node.index, convert_feed(node, feeds[name], dtype, node is not checked))
            )
        if checker is not None:
            checker.check(dict(converted)[checker.checks.index], self.store)
        values = self.store.values
        for index, value in converted:
            values[index] = value

    def _check_feed_names(self, needed_inputs: List[Node], feeds: dict) -> None:
        """A GraphError for a feed that names no input, or for a needed input not fed."""
        for key in feeds:
            node = self._by_name.get(key)
            if node is None:
                raise GraphError(
                    f"unknown feed {key!r}: the graph's inputs are "
                    + name_list([n for n in self._nodes if n.kind == "input"])
                )
            if node.kind != "input":
                hint = (
                    f"assign graph.params[{key!r}] instead"
                    if node.kind == "param"
                    else "only inputs are fed"
                )
                raise GraphError(f"cannot feed {key!r}: it is a {node.op} node; {hint}")
        missing = [n for n in needed_inputs if n.name not in feeds]
        if missing:
            raise GraphError(
                "missing feed for input "
                + ", ".join(f"{n.name!r} (shape {n.static_shape}, {n.dtype})" for n in missing)
            )

    def _integer_only_inputs(self) -> set:
        """Indices of the inputs without a dtype that every consumer reads as integers."""
        if self._integer_inputs is None:
            uses: Dict[int, List[bool]] = {}
            for node in self._nodes:
                for position, inp in enumerate(node.inputs):
                    if inp.kind == "input" and inp.declared_dtype is None:
                        integer = node.gate is not None and position in node.gate.integer_inputs
                        uses.setdefault(inp.index, []).append(integer)
            self._integer_inputs = {i for i, flags in uses.items() if all(flags)}
        return self._integer_inputs


def name_list(nodes: Sequence[Node], limit: int = 12) -> str:
    names = [repr(n.name) for n in nodes]
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


class ParamDict(MutableMapping):
    """name -> value of the graph's params. Assigning checks the shape and writes into the
    graph, so an optimizer's `params[name] = next_w` updates the model it trains."""

    def __init__(self, graph: Graph):
        self._graph = graph

    def _slot(self, name: str) -> int:
        """The param's index in the graph's store, or UnknownNodeError naming the params."""
        try:
            return self._graph.param_slots()[name]
        except (KeyError, TypeError):  # TypeError: an unhashable key
            raise UnknownNodeError(
                f"no param named {name!r}; params: " + ", ".join(map(repr, self))
            ) from None

    def __getitem__(self, name: str) -> np.ndarray:
        return self._graph.store.value(self._slot(name))

    def __setitem__(self, name: str, value: Any) -> None:
        index = self._slot(name)
        if type(value) is np.ndarray and value.ndim and value is self._graph.store.values[index]:
            # The param's own array handed back (graphnet.optim updates it in place, and the
            # Solver assigns what it returns): already checked and stored, nothing changes.
            return
        array = np.asarray(value)
        if array.dtype.kind != "f":
            raise GraphError(f"param {name!r} must be a float array, got dtype {array.dtype}")
        self._graph._nodes[index].value = array

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._graph.param_slots()
        except TypeError:  # an unhashable key
            return False

    def __delitem__(self, name: str) -> None:
        raise GraphError(f"params cannot be deleted from a graph (asked to delete {name!r})")

    def __iter__(self) -> Iterator[str]:
        # The graph replaces its table when it grows, never changes it: iterating one while
        # a param is added goes on over the params there were.
        return iter(self._graph.param_slots())

    def __len__(self) -> int:
        return len(self._graph.param_slots())

    def copy(self) -> dict:
        """A plain dict name -> the same arrays, as dict.copy() gives."""
        return dict(self.items())

    def __repr__(self) -> str:
        return (
            "ParamDict({" + ", ".join(f"{k!r}: array{np.shape(v)}" for k, v in self.items()) + "})"
        )


def line_aligned_copy(array: np.ndarray, dtype: Any) -> np.ndarray:
    """A C-contiguous copy of `array` in `dtype` whose data starts on a 64-byte cache line.
    numpy's own arrays start 16 bytes from a line as often as not, and a kernel that reads
    a weight matrix row by row (one sample through an affine layer, an LSTM's steps) then
    loads vectors that straddle two lines: the product of one row by a 3072 x 512 float32
    matrix took 89 us so, 76 on a line (docs/performance/overhead.md)."""
    dtype = np.dtype(dtype)
    size = array.size * dtype.itemsize
    memory = np.empty(size + 64, np.uint8)
    start = -memory.ctypes.data % 64
    copy = memory[start : start + size].view(dtype).reshape(array.shape)
    np.copyto(copy, array, casting="unsafe")
    return copy


def _returned(value: Any) -> Any:
    """A value as run() returns it: an array of one or more dimensions as it is (checked
    first: the common case, and np.ndim costs more than the attribute), a scalar as a
    Python number."""
    if type(value) is np.ndarray and value.ndim:
        return value
    return value.item() if np.ndim(value) == 0 else value


# A node's name is printable text of at most MAX_NAME_LENGTH characters: it is drawn (DOT
# cannot carry a control character, and stops reading at tens of thousands of
# characters), written to ONNX files and checkpoints as UTF-8 (which has no lone
# surrogate), and shown in one-line error messages.
MAX_NAME_LENGTH = 4096
_UNWRITABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # controls, surrogates


def _name_problem(name: str) -> str:
    """Why `name` cannot name a node, the name shown in short."""
    shown = repr(name[:40]) + (f"... ({len(name)} characters)" if len(name) > 40 else "")
    if len(name) > MAX_NAME_LENGTH:
        return (
            f"node name {shown} is longer than {MAX_NAME_LENGTH} characters, more than a "
            "drawing can carry"
        )
    bad = _UNWRITABLE.search(name)
    assert bad is not None
    kind = "a lone surrogate" if "\ud800" <= bad.group() <= "\udfff" else "a control character"
    return (
        f"node name {shown} holds {kind} (U+{ord(bad.group()):04X}) at position "
        f"{bad.start()}; a name is printable text, which drawings, ONNX files and "
        "checkpoints carry"
    )
