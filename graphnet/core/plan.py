"""Plans: the steps a walk takes, worked out once per graph change.

A forward plan lists the gates the targets depend on, in topological order; a backward
plan lists the gates a gradient passes through, in reverse order, with which of their
inputs need a gradient. Rewrites (graphnet/passes/) then replace runs of steps with fused
steps. The executor runs a plan as a plain loop.
"""

from __future__ import annotations

import enum
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

from .checked_gates import checked_backward, is_graphnets
from .node import Node

#: The plan rewrites, in the order they apply (graphnet.passes registers them).
REWRITES: list = []


class Fusion(enum.Enum):
    """Which rewrites a forward plan takes: none (gate by gate), all but those marked
    `small_batch`, or those alone (the plans of small eval batches: executor.fusing_forward)."""

    NONE = "none"
    FULL = "full"
    SMALL_BATCH = "small batch"

    # Members are singletons: hashed by identity, a plan's cache key hashes without
    # Enum.__hash__'s Python call (0.2 us a walk).
    __hash__ = object.__hash__


def register_rewrite(rewrite: Any) -> Any:
    """Add a rewrite: an object with fuse_forward(steps) and fuse_backward(steps), each
    returning the steps with runs it knows replaced by fused steps."""
    REWRITES.append(rewrite)
    return rewrite


class Step(NamedTuple):
    """One step of a walk.

    node: forward, the node the step computes (a fused step: the last of its nodes);
        backward, the node whose gradient the step passes on.
    inputs: the nodes it reads (forward) or sends gradients to (backward).
    run: one gate's forward(*values) -> (out, cache), or backward(dout, cache, needs) ->
        gradients; a fused step's run(store) writes its nodes' entries itself, and its
        backward run(store, needs) returns the inputs' gradients.
    needs: backward only, which inputs need a gradient.
    fused: the nodes a fused step stands for, in order; () for a single gate.
    edges: (consumer, position) of the graph edge each input's gradient travels along
        (a fused step's inputs may feed different nodes of its run); None: (node, i).
    """

    node: Node
    inputs: Tuple[Node, ...]
    run: Callable
    needs: Tuple[bool, ...] = ()
    fused: Tuple[Node, ...] = ()
    edges: Optional[Tuple[Tuple[Node, int], ...]] = None

    @property
    def label(self) -> str:
        return "+".join(n.op for n in self.fused) if self.fused else self.node.op

    @property
    def nodes(self) -> Tuple[Node, ...]:
        """Every node whose entries the step fills."""
        return self.fused or (self.node,)

    def edge(self, position: int) -> Tuple[Node, int]:
        return self.edges[position] if self.edges is not None else (self.node, position)


class Plan:
    """A walk's steps, and what its loop needs.

    direction: 'forward' or 'backward'. steps: the Steps in order. inputs: forward, the
    input nodes to feed. unreached: backward, the nodes wanting a gradient that the
    target does not depend on (they get zeros). reads: node indices whose entries the
    steps read (and the target's), so that deferred ones can be computed before the loop;
    a forward that writes any of them outdates the backward's gradients. loop: the steps
    as the executor's loop unpacks them.
    """

    def __init__(
        self,
        direction: str,
        steps: List[Step],
        inputs=(),
        unreached=(),
        target: Optional[Node] = None,
    ):
        self.direction, self.steps, self.target = direction, steps, target
        self.inputs, self.unreached = list(inputs), list(unreached)
        self.reads = frozenset(
            [n.index for step in steps for n in (step.node, *step.inputs)]
            + ([target.index] if target is not None else [])
        )
        #: the nodes of its single-gate steps (a backward's loop reads their caches from the
        #: store's lists; a fused step reads its own nodes' entries through the store)
        self.gate_nodes = frozenset(step.node.index for step in steps if not step.fused)
        self.computes = [n.index for step in steps for n in step.nodes]
        #: forward: the nodes a walk of this plan writes (its gates and the inputs fed), and
        #: the number of the last walk that ran it (0: none since the plan was made).
        self.writes = frozenset(self.computes + [n.index for n in self.inputs])
        self.walk = 0
        #: forward: (graph dtype, {input name: (node, the dtype its feed takes)}), worked out
        #: by the graph on the first walk (it knows which inputs hold labels).
        self.feed_table: Optional[tuple] = None
        #: backward: (consumer index, input position) -> the slot of the walk's list of edge
        #: gradients where that edge's gradient is kept (only edges into a fan-out).
        self.edge_slots: dict = {}
        self.loop: List[Any]
        if direction == "forward":
            # (node index, run, input indices, fused), as cpp/walk.cpp's loop reads them
            self.loop = [
                (s.node.index, s.run, tuple(i.index for i in s.inputs), bool(s.fused))
                for s in steps
            ]
        else:
            self.loop = _backward_loop(steps, self.edge_slots)

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        return (
            f"<Plan {self.direction}: "
            + ", ".join(s.label for s in self.steps[:12])
            + (" ..." if len(self.steps) > 12 else "")
            + ">"
        )


def _backward_loop(steps: List[Step], edge_slots: dict) -> list:
    """(node index, run, needs, ((position, input index, edge slot or None), ...), fused) per
    step, as cpp/walk.cpp's loop reads them, and `edge_slots` filled.
    An edge slot is given only to an input that receives gradients along several edges (its
    fan-out): there the walk records what each edge sent, for drawings, in a list (a list
    index costs a fraction of a dict entry keyed by a tuple)."""
    arrivals: dict = {}
    for step in steps:
        for inp, need in zip(step.inputs, step.needs):
            if need:
                arrivals[inp.index] = arrivals.get(inp.index, 0) + 1
    loop = []
    for step in steps:
        targets = []
        for position, (inp, need) in enumerate(zip(step.inputs, step.needs)):
            if need:
                consumer, slot = step.edge(position)
                edge = None
                if arrivals[inp.index] > 1:
                    edge = edge_slots[consumer.index, slot] = len(edge_slots)
                targets.append((position, inp.index, edge))
        loop.append((step.node.index, step.run, step.needs, tuple(targets), bool(step.fused)))
    return loop


def ancestors(targets) -> set:
    """Ids of every node some target depends on, targets included (iterative DFS)."""
    seen: set = set()
    stack = list(targets)
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            stack.extend(node.inputs)
    return seen


def forward_plan(
    nodes: List[Node], targets, forward_of: Callable[[Node], Callable], fusion: Fusion
) -> Plan:
    """The gates `targets` depend on, in the order of `nodes` (topological), rewritten as
    `fusion` says."""
    needed = ancestors(targets)
    chosen = [n for n in nodes if id(n) in needed]
    steps = [Step(n, n.inputs, forward_of(n)) for n in chosen if n.gate is not None]
    if fusion is not Fusion.NONE:
        small = fusion is Fusion.SMALL_BATCH
        for rewrite in REWRITES:
            if getattr(rewrite, "small_batch", False) == small:
                steps = rewrite.fuse_forward(steps)
    return Plan("forward", steps, inputs=[n for n in chosen if n.kind == "input"])


def backward_plan(nodes: List[Node], target: Node, fuse: bool) -> Plan:
    """The gates a gradient from `target` passes through, last first: a node is reached
    when a reached step sends it a gradient, not merely when the target depends on it. A
    node read only by gates that pass it none (a compare's inputs: tanh(x) > 0 as a
    where's mask) gets zeros and no backward step, which would have no dout to run on."""
    reached = {id(target)}
    steps = []
    for node in reversed(nodes):  # every consumer of a node before the node itself
        if node.gate is None or not node.requires_grad or id(node) not in reached:
            continue
        integer = node.gate.integer_inputs
        needs = tuple(
            i.requires_grad and position not in integer for position, i in enumerate(node.inputs)
        )
        reached.update(id(i) for i, need in zip(node.inputs, needs) if need)
        gate = node.gate
        backward = gate.backward if is_graphnets(gate) else checked_backward(node, gate.backward)
        steps.append(Step(node, node.inputs, backward, needs))
    if fuse:
        for rewrite in REWRITES:
            if not getattr(rewrite, "small_batch", False):
                steps = rewrite.fuse_backward(steps)
    # Zeros for the nodes the target does not depend on, and for the gates it depends on
    # only through gates that pass no gradient; an input or param read only so (labels fed
    # to an input without a dtype, a compare's operand) keeps no gradient, as before.
    needed = ancestors([target])
    unreached = [
        n
        for n in nodes
        if n.requires_grad and id(n) not in reached and (id(n) not in needed or n.gate is not None)
    ]
    return Plan("backward", steps, unreached=unreached, target=target)
