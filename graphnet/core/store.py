"""The value store: what the walks compute, kept apart from the nodes that describe it.

One list per kind of entry, indexed by `node.index`: values, gradients and caches; and
the stateful gates' per-node states, by index. The executor's loops read and write the
lists directly.
An entry may be deferred: a fused step that skipped computing it (the conv's output inside
conv -> relu -> max_pool, say) leaves a marker and a function; the first read computes
and keeps the entry. Nothing else ever changes an entry on read.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import numpy as np

from ..errors import GraphError


class BackwardRecord(NamedTuple):
    """The last backward: its plan, its seed, the forward plan whose walk computed the
    values it read (None if that plan is gone: the graph changed since), and what it sent
    along the edges into inputs with more than one consumer, by `plan.edge_slots` (an input
    with one consumer received exactly its own gradient, so nothing is kept for it)."""

    plan: Any
    seed: Any
    forward: Any
    edges: list


#: The marker of a deferred entry in the lists.
DEFERRED = type("Deferred", (), {"__repr__": lambda self: "<deferred>"})()


class ValueStore:
    """values, grads, caches and states of a graph's nodes, by node index.

    `stale` names the nodes a failed forward left half-computed: a backward that reads
    them refuses until a forward succeeds.

    A gradient belongs to the values its backward read: a forward that recomputes any of
    them drops the gradients of that backward (see `drop_outdated_grads`), so `.grad`
    reads None again, as before any backward, rather than a gradient of older values.
    """

    def __init__(self) -> None:
        self.values: list = []
        self.grads: list = []
        self.caches: list = []
        #: node index -> that node's state dict, made on first use (most gates have none)
        self.states: Dict[int, dict] = {}
        #: (slot, index) -> (compute, shape, lazy): see defer
        self._deferred: Dict[Tuple[str, int], Tuple[Callable[[], Any], Any, bool]] = {}
        self.last_backward: Optional[BackwardRecord] = None
        #: True from the start of a backward until a forward drops its gradients (also
        #: after a backward that failed part-way: what it computed stays readable).
        self.holds_grads = False
        self.stale: Dict[int, str] = {}

    def grow(self, value: Any = None) -> None:
        """Make room for one more node (the graph just built it)."""
        self.values.append(value)
        self.grads.append(None)
        self.caches.append(None)

    def state(self, index: int) -> dict:
        """Node `index`'s state (a stateful gate's running averages, random stream, ...),
        an empty dict until something is put in it."""
        state = self.states.get(index)
        if state is None:
            state = self.states[index] = {}
        return state

    # ----- reading ----------------------------------------------------------------------

    def value(self, index: int) -> Any:
        item = self.values[index]
        return self._compute("value", index) if item is DEFERRED else item

    def grad(self, index: int) -> Any:
        item = self.grads[index]
        return self._compute("grad", index) if item is DEFERRED else item

    def grads_of(self, slots: Dict[str, int]) -> Dict[str, Any]:
        """name -> grad(index) for each (name, index) of `slots`: a training step reads
        every param's, and the list read inline costs half of a grad() call per param."""
        grads = self.grads
        return {
            name: grad if (grad := grads[index]) is not DEFERRED else self._compute("grad", index)
            for name, index in slots.items()
        }

    def cache(self, index: int) -> Any:
        item = self.caches[index]
        return self._compute("cache", index) if item is DEFERRED else item

    def peek_value(self, index: int) -> Any:
        """The value if it is computed, else None: never computes a deferred one."""
        item = self.values[index]
        return None if item is DEFERRED else item

    def peek_grad(self, index: int) -> Any:
        item = self.grads[index]
        return None if item is DEFERRED else item

    def peek_shape(self, index: int) -> Optional[tuple]:
        """The value's shape, also of a deferred value (its step declared it); None
        before any forward computed it."""
        item = self.values[index]
        if item is DEFERRED:
            return self._deferred[("value", index)][1]
        return None if item is None else np.shape(item)

    def is_deferred(self, slot: str, index: int) -> bool:
        return self._lists(slot)[index] is DEFERRED

    def has_deferred(self) -> bool:
        return bool(self._deferred)

    # ----- writing ------------------------------------------------------------------------

    def defer(
        self,
        slot: str,
        index: int,
        compute: Callable[[], Any],
        shape: Any = None,
        lazy: bool = False,
    ) -> None:
        """Leave entry `slot` ('value', 'grad' or 'cache') of node `index` to `compute()`,
        called on the first read; `shape` is the value's shape, for readers that need only
        that. lazy: a backward computes it before its loop only if a single-gate step of
        it reads it (`compute_deferred`); a fused step reads it through the store, if at
        all (a groupnorm -> gelu backward never needs the gelu's saved input)."""
        self._lists(slot)[index] = DEFERRED
        self._deferred[(slot, index)] = (compute, shape, lazy)

    def compute_deferred(self, indices, gate_nodes=frozenset()) -> None:
        """Compute every deferred entry of the nodes `indices` (a set: a backward step is
        about to read them), a lazy one only for the nodes `gate_nodes` (those of
        single-gate steps, which read their entries from the lists)."""
        for (slot, index), (_, _, lazy) in list(self._deferred.items()):
            if index in indices and (not lazy or index in gate_nodes):
                self._compute(slot, index)

    def forget_deferred(self, slot: str, indices=None) -> None:
        """Drop the deferred entries of `slot` that a walk is about to overwrite: those of
        the nodes `indices` (a set), or all of them. A walk defers a few entries of its
        many nodes, so this looks through the deferred ones."""
        deferred = self._deferred
        if not deferred:
            return
        for key in [
            key for key in deferred if key[0] == slot and (indices is None or key[1] in indices)
        ]:
            del deferred[key]

    def drop_outdated_grads(self, writes: frozenset) -> None:
        """A forward is about to recompute the nodes `writes` (a forward plan's): drop the
        gradients that would no longer belong to the values shown. If the last backward
        read any of those values (its steps' nodes and inputs, its target), all of its
        gradients go, and its record with them; a walk apart from it (another sink's
        branch) drops only the zeros it gave the recomputed nodes its target does not
        depend on. Called only while `holds_grads`: a forward after a forward pays nothing."""
        last = self.last_backward
        if last is not None and writes.isdisjoint(last.plan.reads):
            for node in last.plan.unreached:
                if node.index in writes:
                    self.grads[node.index] = None
            return
        self.grads[:] = [None] * len(self.grads)  # in place: the walks' loops hold the list
        self.forget_deferred("grad")
        self.last_backward = None
        self.holds_grads = False

    def set_value(self, node: Any, item: Any) -> None:
        """`node.value = item` for a source: a param's or a const's new value, checked."""
        if node.kind not in ("param", "const", "input"):
            raise GraphError(
                f"node {node.name!r} ({node.op}) is computed by its gate; only "
                "inputs, params and consts can be assigned a value"
            )
        array = np.asarray(item)
        current = self.values[node.index]
        if node.kind == "param" and current is not None and array.shape != np.shape(current):
            raise GraphError(
                f"param {node.name!r} has shape {np.shape(current)}; cannot "
                f"assign an array of shape {array.shape}"
            )
        dtype = node.declared_dtype
        array = array if dtype is None else array.astype(dtype, copy=False)
        self.values[node.index] = array[()] if array.ndim == 0 else array

    def keep(self) -> ValueStore:
        """The entries as they are now, for drawing this moment after later walks replaced
        them: copies of the lists of values and gradients (the arrays shared, not copied)
        and the last backward's record. What is deferred reads as not computed (peek_*);
        the caches and states are not kept."""
        kept = ValueStore()
        kept.values, kept.grads = self.values[:], self.grads[:]
        kept.last_backward = self.last_backward
        return kept

    def scratch(self) -> ValueStore:
        """A store that shares this one's values, caches and states but has gradients of
        its own: a backward run in it (the step player's, say) leaves this one's untouched."""
        other = ValueStore.__new__(ValueStore)
        other.values, other.caches, other.states = self.values, self.caches, self.states
        # Its own record of what is deferred: its backward forgets the deferred gradients
        # (of its own list), and this store's must stay readable.
        other._deferred = {key: entry for key, entry in self._deferred.items() if key[0] != "grad"}
        other.grads = [None] * len(self.grads)
        other.last_backward, other.stale, other.holds_grads = None, self.stale, False
        return other

    # ----- internals ----------------------------------------------------------------------

    def _lists(self, slot: str) -> list:
        return {"value": self.values, "grad": self.grads, "cache": self.caches}[slot]

    def _compute(self, slot: str, index: int) -> Any:
        compute = self._deferred[(slot, index)][0]
        items = self._lists(slot)
        if items[index] is DEFERRED:  # else a scratch store sharing the list computed it
            items[index] = compute()
        del self._deferred[(slot, index)]
        return items[index]
