"""Which drawn unit each node belongs to: itself, or a collapsed block of nodes.

Large graphs stay readable by drawing fewer units: named scopes ('layer1/fc') become one
block each, runs of repeated blocks (layer1 ... layer50 of the same layer, or 10,000 tanh
gates in a chain) one block, and as a last resort consecutive stretches of the
topological order. `collapse='auto'` goes through these in that order only as far as it
must for the drawing to fit.
"""

import itertools
import math
from collections import defaultdict


def grouping(group_by):
    """node -> group name or None, from draw()'s `group_by`."""
    if group_by is None:
        return lambda node: None
    if group_by == "scope":
        return lambda node: node.name.rsplit("/", 1)[0] if "/" in node.name else None
    if callable(group_by):
        return group_by
    raise ValueError(
        f"group_by must be 'scope', None or a function node -> group name, got {group_by!r}"
    )


def check_collapse(how):
    if isinstance(how, str) and how not in ("auto", "groups"):
        raise ValueError(
            f"collapse must be 'auto', 'groups', True, False or a collection "
            f"of group names, got {how!r}"
        )


class Units:
    """Keys are node names for single nodes and 'block:<n>' for blocks; `unit[name]` is
    the key of the unit a node is drawn in."""

    RUN_PERIODS, MIN_REPEATS, RUN_PIECES = range(1, 9), 3, (6, 4, 2)

    def __init__(self, nodes, group_of):
        self.nodes, self.group_of = nodes, group_of
        self.by_name = {n.name: n for n in nodes}
        self.position = {n.name: i for i, n in enumerate(nodes)}
        self.unit = {n.name: n.name for n in nodes}
        self.blocks = {}  # key -> (title, member nodes in topological order)
        self._block_ids = itertools.count()
        self.consumers = defaultdict(list)
        for node in nodes:
            for inp in node.inputs:
                if inp.name in self.by_name:
                    self.consumers[inp.name].append(node)

    def visible(self):
        return list(dict.fromkeys(self.unit[n.name] for n in self.nodes))

    def members(self, key):
        return self.blocks[key][1] if key in self.blocks else [self.by_name[key]]

    def collapse(self, how, max_nodes, too_big):
        """Collapse as `how` says (see draw()); 'auto' collapses while the drawing has
        more than `max_nodes` units or `too_big(self)` says it would not fit."""
        check_collapse(how)
        if how is False:
            return
        if how not in (True, "auto", "groups"):
            wanted = set(how)
            self._collapse_groups(lambda group: group in wanted)
            return

        def enough():
            return how == "auto" and len(self.visible()) <= max_nodes and not too_big(self)

        if enough():
            return
        self._collapse_groups(lambda group: True)
        if how == "groups" or enough():
            return
        if how is True:
            self._collapse_runs(pieces=1)
            return
        # A long run is cut into a few pieces where they fit, so the drawing still shows
        # how the gradient changes along it (vanishing from one piece to the next).
        for pieces in self.RUN_PIECES:
            saved = dict(self.unit), dict(self.blocks)
            self._collapse_runs(pieces)
            if enough():
                return
            self.unit, self.blocks = map(dict, saved)
        self._collapse_runs(pieces=1)
        if not enough():
            self._collapse_stretches(max_nodes)

    def _new_block(self, title, members):
        key = f"block:{next(self._block_ids)}"
        members = sorted(members, key=self._sort_key)
        self.blocks[key] = (title, members)
        for node in members:
            self.unit[node.name] = key

    def _sort_key(self, node):
        return self.position[node.name]

    def _collapse_groups(self, chosen):
        """Collapse each chosen group (with its nested groups) into one block."""
        members = defaultdict(list)
        for node in self.nodes:
            group = self.group_of(node)
            if group is None:
                continue
            # The outermost chosen enclosing scope wins: collapsing 'a' hides 'a/b'.
            parts = group.split("/")
            for depth in range(1, len(parts) + 1):
                prefix = "/".join(parts[:depth])
                if chosen(prefix):
                    members[prefix].append(node)
                    break
        for group, nodes in members.items():
            self._new_block(group, nodes)
        self._absorb_sources()

    def _absorb_sources(self, kinds=("param", "const")):
        """A param or const used only inside one block belongs to it (a layer's weights);
        so does an input, for runs (an unrolled RNN's x_t)."""
        absorbed = defaultdict(list)
        for node in self.nodes:
            if node.kind in kinds and self.unit[node.name] == node.name:
                homes = {self.unit[c.name] for c in self.consumers[node.name]}
                if len(homes) == 1 and (home := homes.pop()) in self.blocks:
                    absorbed[home].append(node)
        for home, sources in absorbed.items():
            title, members = self.blocks[home]
            self.blocks[home] = (title, sorted(members + sources, key=self._sort_key))
            for node in sources:
                self.unit[node.name] = home

    def _signature(self, key):
        return tuple(n.op for n in self.members(key) if n.gate is not None)

    def _collapse_runs(self, pieces):
        """Collapse each run of >= MIN_REPEATS consecutive repeats of one pattern of
        units (same gate ops in the same order) into up to `pieces` blocks of at least
        MIN_REPEATS repeats each."""
        sequence = [k for k in self.visible() if self._signature(k)]
        signatures = [self._signature(k) for k in sequence]
        start = 0
        while start < len(sequence):
            period, repeats = self._longest_run(signatures, start)
            if repeats >= self.MIN_REPEATS:
                ops = " → ".join(op for s in signatures[start : start + period] for op in s)
                count = max(min(pieces, repeats // self.MIN_REPEATS), 1)
                bounds = [round(i * repeats / count) for i in range(count + 1)]
                for first, last in zip(bounds, bounds[1:]):
                    keys = sequence[start + first * period : start + last * period]
                    members = [n for k in keys for n in self.members(k)]
                    for key in keys:
                        self.blocks.pop(key, None)
                    title = (
                        f"{repeats} × [{ops}]"
                        if count == 1
                        else f"{first + 1}–{last} of {repeats} × [{ops}]"
                    )
                    self._new_block(title, members)
                start += period * repeats
            else:
                start += 1
        self._absorb_sources(("param", "const", "input"))

    def _longest_run(self, signatures, start):
        best = (1, 1)
        for period in self.RUN_PERIODS:
            pattern = signatures[start : start + period]
            if len(pattern) < period:
                break
            repeats = 1
            while signatures[start + repeats * period : start + (repeats + 1) * period] == pattern:
                repeats += 1
            if repeats >= self.MIN_REPEATS and period * repeats > best[0] * best[1]:
                best = (period, repeats)
        return best

    def _collapse_stretches(self, max_nodes):
        """Last resort for a large graph without scopes or repeats: consecutive stretches
        of the topological order, so the drawing never exceeds about max_nodes units."""
        keys = self.visible()
        size = math.ceil(len(keys) / max(min(max_nodes, 40) // 2, 1))
        for index in range(0, len(keys), size):
            chunk = keys[index : index + size]
            members = [n for k in chunk for n in self.members(k)]
            for key in chunk:
                self.blocks.pop(key, None)
            self._new_block(f"{members[0].name} … {members[-1].name}", members)
