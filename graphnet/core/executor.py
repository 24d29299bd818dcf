"""The executor: runs plans over a value store, and the hooks that watch it.

    handle = graph.add_hook(backward=lambda event: print(event.node.name, event.received))
    graph.forward(...); graph.backward()
    handle.remove()                      # or: with graph.add_hook(...): ...

A forward hook receives a ForwardEvent after each step (the step, its input values, its
output); a backward hook a BackwardEvent (the step, the upstream gradient, what each input
received); `start` and `end` hooks are called with the walk's direction and plan around
each walk. Hooks see the steps as they run: a fused step is one event, whose
`step.fused` lists its nodes. Without hooks the loops pay nothing for them.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, List, NamedTuple, Optional

import numpy as np

from ..errors import GraphError
from ..gates.base import unbroadcast
from ..kernels import _C
from .checked_gates import checked_forward, is_graphnets
from .plan import Fusion, Plan, Step, backward_plan, forward_plan
from .store import BackwardRecord, ValueStore

# The memory a walk's arrays are allocated in: the array pool (cpp/array_pool.h), which keeps
# what a training step frees for the next step's arrays of the same sizes instead of giving it
# back to the system to be faulted in again. GRAPHNET_RETURN_FREED_MEMORY=1 in the
# environment leaves numpy's allocator to the walks too (None: set_array_memory_handler
# then changes nothing).
WALK_MEMORY = (
    None if os.environ.get("GRAPHNET_RETURN_FREED_MEMORY", "") not in ("", "0") else _C.array_pool
)
if WALK_MEMORY is not None:
    # The kernels' scratch and the walks' arrays under the pool's 256 KB come from the C
    # library's heap, which by default gives its free top back to the system past 128 KB:
    # a loop of model.loss at batch 1 then faulted its buffers in again on every call
    # (docs/performance/overhead.md). Keep them likewise, for the whole process.
    _C.keep_freed_heap()


class ForwardEvent(NamedTuple):
    """One forward step done: `inputs` are the values it read, `output` the value of
    `step.node`; `number` counts the steps from 1 to `total`."""

    step: Step
    number: int
    total: int
    inputs: tuple
    output: Any

    @property
    def node(self):
        """The node of the step (a fused step: the last node of its run)."""
        return self.step.node


class BackwardEvent(NamedTuple):
    """One backward step done: `upstream` is d target / d step.node, `received[i]` what
    step.inputs[i] received along its edge (None where it needs no gradient)."""

    step: Step
    number: int
    total: int
    upstream: Any
    received: tuple

    @property
    def node(self):
        """The node of the step (a fused step: the last node of its run)."""
        return self.step.node


class Hook(NamedTuple):
    forward: Optional[Callable[[ForwardEvent], None]] = None
    backward: Optional[Callable[[BackwardEvent], None]] = None
    start: Optional[Callable[[str, Plan], None]] = None
    end: Optional[Callable[[str, Plan], None]] = None
    #: True for hooks that must see every gate (anomaly mode): fusion is off while active.
    every_gate: bool = False


class HookHandle:
    """What add_hook returns: `remove()` it, or use it as a context manager."""

    def __init__(self, hooks: list, hook: Hook):
        self._hooks, self.hook = hooks, hook

    def remove(self) -> None:
        """Stop calling the hook (removing it twice does nothing)."""
        if self.hook in self._hooks:
            self._hooks.remove(self.hook)

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


#: Eval-mode walks on batches of fewer samples than this run the small-batch plan
#: (fusing_forward).
SMALL_BATCH = 4


class _ThreadHooks(threading.local):
    """Each thread's hooks, an empty list until one is added: an attribute every thread
    has, so that a walk reads it without the AttributeError a missing one raises inside
    getattr (0.3 us a call)."""

    def __init__(self) -> None:
        self.hooks: list = []


_thread = _ThreadHooks()


def thread_hooks() -> list:
    """Hooks that watch every graph's walks in this thread (anomaly mode uses them)."""
    return _thread.hooks


class Executor:
    """A graph's plans, cached until the graph changes, and the walks that run them."""

    def __init__(self, graph: Any):
        self.graph = graph
        self.hooks: List[Hook] = []
        self._plans: dict = {}
        self._nodes_planned = 0  # the graph's size when the plans were made
        self.walks = 0  # forward walks that succeeded, counted
        self._last_forward: Optional[Plan] = None

    def _drop_outdated(self) -> None:
        """Forget the plans and the last walk once the graph has grown (nodes are only ever
        added): checked here, once per walk, rather than by every node the graph builds."""
        size = len(self.graph.store.values)  # a slot per node; no Python __len__ call
        if size != self._nodes_planned:
            self._plans.clear()
            self._last_forward = None
            self._nodes_planned = size

    @property
    def last_forward(self) -> Optional[Plan]:
        """The plan of the last forward walk (None before any, or once the graph grew)."""
        self._drop_outdated()
        return self._last_forward

    def forward_behind(self, node) -> Optional[Plan]:
        """The forward plan whose walk last computed `node`'s value (None if none has since
        the graph last changed)."""
        last = self.last_forward  # the latest walk of all: if it computed node, it is the one
        if last is not None and node.index in last.writes:
            return last
        plans = [
            p
            for p in self._plans.values()
            if p.direction == "forward" and p.walk and node.index in p.writes
        ]
        return max(plans, key=lambda p: p.walk, default=None)

    def active_hooks(self) -> list:
        thread = _thread.hooks
        return self.hooks + thread if thread else self.hooks

    def fusing(self, hooks: list) -> bool:
        return self.graph.fuse and not (hooks and any(h.every_gate for h in hooks))

    def fusing_forward(self, hooks: list, feeds: dict) -> Fusion:
        """Which plan a forward walk runs: as fusing(), except an eval-mode walk on fewer
        than SMALL_BATCH samples, which runs the small-batch plan
        (Fusion.SMALL_BATCH: gate by gate but for the runs of the passes marked
        `small_batch`, which compute every value). Its activations are small, and what a
        fused step does to save passes over them (folding a batchnorm into the conv's
        filters, keeping copies for the inner nodes' deferred values) costs more than
        those passes (docs/performance/overhead.md). Hooks see the plan the walk would
        run without them, so that a profile times what an unwatched call runs."""
        if not self.fusing(hooks):
            return Fusion.NONE
        if self.graph.training:
            return Fusion.FULL
        for value in feeds.values():
            if type(value) is np.ndarray and value.ndim >= 2:
                return Fusion.FULL if value.shape[0] >= SMALL_BATCH else Fusion.SMALL_BATCH
        return Fusion.FULL

    def forward_plan(self, targets, fusion: Fusion) -> Plan:
        """The forward plan towards `targets` for the graph's mode: an eval-mode plan calls
        the gates' eval_forward where they have one."""
        self._drop_outdated()
        training = self.graph.training
        # One target (a model's scores) keys by its index: no tuple built per walk.
        key = (
            ("forward", targets[0].index, fusion, training)
            if len(targets) == 1
            else ("forward", tuple([t.index for t in targets]), fusion, training)
        )
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = forward_plan(
                self.graph.nodes,
                targets,
                self._forward_function if training else self._eval_function,
                fusion,
            )
        return plan

    def backward_plan(self, target, fuse: bool) -> Plan:
        self._drop_outdated()
        key = ("backward", target.index, fuse)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = backward_plan(self.graph.nodes, target, fuse)
        return plan

    def _eval_function(self, node) -> Callable:
        """An eval-mode step's run: the gate's eval_forward, or its forward."""
        gate = node.gate
        if gate.eval_forward is None:
            return self._forward_function(node)
        forward = gate.eval_forward
        return forward if is_graphnets(gate) else checked_forward(node, forward)

    def _forward_function(self, node) -> Callable:
        gate = node.gate
        if not gate.stateful:
            forward = gate.forward
        else:
            graph, state = self.graph, self.graph.store.state(node.index)
            forward = lambda *values: gate.forward(state, graph.training, *values)  # noqa: E731
        return forward if is_graphnets(gate) else checked_forward(node, forward)

    # ----- forward ----------------------------------------------------------------------

    def run_forward(self, plan: Plan, hooks: list) -> None:
        store = self.graph.store
        if store.holds_grads:  # before any hook: the walk's hooks see the gradients gone
            store.drop_outdated_grads(plan.writes)
        if store.has_deferred():
            store.forget_deferred("value", plan.writes)
            store.forget_deferred("cache", plan.writes)
        progress = [0]  # the number of the step running, for the error and the stale marks
        for hook in hooks:
            if hook.start:
                hook.start("forward", plan)
        previous = _C.set_array_memory_handler(WALK_MEMORY)
        try:
            if hooks and any(hook.forward for hook in hooks):
                self._forward_hooked(plan, store, hooks, progress)
            else:
                _C.forward_walk(plan.loop, store.values, store.caches, store, progress)
        except BaseException as err:
            _C.set_array_memory_handler(previous)
            done = progress[0]
            failed = plan.steps[done] if done < len(plan.steps) else None
            self._mark_stale(plan, done, failed, err)
            if isinstance(err, (ValueError, TypeError, MemoryError)) and failed is not None:
                raise gate_failure("forward", failed, err) from err
            raise
        _C.set_array_memory_handler(previous)
        if store.stale:
            for index in plan.writes:
                store.stale.pop(index, None)
        self.walks += 1
        plan.walk, self._last_forward = self.walks, plan
        for hook in hooks:
            if hook.end:
                hook.end("forward", plan)

    @staticmethod
    def _forward_hooked(plan: Plan, store: ValueStore, hooks: list, progress: list) -> None:
        values, caches, total = store.values, store.caches, len(plan.steps)
        for step, (out, run, ins, fused) in zip(plan.steps, plan.loop):
            inputs = tuple(values[j] for j in ins)
            if fused:
                run(store)
            else:
                values[out], caches[out] = run(*inputs)
            progress[0] += 1
            event = ForwardEvent(step, progress[0], total, inputs, values[out])
            for hook in hooks:
                if hook.forward:
                    hook.forward(event)

    def _mark_stale(self, plan: Plan, done: int, failed: Optional[Step], err) -> None:
        """After a failed forward, the fed inputs and the steps it ran hold a mix of the
        new batch and the last one: a backward through them would mix them too."""
        where = (
            f"at node {failed.node.name!r} ({failed.label})"
            if failed is not None
            else "after its last step"
        )
        reason = f"the last forward failed {where}: {type(err).__name__}: {err}"
        store = self.graph.store
        for node in plan.inputs:
            store.stale[node.index] = reason
        for step in plan.steps[: done + 1]:
            for node in step.nodes:
                store.stale[node.index] = reason

    # ----- backward ---------------------------------------------------------------------

    def run_backward(self, plan: Plan, seed: Any, store: ValueStore, hooks: list) -> None:
        previous = _C.set_array_memory_handler(WALK_MEMORY)
        try:
            self._run_backward(plan, seed, store, hooks)
        finally:
            _C.set_array_memory_handler(previous)

    def _run_backward(self, plan: Plan, seed: Any, store: ValueStore, hooks: list) -> None:
        assert plan.target is not None, "a backward plan has a target"
        if store.stale:
            self._refuse_stale(plan, store)
        if store.has_deferred():
            store.compute_deferred(plan.reads, plan.gate_nodes)
        grads = store.grads
        if store.holds_grads:  # else every gradient is None already (a forward dropped them)
            grads[:] = [None] * len(grads)  # in place: the loops below hold the list
            store.forget_deferred("grad")
        store.holds_grads = True
        edges = [None] * len(plan.edge_slots)
        grads[plan.target.index] = seed
        progress = [0]  # the number of the step running, for the error
        for hook in hooks:
            if hook.start:
                hook.start("backward", plan)
        try:
            if any(hook.backward for hook in hooks):
                self._backward_hooked(plan, store, edges, hooks, progress)
            else:
                _C.backward_walk(
                    plan.loop,
                    store.values,
                    store.caches,
                    grads,
                    edges,
                    store,
                    np.float64,
                    unbroadcast,
                    progress,
                )
        except (ValueError, TypeError, MemoryError) as err:
            done = progress[0]
            if done >= len(plan.steps):
                raise
            raise gate_failure("backward", plan.steps[done], err) from err
        for node in plan.unreached:
            value = store.value(node.index)
            if value is not None:
                grads[node.index] = np.zeros_like(value)[()]
        store.last_backward = BackwardRecord(plan, seed, self.forward_behind(plan.target), edges)
        for hook in hooks:
            if hook.end:
                hook.end("backward", plan)

    @staticmethod
    def _backward_hooked(
        plan: Plan, store: ValueStore, edges: list, hooks: list, progress: list
    ) -> None:
        values, caches, grads = store.values, store.caches, store.grads
        total = len(plan.steps)
        for number, (step, loop_step) in enumerate(zip(plan.steps, plan.loop), 1):
            progress[0] = number - 1
            out, run, needs, targets, fused = loop_step
            upstream = grads[out]
            sent = run(store, needs) if fused else run(upstream, caches[out], needs)
            received: List[Any] = [None] * len(step.inputs)
            for position, j, edge in targets:
                grad = sent[position]
                if grad is None:
                    continue
                if grad.shape != values[j].shape:
                    grad = unbroadcast(grad, values[j].shape)
                if edge is not None:
                    edges[edge] = grad
                received[position] = grad
                grads[j] = grad if grads[j] is None else grads[j] + grad
            event = BackwardEvent(step, number, total, upstream, tuple(received))
            for hook in hooks:
                if hook.backward:
                    hook.backward(event)

    @staticmethod
    def _refuse_stale(plan: Plan, store: ValueStore) -> None:
        for step in plan.steps:
            for node in (step.node, *step.inputs):
                reason = store.stale.get(node.index)
                if reason is not None:
                    raise GraphError(
                        f"cannot run backward through node {node.name!r}: "
                        f"{reason}; run a forward that succeeds first"
                    )


def gate_failure(walk: str, step: Step, err: Exception) -> Exception:
    """A kernel's own error, with the node, its gate and its inputs' shapes added; for a
    fused step, the chain of nodes it runs. A MemoryError stays one (an output too large to
    make: inputs broadcast to 2**40 rows, say); any other error becomes a GraphError."""
    if isinstance(err, GraphError):
        return err
    first = step.fused[0] if step.fused else step.node
    inputs = ", ".join(
        f"{i.name!r} {np.shape(i.value)} {np.asarray(i.value).dtype}" for i in first.inputs
    )
    if step.fused:
        names = " -> ".join(f"{n.name!r} ({n.op})" for n in step.fused)
        message = (
            f"{walk} of the fused chain {names} failed: {err} [inputs of {first.name!r}: {inputs}]"
        )
    else:
        message = (
            f"{walk} of node {step.node.name!r} (gate {step.node.op!r}) failed: "
            f"{err} [inputs: {inputs}]"
        )
    return MemoryError(message) if isinstance(err, MemoryError) else GraphError(message)
