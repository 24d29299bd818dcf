"""What a fusion pass is.

A pass rewrites a plan: it finds runs of steps it knows how to run together and replaces
each run with one fused step (graphnet.core.plan.Step with `fused` listing the run's
nodes). The fused step's `run(store)` (forward) computes what the run's last node holds and
writes it to the value store; what it skips computing for the other nodes (their values,
gradients or caches), it leaves in the store with `store.defer(slot, index, compute)`, so
that whoever reads them later still sees every node, gate by gate. Its backward
`run(store, needs)` returns the gradients of the run's inputs, likewise deferring the inner
nodes' gradients.

Adding a fusion pattern is one module in this folder, a subclass of FusionPass decorated
with @register_pass, and its tests; a run of two gates, a producer and the consumer that
alone reads it, subclasses PairPass and says only which runs it takes and what the fused
steps run.
"""

from collections import Counter
from typing import Any, Callable, ClassVar, List

import numpy as np

from ..core.plan import REWRITES, Step, register_rewrite


class FusionPass:
    """A plan rewrite. Each method gets the steps of one walk and returns them with the
    runs it fuses replaced; a pass that finds nothing returns them unchanged.

    `length`: the number of gates of the longest run it fuses. Passes apply longest first,
    so that a pass taking a part of a longer run does not split it.
    """

    length: ClassVar[int] = 0

    def fuse_forward(self, steps: List[Step]) -> List[Step]:
        return steps

    def fuse_backward(self, steps: List[Step]) -> List[Step]:
        return steps


def register_pass(cls):
    """Class decorator: apply an instance of this FusionPass to every fused plan."""
    register_rewrite(cls())
    REWRITES.sort(key=lambda rewrite: -getattr(rewrite, "length", 0))  # stable
    return cls


def readers(steps: List[Step]) -> Counter:
    """How many steps of a walk read each node: a node read by one step only can be left
    uncomputed by a fused step that is that reader."""
    return Counter(node for step in steps for node in step.inputs)


class PairPass(FusionPass):
    """A pass over runs of two gates, a producer and the consumer that alone reads it (its
    first input), each run as one step each way. A subclass says which runs it takes and
    what the fused steps run."""

    length = 2

    def takes(self, steps: List[Step]) -> Callable[[Any, Any], bool]:
        """takes(consumer, producer): whether this pass fuses that run among `steps`."""
        raise NotImplementedError

    def forward_run(self, producer: Any, consumer: Any) -> Callable:
        """The fused forward step's run(store)."""
        raise NotImplementedError

    def backward_run(self, producer: Any, consumer: Any) -> Callable:
        """The fused backward step's run(store, needs)."""
        raise NotImplementedError

    def fuse_forward(self, steps: List[Step]) -> List[Step]:
        return self._fuse(
            steps,
            lambda producer, consumer, _: Step(
                consumer,
                producer.inputs,
                self.forward_run(producer, consumer),
                (),
                (producer, consumer),
            ),
        )

    def fuse_backward(self, steps: List[Step]) -> List[Step]:
        def fused(producer, consumer, producer_step):
            edges = tuple((producer, position) for position in range(len(producer.inputs)))
            return Step(
                consumer,
                producer.inputs,
                self.backward_run(producer, consumer),
                producer_step.needs,
                (producer, consumer),
                edges=edges,
            )

        return self._fuse(steps, fused)

    def _fuse(self, steps: List[Step], make_step: Callable[..., Step]) -> List[Step]:
        """`steps` with each run this pass takes replaced by make_step(producer, consumer,
        the producer's step)."""
        takes = self.takes(steps)
        plain = {step.node: step for step in steps if not step.fused}
        reads = readers(steps)
        consumers = {
            node
            for node in plain
            if node.inputs
            and (producer := node.inputs[0]) in plain
            and reads[producer] == 1
            and takes(node, producer)
        }
        producers = {node.inputs[0] for node in consumers}
        return [
            make_step(step.node.inputs[0], step.node, plain[step.node.inputs[0]])
            if step.node in consumers
            else step
            for step in steps
            if step.node not in producers
        ]


class once:
    """`compute` called on the first call, its result returned then and on every later call
    (a deferred entry's: the fused steps leave several entries to one gate call). What
    functools.cache does for a function of no arguments, made at 0.2 us instead of its 1.9
    (an lru_cache wrapper and its update_wrapper): the fused steps make one or two on every
    walk. A call that raises keeps nothing, as functools.cache's."""

    __slots__ = ("_compute", "_result")

    def __init__(self, compute: Callable[[], Any]) -> None:
        self._compute: Any = compute

    def __call__(self) -> Any:
        compute = self._compute
        if compute is not None:
            self._result = compute()
            self._compute = None  # what it read is no longer held
        return self._result


def mode_forward(node: Any) -> Callable[..., Any]:
    """The forward of a stateless node's gate that a walk runs in the graph's mode: in eval
    mode its eval_forward where it has one (as the executor's plain steps), whose cache may
    differ from the train-mode one (a GELU's saved x instead of its slope)."""
    gate = node.gate
    return gate.forward if node.graph.training or gate.eval_forward is None else gate.eval_forward


def kept(node: Any, value: Any) -> Any:
    """`value` as a deferred entry computed later must see it: a source's array (an input
    batch, a param) may be refilled or updated in place before then, so it is copied; a
    gate's output never is (each forward makes new ones)."""
    return np.array(value) if node.gate is None else value


class ChainPass(FusionPass):
    """A pass over runs of consecutive single-gate steps, a chain each, that one call
    computes in full (every node's value and cache: nothing deferred). A subclass says
    where a chain starts and ends (`chain`) and what its step runs (`forward_run`). Chains
    are for the plans of small eval batches only (plan.forward_plan), where a gate's call
    costs as much as its arithmetic."""

    small_batch = True

    def chain(self, steps: List[Step], start: int) -> List[Step]:
        """The chain of steps from `start` ([] or one step: none there)."""
        raise NotImplementedError

    def forward_run(self, chain: List[Step]) -> Callable:
        """The fused forward step's run(store)."""
        raise NotImplementedError

    def fuse_forward(self, steps: List[Step]) -> List[Step]:
        fused, i = [], 0
        while i < len(steps):
            chain = self.chain(steps, i)
            if len(chain) > 1:
                nodes = tuple(step.node for step in chain)
                inputs = tuple(
                    dict.fromkeys(i for node in nodes for i in node.inputs if i not in nodes)
                )
                fused.append(Step(nodes[-1], inputs, self.forward_run(chain), (), nodes))
                i += len(chain)
            else:
                fused.append(steps[i])
                i += 1
        return fused


def run_gates(chain: List[Step], store: Any) -> None:
    """The chain's steps one by one, each gate on the values in `store` (what a chain's
    call does not take as it is)."""
    values = store.values
    for step in chain:
        out = step.node.index
        values[out], store.caches[out] = step.run(*(values[i.index] for i in step.node.inputs))
