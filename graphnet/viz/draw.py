"""draw(graph) -> graphviz.Digraph: the graph with values, gradients and gradient flow.

A node shows its name, gate and shape; after forward its value (blue), after backward its
gradient (vermillion): the number for a scalar, the L2 norm for a tensor (its full
statistics are in the tooltip, and in the node with detail='full'). An edge shows the
gradient its consumer sent back along it (not the input's total, which also holds what
other consumers sent): its width on one log scale for the whole drawing, its colour the
sign. A node whose gradient vanishes, explodes or holds NaN/Inf gets a coloured border;
the first NaN/Inf and its path to the loss are drawn in black. Gates the last forward did
not run (a model's L2 branch with reg=0) are left out, or marked with show_not_run=True.

Large graphs stay readable: named scopes ('layer1/fc') become clusters, the main path runs
straight in the rank direction, and scopes, then runs of repeated blocks, collapse into
one node each until the drawing fits in about 4000 pixels (or `max_nodes` units).
"""

import dataclasses
import html
import itertools
import math
from typing import Any, Optional
from collections import Counter, defaultdict


from .._format import is_scalar, num, shape_text
from ..core.graph import Graph
from ..errors import AnomalyError
from ..gates.base import fill, formula_of, rule_of
from .collapse import Units, grouping
from .measure import Measures, Summary
from .render import Drawing
from .scale import (
    ACTIVE_FILL,
    ANOMALY,
    BORDER,
    FLAG_COLORS,
    FONT,
    GRAD,
    HEAT_HIGH,
    HEAT_LOW,
    MUTED,
    PENDING,
    ROLE_NAMES,
    STYLES,
    TEXT,
    VALUE,
    GradientScale,
    mix,
)

#: The long side a default drawing aims to stay within, in points (PNG pixels are 4/3 of
#: a point: Graphviz renders bitmaps at 96 dpi), so a PNG stays under about 4000 px.
MAX_SIDE_PT = 2700.0
DETAILS = ("compact", "full")


def gradient_flag(grad: Any, vanishing: float = 1e-6, exploding: float = 1e3) -> Optional[str]:
    """'NaN', 'Inf', 'vanishing' (0 < L2 norm < vanishing), 'exploding' (L2 norm >
    exploding) or None. An exact zero is not flagged: a max gate or a relu blocks a
    gradient on purpose, and a circuit shows that as 0."""
    return None if grad is None else Summary(grad).flag(vanishing, exploding)


def edge_gradients(graph: Graph) -> dict:
    """(consumer name, input position) -> the gradient that consumer sent to that input
    in the last backward (Graph.edge_gradients)."""
    return graph.edge_gradients()


def graph_of(source: Any, who: str) -> Graph:
    """The Graph of `source`: a Graph, or a model with `.graph`; else a TypeError."""
    graph = source if isinstance(source, Graph) else getattr(source, "graph", None)
    if not isinstance(graph, Graph):
        raise TypeError(
            f"{who} takes a graphnet Graph or a model with .graph, got {type(source).__name__}"
        )
    return graph


def not_run(graph: Graph, store: Any = None) -> set:
    """Names of the nodes the walk a drawing shows did not compute (Graph.shown_walk: the
    forward behind the last backward, else the last forward; after a forward that stopped
    part-way, the gates without a value), and the sources only they read (a model's L2
    branch with reg=0 and its constant). Nothing is left out of a graph that has not run
    at all. `store`: a store kept earlier (ValueStore.keep) to draw instead of the
    graph's."""
    walk = graph.shown_walk(store)
    store = graph.store if store is None else store
    if walk is not None and not store.stale:
        missing = {
            n.name
            for n in graph.nodes
            if n.kind in ("gate", "input") and n.index not in walk.writes
        }
    else:  # no walk finished (one stopped at a NaN, say): what it computed has values
        gates = [n for n in graph.nodes if n.gate is not None]
        if all(store.values[n.index] is None for n in gates):
            return set()
        missing = {n.name for n in gates if store.values[n.index] is None}
    consumers = defaultdict(list)
    for node in graph.nodes:
        for inp in node.inputs:
            consumers[inp.name].append(node.name)
    for node in graph.nodes:
        if (
            node.gate is None
            and consumers[node.name]
            and all(c in missing for c in consumers[node.name])
        ):
            missing.add(node.name)
    return missing


@dataclasses.dataclass
class View:
    """What a drawing shows: values, gradients and edge gradients by node name. A graph's
    view is its current state; a step frame's view is the state part-way through a walk,
    with the active node and edges highlighted and the unknowns shown as '?'."""

    values: dict
    grads: dict
    edge_grads: dict
    active: Optional[str] = None
    active_edges: frozenset = frozenset()
    #: The quantities ('value', 'grad') a walk is filling in: unknown ones show '?'.
    pending: frozenset = frozenset()
    #: Gradients the edge scale spans, if not the ones drawn: the frames of one walk
    #: share the last frame's scale, so an edge's width does not change between steps.
    scale_grads: Optional[list] = None

    @classmethod
    def of(cls, graph, compute=True, store=None):
        """The graph's current state; compute=False leaves out what a fused step left to
        compute on first read instead of computing it (the live mode's redraws). `store`:
        a state kept earlier (ValueStore.keep; with compute=False) instead."""
        kept, store = store, graph.store if store is None else store
        value, grad = (store.value, store.grad) if compute else (store.peek_value, store.peek_grad)
        values = {n.name: v for n in graph.nodes if (v := value(n.index)) is not None}
        grads = {n.name: g for n in graph.nodes if (g := grad(n.index)) is not None}
        return cls(values=values, grads=grads, edge_grads=graph.edge_gradients(compute, kept))


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of a node's label. `slot` names what it shows ('value', 'grad', ...), so
    that the rows of one node in several states line up (the step player's frames)."""

    slot: str
    text: str
    color: str = TEXT
    size: int = 12
    bold: bool = False


def draw(
    graph: Any,
    *,
    values: bool = True,
    grads: bool = True,
    show_cache: bool = False,
    detail: str = "compact",
    show_not_run: bool = False,
    group_by: Any = "scope",
    collapse: Any = "auto",
    max_nodes: int = 120,
    vanishing: float = 1e-6,
    exploding: float = 1e3,
    legend: bool = True,
    rankdir: Optional[str] = None,
    title: Optional[str] = None,
    view: Optional["View"] = None,
    heat: Optional[dict] = None,
    heat_unit: str = "",
    anomaly: Any = "auto",
) -> Any:
    """A graphviz.Digraph of `graph` (see the module docstring for what it shows).

    values, grads: show node values and gradients (and gradients on edges).
    show_cache: also summarize what each gate saved for backward (masks, batchnorm stats).
    detail: 'compact' (one number each for a tensor's value and gradient: the L2 norm;
        the full statistics in the tooltip) or 'full' (mean, std, min, max and L2 norm).
    show_not_run: also draw the gates the last forward did not run, marked 'not run'.
    group_by: 'scope' (the part of a name before its last '/'), None, or a function
        node -> group name or None. Groups are drawn as clusters; '/' nests them.
    collapse: 'auto' (collapse only as far as needed to fit about 4000 px or `max_nodes`
        units: scopes first, then runs of repeated blocks, then consecutive stretches),
        'groups' (every group becomes one node), True (every group and every run of
        repeats), False, or a collection of group names to collapse.
    vanishing, exploding: L2-norm thresholds of the gradient flags.
    rankdir: 'LR' (left to right, the default for scalar circuits) or 'TB' (top to
        bottom, the default for tensor graphs).
    title: a text drawn above the graph (several lines allowed).
    view: a View to draw instead of the graph's current state (step frames pass one).
    heat: {node name: number} to fill nodes by (darker = larger), e.g. a profile's
        milliseconds; heat_unit names its unit in the labels.
    anomaly: 'auto' (find the first node whose value or gradient went NaN/Inf), an
        AnomalyError or a node name (that node), or None: the node and its path to the
        loss are drawn in black.

    The result has `.flags`, {node name: 'vanishing' | 'exploding' | 'NaN' | 'Inf'}.
    """
    picture = Picture(
        graph,
        view,
        values=values,
        grads=grads,
        show_cache=show_cache,
        detail=detail,
        show_not_run=show_not_run,
        group_by=group_by,
        collapse=collapse,
        max_nodes=max_nodes,
        vanishing=vanishing,
        exploding=exploding,
        rankdir=rankdir,
        anomaly=anomaly,
        overlay=heat_overlay(heat, heat_unit),
    )
    return picture.dot(picture.state(picture.view), legend=legend, title=title)


def heat_overlay(heat, unit):
    """{name: (fill colour, label text)} filling nodes by a number (darker = larger)."""
    if not heat:
        return None
    top = max(heat.values(), default=0.0)
    return Overlay(
        {
            name: (
                mix(HEAT_LOW, HEAT_HIGH, amount / top if top > 0 else 0.0),
                f"{num(amount)} {unit}".strip(),
            )
            for name, amount in heat.items()
        },
        [(None, f"fill: {unit or 'amount'} per node, darker = more")],
    )


@dataclasses.dataclass
class Overlay:
    """Fills and a label row per node that replace the role fills (a profile's times,
    a comparison's gradient change), and the legend lines that explain them: (fill or
    None, text) pairs."""

    cells: dict
    legend: list


@dataclasses.dataclass
class State:
    """A view, with what the drawing derives from it: flags, the edge scale, the anomaly."""

    view: View
    measure: Measures
    flags: dict
    edge_values: list  # what each edge shows (Edge.value), in the order of Picture.edges
    scale: GradientScale
    flowing: bool
    anomaly: tuple  # (origin name or None, names on its path to the loss)


@dataclasses.dataclass
class Edge:
    """A drawn edge: one graph edge, or several merged where a collapsed block is an end."""

    tail: str  # unit keys
    head: str
    carried: list  # (consumer name, input position) of the graph edges drawn as this one
    main: bool  # the tail is a gate or an input: the path data flows along
    index: int  # its place in Picture.edges

    def value(self, view, measure):
        """What the edge shows, as a number: the one scalar gradient sent along it, or the
        L2 norm of the tensor (or of the several gradients together); None if none."""
        sent = [view.edge_grads.get(c) for c in self.carried]
        known = [measure(g) for g in sent if g is not None]
        if not known:
            return None
        if len(sent) == 1 and known[0].scalar:
            return known[0].value
        return math.sqrt(sum(m.size**2 for m in known))

    def signed(self, view):
        sent = [view.edge_grads.get(c) for c in self.carried]
        return len(sent) == 1 and is_scalar(sent[0])


class Picture:
    """What a drawing of a graph holds, apart from any one state of it: the units drawn
    (nodes and collapsed blocks), the edges between them and the options. `state(view)`
    derives what one state adds, and `dot(state)` writes the Digraph. The step player
    draws many states on one layout from one Picture."""

    def __init__(
        self,
        graph,
        view=None,
        *,
        values=True,
        grads=True,
        show_cache=False,
        detail="compact",
        show_not_run=False,
        group_by="scope",
        collapse="auto",
        max_nodes=120,
        vanishing=1e-6,
        exploding=1e3,
        rankdir=None,
        anomaly="auto",
        overlay=None,
        store=None,  # a state kept earlier (ValueStore.keep) that `view` shows
    ):
        if not isinstance(graph, Graph):
            raise TypeError(
                f"draw() takes a graphnet Graph, got {type(graph).__name__}; for "
                "a model pass model.graph"
            )
        if detail not in DETAILS:
            raise ValueError(f"detail must be 'compact' or 'full', got {detail!r}")
        self.graph = graph
        self.options = dict(
            values=values,
            grads=grads,
            show_cache=show_cache,
            detail=detail,
            vanishing=vanishing,
            exploding=exploding,
        )
        self.anomaly_option = anomaly
        self.overlay = overlay
        self.view = view = View.of(graph) if view is None else view
        self.rankdir = rankdir or (
            "LR" if all(is_scalar(v) for v in view.values.values()) else "TB"
        )
        # The arrow points the way the gradient flows: against the edge, to the input.
        self.arrow = {"LR": "←", "RL": "→", "TB": "↑", "BT": "↓"}[self.rankdir]
        self.hidden = set()
        # A NaN stops the forward: the nodes after it did not run, but its path to the
        # loss is what the drawing must show.
        _, path = self._anomaly(view, Measures())
        skipped = not_run(graph, store) - path
        self.not_run = skipped if show_not_run else set()
        self.hidden = set() if show_not_run else skipped
        self.sinks = {id(n) for n in graph.sinks}
        nodes = [n for n in graph.nodes if n.name not in self.hidden]
        self.units = Units(nodes, grouping(group_by))
        self.clusters = group_by is not None
        self.edges = self._edges()
        probe = self.state(view)
        self.units.collapse(collapse, max_nodes, lambda units: self._too_big(units, probe))
        self.edges = self._edges()

    # ----- one state --------------------------------------------------------------------

    def state(self, view):
        measure, flags = Measures(), {}
        if self.options["grads"]:
            flags = {
                name: flag
                for name, grad in view.grads.items()
                if name not in self.hidden
                and (
                    flag := measure(grad).flag(self.options["vanishing"], self.options["exploding"])
                )
            }
        edge_values = [
            e.value(view, measure) if self.options["grads"] else None for e in self.edges
        ]
        drawn = [v for v in edge_values if v is not None]
        signed = all(e.signed(view) for e, v in zip(self.edges, edge_values) if v is not None)
        if view.scale_grads is not None:
            signed = signed and all(is_scalar(g) for g in view.scale_grads)
            drawn = [measure(g).value if signed else measure(g).size for g in view.scale_grads]
        return State(
            view,
            measure,
            flags,
            edge_values,
            GradientScale(drawn, signed),
            bool(drawn),
            self._anomaly(view, measure),
        )

    def _anomaly(self, view, measure):
        option = self.anomaly_option
        if option is None or option is False:
            return None, set()
        if isinstance(option, AnomalyError):
            origin = option.node
        elif option == "auto":
            origin = first_nonfinite(self.graph.nodes, view, measure)
        else:
            origin = option
        if origin is None or origin not in self.graph:
            return None, set()
        path, frontier = {origin}, [origin]
        consumers = defaultdict(list)
        for node in self.graph.nodes:
            for inp in node.inputs:
                consumers[inp.name].append(node.name)
        while frontier:
            for name in consumers[frontier.pop()]:
                if name not in path and name not in self.hidden:
                    path.add(name)
                    frontier.append(name)
        return origin, path

    # ----- the Digraph ------------------------------------------------------------------

    def dot(self, state, *, legend=True, title=None, rows=None):
        """The Digraph of `state`; `rows` ({unit key: rows}) replaces the labels' rows
        (the step player lays out the widest text each row takes over its frames)."""
        dot = Drawing(
            name="graphnet",
            graph_attr=dict(
                rankdir=self.rankdir,
                fontname=FONT,
                nodesep="0.3",
                ranksep="0.4",
                newrank="true",
                outputorder="edgesfirst",
            ),
            node_attr=dict(fontname=FONT, fontsize="12", margin="0.12,0.05", color=BORDER),
            edge_attr=dict(fontname=FONT, fontsize="11", arrowsize="0.7", fontcolor=TEXT),
        )
        if title:
            dot.attr(label=_title_label(title), labelloc="t", labeljust="l", fontsize="14")
        clusters = defaultdict(list)  # group path -> node statements' (key, attrs)
        for key in self.units.visible():
            attrs = self.node_attrs(key, state)
            attrs["label"] = table(rows[key] if rows else self.node_rows(key, state))
            group = None
            if self.clusters and key not in self.units.blocks:
                group = self.units.group_of(self.units.by_name[key])
            clusters[group].append((dot_id(key), attrs))
        for key, attrs in clusters.pop(None, []):
            dot.node(key, **attrs)
        _emit_clusters(dot, clusters, prefix="")
        for tail, head in self._cluster_stacking():
            dot.edge(dot_id(tail), dot_id(head), style="invis", weight="0")
        for index, edge in enumerate(self.edges):
            attrs = self.edge_attrs(edge, state)
            if rows is not None:
                attrs.pop("label", None)
                attrs.pop("decorate", None)
                if rows[("edge", index)]:
                    attrs.update(label=rows[("edge", index)], decorate="true")
            dot.edge(dot_id(edge.tail), dot_id(edge.head), id=f"e{index}", **attrs)
        if legend:
            # Dot packs disconnected parts side by side; an invisible edge from each unit
            # that feeds no other puts the legend in the rank after the outputs instead.
            tails = {edge.tail for edge in self.edges}
            for key in self.units.visible():
                if key not in tails:
                    dot.edge(dot_id(key), "legend", style="invis")
            with dot.subgraph(name="legend") as box:
                box.attr(rank="sink")
                box.node(
                    "legend",
                    id="legend",
                    shape="box",
                    style="rounded",
                    color="#bbbbbb",
                    fontsize="11",
                    label=self.legend(state),
                )
        dot.flags = state.flags
        return dot

    def _cluster_stacking(self):
        """(data input, parameter) pairs to rank one after the other: dot would put a
        layer's weights beside the previous layer's output, so that the two layers'
        clusters share a rank and the next cluster has to move aside (a staircase)."""
        if not self.clusters:
            return []
        units, pairs = self.units, []
        for node in units.nodes:
            if node.gate is None or units.unit[node.name] != node.name:
                continue
            group = units.group_of(node)
            sources = [
                i
                for i in node.inputs
                if i.kind in ("param", "const")
                and units.unit.get(i.name) == i.name
                and units.group_of(i) == group
            ]
            feeds = [
                units.unit[i.name]
                for i in node.inputs
                if i.name in units.unit
                and (i.kind == "input" or i.gate is not None)
                and (units.unit[i.name] in units.blocks or units.group_of(i) != group)
            ]
            pairs += [(feed, source.name) for feed in feeds for source in sources]
        return pairs

    # ----- nodes ------------------------------------------------------------------------

    def role(self, key):
        if key in self.units.blocks:
            return "block"
        node = self.units.by_name[key]
        if node.name in self.not_run:
            return "not_run"
        if node.gate is None:
            return node.kind
        loss = node.op.endswith("_loss") or (id(node) in self.sinks and node.shape == ())
        return "loss" if loss else "gate"

    def node_rows(self, key, state):
        if key in self.units.blocks:
            return self._block_rows(key, state)
        node, view, options = self.units.by_name[key], state.view, self.options
        rows = [
            Row("name", node.name, size=13, bold=True),
            Row("op", f"{gate_text(node)} · {shape_text(node.shape)}", MUTED, 11),
        ]
        if node.name in self.not_run:
            return rows + [Row("status", "not run in the last forward", MUTED, 11)]
        if options["values"]:
            rows += self._quantity_rows(
                "value", view.values.get(node.name), VALUE, state, node.shape == ()
            )
        if options["grads"] and (node.requires_grad or node.name in view.grads):
            rows += self._quantity_rows(
                "grad", view.grads.get(node.name), GRAD, state, node.shape == ()
            )
        if options["show_cache"] and node.gate is not None and node.value is not None:
            lines = node.gate.summarize_cache(node.cache, [i.name for i in node.inputs])
            rows += [Row(f"cache{i}", line, "#555599", 10) for i, line in enumerate(lines)]
        if self.overlay and node.name in self.overlay.cells:
            rows.append(Row("overlay", self.overlay.cells[node.name][1], TEXT, 11, True))
        origin, _ = state.anomaly
        flag = state.flags.get(node.name)
        if node.name == origin:
            rows.append(Row("flag", "⚠ the first NaN/Inf", ANOMALY, 11, True))
        elif flag:
            rows.append(Row("flag", f"⚠ {flag} gradient", FLAG_COLORS[flag], 11, True))
        return rows

    def _block_rows(self, key, state):
        """A collapsed block: its size and ops, its output's value and gradient, the range
        of gradient norms inside, and how many of its nodes are flagged."""
        title, members = self.units.blocks[key]
        view, output = state.view, members[-1]
        ops = Counter(n.op for n in members if n.gate is not None)
        sources = Counter(n.kind for n in members if n.gate is None)
        rows = [
            Row("name", title, size=13, bold=True),
            Row(
                "op",
                f"{len(members)} nodes: "
                + ", ".join(
                    f"{count} {op}" for op, count in itertools.chain(ops.items(), sources.items())
                ),
                MUTED,
                11,
            ),
            Row(
                "range",
                f"{members[0].name} … {output.name} · {shape_text(output.shape)}",
                MUTED,
                11,
            ),
        ]
        if self.options["values"]:
            rows += self._quantity_rows(
                "value", view.values.get(output.name), VALUE, state, output.shape == ()
            )
        grads = [view.grads[n.name] for n in members if n.name in view.grads]
        if self.options["grads"] and (grads or "grad" in view.pending):
            rows += self._quantity_rows(
                "grad", view.grads.get(output.name), GRAD, state, output.shape == ()
            )
            sizes = [state.measure(g).size for g in grads]
            inside = f"{num(min(sizes))} … {num(max(sizes))}" if sizes else "?"
            rows.append(Row("inside", f"grad L2 inside: {inside}", GRAD, 11))
        flagged = Counter(state.flags[n.name] for n in members if n.name in state.flags)
        if flagged:
            worst = flagged.most_common(1)[0][0]
            rows.append(
                Row(
                    "flag",
                    "⚠ " + ", ".join(f"{c} {f}" for f, c in flagged.items()),
                    FLAG_COLORS[worst],
                    11,
                    True,
                )
            )
        return rows

    def _quantity_rows(self, what, value, color, state, scalar_shape):
        """'value -12' for a scalar; for a tensor its L2 norm (or, with detail='full', its
        statistics on two rows), for integers what they hold ('2 of 6 set' for a mask,
        'ints 0 to 9' for labels); '?' for a quantity a step frame has not reached yet."""
        if value is None:
            if what not in state.view.pending:
                return []
            return [Row(what, f"{what} ?", PENDING, 13 if scalar_shape else 12, True)]
        summary = state.measure(value)
        if summary.scalar:
            return [Row(what, f"{what} {num(summary.value)}", color, 13, True)]
        if summary.empty:
            return [Row(what, f"{what} empty", color)]
        numbers = dict(summary.stats)
        if summary.integers:  # a norm of labels or of a mask means nothing
            low, high = int(numbers["min"]), int(numbers["max"])
            held = (
                f"{summary.nonzero} of {math.prod(summary.shape)} set"
                if 0 <= low and high <= 1
                else f"ints {low} to {high}"
            )
            return [Row(what, f"{what} {held}", color, 12, True)]
        if self.options["detail"] == "compact":
            return [Row(what, f"{what} L2 {num(summary.size)}", color, 12, True)]
        return [
            Row(what, f"{what} mean {num(numbers['mean'])}  std {num(numbers['std'])}", color),
            Row(
                what + "2",
                f"min {num(numbers['min'])}  max {num(numbers['max'])}  L2 {num(numbers['L2'])}",
                color,
            ),
        ]

    def node_attrs(self, key, state):
        role = self.role(key)
        attrs = dict(STYLES[role], id=dot_id(key))
        if role not in ("param", "const"):
            attrs["group"] = "main"  # dot keeps edges within a group straight
        members = self.units.members(key)
        names = {n.name for n in members}
        if self.overlay and members[-1].name in self.overlay.cells:
            attrs["fillcolor"] = self.overlay.cells[members[-1].name][0]
        flagged = [state.flags[n] for n in names if n in state.flags]
        if flagged:
            attrs.update(color=FLAG_COLORS[Counter(flagged).most_common(1)[0][0]], penwidth="3")
        origin, path = state.anomaly
        if names & path:
            attrs.update(color=ANOMALY, penwidth="4" if origin in names else "2.5")
        if state.view.active in names:
            attrs.update(fillcolor=ACTIVE_FILL, penwidth=attrs.get("penwidth", "2"))
        if key in self.units.blocks:
            title = self.units.blocks[key][0]
            attrs["tooltip"] = (
                f"{title}: "
                + ", ".join(n.name for n in members[:20])
                + (" …" if len(members) > 20 else "")
            )
        else:
            attrs["tooltip"] = tooltip(members[0], state.view, state.measure)
        return attrs

    # ----- edges ------------------------------------------------------------------------

    def _edges(self):
        """Graph edges between drawn units. Edges into or out of a collapsed block merge
        into one edge per pair of units; edges between single nodes stay one per input
        position (multiply(x, x) has two)."""
        units, merged = self.units, {}
        for node in units.nodes:
            head = units.unit[node.name]
            for position, inp in enumerate(node.inputs):
                if inp.name not in units.unit:
                    continue
                tail = units.unit[inp.name]
                if tail == head:
                    continue
                key = (
                    (tail, head)
                    if tail in units.blocks or head in units.blocks
                    else (tail, head, position)
                )
                edge = merged.get(key)
                if edge is None:
                    main = tail in units.blocks or inp.kind == "input" or inp.gate is not None
                    edge = merged[key] = Edge(tail, head, [], main, len(merged))
                edge.carried.append((node.name, position))
        return list(merged.values())

    def edge_label(self, edge, state):
        """'← -4' for a scalar gradient, '← L2 0.36' for a tensor's; None without one."""
        value = state.edge_values[edge.index]
        if value is None:
            return None
        text = num(value) if edge.signed(state.view) else f"L2 {num(value)}"
        if len(edge.carried) > 1:
            text += f" ({len(edge.carried)} edges)"
        return f"{self.arrow} {text}"

    def edge_attrs(self, edge, state):
        # The data path weighs more, so it runs straight and parameters sit beside it.
        attrs = dict(weight="4" if edge.main else "1")
        value = state.edge_values[edge.index]
        if value is None:
            attrs.update(color="#9a9a9a", penwidth="1")
        else:
            # decorate: a line from the label to its edge, so no label is pinned on the
            # wrong one where edges meet.
            attrs.update(
                color=state.scale.color(value),
                penwidth=str(state.scale.width(value)),
                label=self.edge_label(edge, state),
                decorate="true",
            )
        heads = {c for c, _ in edge.carried}
        origin, path = state.anomaly
        tails = {n.name for n in self.units.members(edge.tail)}
        if heads & path and tails & path:
            attrs.update(color=ANOMALY, penwidth=str(max(float(attrs["penwidth"]), 3.0)))
        if any(c in state.view.active_edges for c in edge.carried):
            attrs.update(penwidth=str(max(float(attrs["penwidth"]), 3.0)), style="bold")
        return attrs

    # ----- the legend -------------------------------------------------------------------

    def legend(self, state):
        """One table node explaining every channel the drawing uses."""

        def row(text):
            return f'<TR><TD COLSPAN="2" ALIGN="LEFT" BALIGN="LEFT">{text}</TD></TR>'

        def swatch(fill, text, border=BORDER, width=2):
            return (
                f'<TR><TD BGCOLOR="{fill}" BORDER="{width}" COLOR="{border}" WIDTH="34">'
                f' </TD><TD ALIGN="LEFT">{text}</TD></TR>'
            )

        rows = ['<TR><TD COLSPAN="2"><B>legend</B></TD></TR>']
        roles = {self.role(key) for key in self.units.visible()}
        for role in ("input", "param", "const", "gate", "loss", "block", "not_run"):
            if role in roles and not self.overlay:
                rows.append(swatch(STYLES[role]["fillcolor"], ROLE_NAMES[role], width=1))
        for colour, text in self.overlay.legend if self.overlay else []:
            text = _escape(text).replace("\n", "<BR/>")
            rows.append(row(text) if colour is None else swatch(colour, text, width=1))
        if self.options["values"]:
            rows.append(row(f'<FONT COLOR="{VALUE}">value</FONT>: what the forward computed'))
        if self.options["grads"]:
            rows.append(row(f'<FONT COLOR="{GRAD}">grad</FONT>: d loss / d node (backward)'))
        if not all(is_scalar(v) for v in state.view.values.values()):
            rows.append(
                row("L2: a tensor's norm, √(sum of squares);<BR/>its statistics are in the tooltip")
            )
        scale = state.scale
        if state.flowing:
            rows.append(
                row(
                    f"edge {self.arrow}: the gradient sent back along it;<BR/>"
                    "width: its size, on a log scale"
                    + ("<BR/>colour: its sign" if scale.signed else "")
                )
            )
            samples = scale.samples()
            if scale.signed:  # both ends of the scale, for each sign
                ends = [samples[0], samples[-1]] if len(samples) > 1 else samples
                samples = [-m for m in reversed(ends)] + ends
            for sample in samples:
                height = max(round(scale.width(sample)), 1)
                rows.append(
                    f'<TR><TD FIXEDSIZE="TRUE" WIDTH="34" HEIGHT="{height}" '
                    f'CELLPADDING="0" BGCOLOR="{scale.color(sample)}"></TD>'
                    f'<TD ALIGN="LEFT">{"" if scale.signed else "L2 "}{num(sample)}'
                    f"</TD></TR>"
                )
        if self.options["grads"]:
            flagged = f" ({len(state.flags)} flagged)" if state.flags else ""
            vanishing, exploding = self.options["vanishing"], self.options["exploding"]
            rows.append(row(f"border: a warning on the gradient{flagged}"))
            rows.append(
                swatch(
                    "#ffffff", f"vanishing: L2 &lt; {num(vanishing)}", FLAG_COLORS["vanishing"], 3
                )
            )
            rows.append(
                swatch(
                    "#ffffff", f"exploding: L2 &gt; {num(exploding)}", FLAG_COLORS["exploding"], 3
                )
            )
        origin, _ = state.anomaly
        if origin is not None:
            rows.append(
                swatch("#ffffff", "the first NaN/Inf and its<BR/>path to the loss", ANOMALY, 4)
            )
        if state.view.active is not None:
            rows.append(swatch(ACTIVE_FILL, "the gate of this step", width=1))
        if self.hidden:
            rows.append(
                row(
                    f"{len(self.hidden)} nodes the last forward did not run<BR/>"
                    "are not drawn (show_not_run=True)"
                )
            )
        return (
            '<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="2">'
            + "".join(rows)
            + "</TABLE>>"
        )

    # ----- size -------------------------------------------------------------------------

    def _too_big(self, units, state):
        """Whether dot's layout of `units` would be longer than MAX_SIDE_PT on a side:
        ranks from the longest path (sources sit just before their first consumer),
        each as tall as its tallest unit, as wide as its units side by side."""
        keys = units.visible()
        inputs = defaultdict(set)
        # Ranks by node, in topological order; an edge inside a unit adds no rank (a
        # block's members may come before and after one of its inputs).
        node_rank, rank = {}, defaultdict(int)
        for node in units.nodes:
            head = units.unit[node.name]
            tails = [i for i in node.inputs if i.name in units.unit]
            inputs[head].update(units.unit[i.name] for i in tails if units.unit[i.name] != head)
            node_rank[node.name] = max(
                (node_rank[i.name] + (units.unit[i.name] != head) for i in tails), default=0
            )
            rank[head] = max(rank[head], node_rank[node.name])
        consumers = defaultdict(list)
        for key in keys:
            for tail in inputs[key]:
                consumers[tail].append(rank[key])
        for key in keys:
            if not inputs[key] and consumers[key]:
                rank[key] = min(consumers[key]) - 1
        along, across = defaultdict(float), defaultdict(float)
        for key in keys:
            rows = self.node_rows(key, state)
            height = 16.0 * len(rows) + 14
            width = 7.0 * max(len(r.text) for r in rows) + 24
            if self.rankdir in ("LR", "RL"):
                height, width = width, height
            along[rank[key]] = max(along[rank[key]], height)
            across[rank[key]] += width + 22
        # An edge across several ranks takes room in each (dot routes it through virtual
        # nodes), and its label takes room in the middle one.
        label_width = 80.0 if state.flowing else 0.0
        for head in keys:
            for tail in inputs[head]:
                low, high = sorted((rank[tail], rank[head]))
                for between in range(low + 1, high):
                    across[between] += 25.0
                across[(low + high) // 2] += label_width
        label_gap = 30.0 if state.flowing else 0.0
        length = sum(along.values()) + (29 + label_gap) * max(len(along) - 1, 0)
        return max(length, max(across.values(), default=0.0)) > MAX_SIDE_PT


def first_nonfinite(nodes, view, measure):
    """The node where NaN/Inf started: the first (topologically) whose value is not
    finite while its inputs' are; else, the backward having met it, the last whose
    gradient is not finite (the backward walks in reverse); None if all is finite."""

    def bad(array):
        return array is not None and (measure(array).nan or measure(array).inf)

    for node in nodes:
        if bad(view.values.get(node.name)) and not any(
            bad(view.values.get(i.name)) for i in node.inputs
        ):
            return node.name
    for node in reversed(nodes):
        if bad(view.grads.get(node.name)):
            return node.name
    return None


def gate_text(node):
    if node.gate is None:
        return node.kind
    attrs = ", ".join(f"{k}={v}" for k, v in node.gate.attrs().items() if v is not None)
    return f"{node.op} ({attrs})" if attrs else node.op


def node_help(node):
    """The gate's formula and local rule with this node's names filled in ({} for a
    source)."""
    if node.gate is None:
        return {}
    gate_cls, names, attrs = type(node.gate), [i.name for i in node.inputs], node.gate.attrs()
    return {
        "formula": f"{node.name} = "
        + fill(formula_of(gate_cls, len(names)), names, node.name, attrs),
        "rule": fill(rule_of(gate_cls), names, node.name, attrs),
    }


def tooltip(node, view, measure):
    """The node in full: gate, formula, local rule, shape, dtype, its value's and
    gradient's statistics, and what its gate saved for backward."""
    parts = [
        f"{node.name}: {gate_text(node)}, shape {shape_text(node.shape)}"
        + (f", {node.dtype}" if node.dtype is not None else "")
    ]
    parts += [f"{key}: {text}" for key, text in node_help(node).items()]
    for what, store in (("value", view.values), ("grad", view.grads)):
        if node.name in store:
            parts.append(f"{what}: {measure(store[node.name]).describe()}")
    store = node.graph.store
    cache = None if store.is_deferred("cache", node.index) else store.caches[node.index]
    if node.gate is not None and cache is not None:
        lines = node.gate.summarize_cache(cache, [i.name for i in node.inputs])
        parts += [f"cache: {line}" for line in lines]
    return "\n".join(parts)


def _emit_clusters(parent, clusters, prefix):
    """Nested clusters for groups 'a', 'a/b', ...: each path becomes a cluster in its
    parent's cluster, so scopes read as boxes inside boxes."""
    children = sorted(
        {path[len(prefix) :].split("/")[0] for path in clusters if path.startswith(prefix)}
    )
    for child in children:
        path = prefix + child
        with parent.subgraph(name="cluster_" + dot_id(path)) as cluster:
            cluster.attr(
                label=child,
                labeljust="l",
                style="rounded,dashed",
                color="#aaaaaa",
                fontcolor="#444444",
                fontsize="13",
            )
            for key, attrs in clusters.get(path, []):
                cluster.node(key, **attrs)
            _emit_clusters(cluster, clusters, path + "/")


def dot_id(key):
    # Names may hold ':' (graphviz's port separator) or quotes; ids stay plain.
    return "n_" + "".join(c if c.isalnum() else f"_{ord(c):x}_" for c in key)


def table(rows):
    """An HTML-like label, one table row per Row, one font per row (so an SVG holds one
    text element per row, which the step player rewrites frame by frame)."""
    cells = []
    for row in rows:
        text = _escape(row.text)
        if row.bold:
            text = f"<B>{text}</B>"
        cells.append(
            f'<TR><TD><FONT POINT-SIZE="{row.size}" COLOR="{row.color}">{text}</FONT></TD></TR>'
        )
    return (
        '<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'
        + "".join(cells)
        + "</TABLE>>"
    )


def _escape(text):
    return html.escape(str(text), quote=True)


def _title_label(title):
    lines = "".join(f'{_escape(line)}<BR ALIGN="LEFT"/>' for line in str(title).splitlines())
    return f'<<FONT POINT-SIZE="14">{lines}</FONT>>'
