"""draw(graph) -> graphviz.Digraph: the graph with values, gradients and gradient flow.

A node shows its gate, name and shape; after forward its value (green) and after
backward its gradient (red): exact numbers for scalars, statistics for tensors. An edge
shows the gradient its consumer sent back along it (not the input's total, which also
holds what other consumers sent), its width and colour on one log scale for the whole
drawing. Nodes whose gradient vanishes, explodes or is NaN/Inf get a coloured border.

Large graphs stay readable: named scopes ('layer1/fc') become clusters, and past
`max_nodes` scopes and runs of repeated blocks collapse into one node each.
"""
import dataclasses
import html
import itertools
import math
from typing import Optional
from collections import Counter, defaultdict

import numpy as np

from .._format import describe, is_scalar, magnitude, norm, num, scalar, shape_text, stats
from ..core.graph import Graph
from .render import Drawing
from .scale import GradientScale, mix

FONT = "Helvetica,Arial,sans-serif"
VALUE_COLOR, GRAD_COLOR, MUTED = "#1a7f37", "#c0392b", "#777777"
ACTIVE_COLOR = "#ff8c00"
HEAT_LOW, HEAT_HIGH = "#fff7ec", "#fc8d59"

#: Node style per role: sources, gates, the loss (or the output a backward starts from)
#: and collapsed blocks each look different, so a drawing reads without its legend.
STYLES = {
    "input": dict(shape="box", style="filled,diagonals", fillcolor="#dbe9f6", color="#4a7fb5"),
    "param": dict(shape="box", style="filled", fillcolor="#fff2cc", color="#b8860b"),
    "const": dict(shape="ellipse", style="filled,dashed", fillcolor="#f0f0f0", color="#999999",
                  margin="0.02,0.02"),
    "gate": dict(shape="box", style="rounded,filled", fillcolor="#ffffff", color="#555555"),
    "loss": dict(shape="box", style="rounded,filled", fillcolor="#fde0dd", color="#c51b7d"),
    "block": dict(shape="box3d", style="filled", fillcolor="#efe6f7", color="#6a3d9a"),
}
ROLE_NAMES = {"input": "input", "param": "parameter", "const": "constant",
              "gate": "gate (activation)", "loss": "loss / output", "block": "collapsed block"}
FLAG_COLORS = {"vanishing": "#e08214", "exploding": "#d7191c", "NaN": "#7b2cbf",
               "Inf": "#7b2cbf"}


def gradient_flag(grad, vanishing=1e-6, exploding=1e3):
    """'NaN', 'Inf', 'vanishing' (0 < L2 norm < vanishing), 'exploding' (L2 norm >
    exploding) or None. An exact zero is not flagged: a max gate or a relu blocks a
    gradient on purpose, and a circuit shows that as 0."""
    if grad is None:
        return None
    array = np.asarray(grad)
    if np.isnan(array).any():
        return "NaN"
    if np.isinf(array).any():
        return "Inf"
    size = norm(array)
    if 0 < size < vanishing:
        return "vanishing"
    if size > exploding:
        return "exploding"
    return None


def edge_gradients(graph):
    """(consumer name, input position) -> the gradient that consumer sent to that input
    in the last backward (Graph.edge_gradients)."""
    return graph.edge_gradients()


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
    pending: bool = False
    #: Gradients the edge scale spans, if not the ones drawn: the frames of one walk
    #: share the last frame's scale, so an edge's width does not change between steps.
    scale_grads: Optional[list] = None

    @classmethod
    def of(cls, graph):
        nodes = graph.nodes
        return cls(values={n.name: n.value for n in nodes if n.value is not None},
                   grads={n.name: n.grad for n in nodes if n.grad is not None},
                   edge_grads=graph.edge_gradients())


def draw(graph, *, values=True, grads=True, show_cache=False, group_by="scope",
         collapse="auto", max_nodes=120, vanishing=1e-6, exploding=1e3, legend=True,
         rankdir=None, title=None, view=None, heat=None, heat_unit=""):
    """A graphviz.Digraph of `graph` (see the module docstring for what it shows).

    values, grads: show node values and gradients (and gradients on edges).
    show_cache: also summarize what each gate saved for backward (masks, batchnorm stats).
    group_by: 'scope' (the part of a name before its last '/'), None, or a function
        node -> group name or None. Groups are drawn as clusters; '/' nests them.
    collapse: 'auto' (collapse only past `max_nodes` nodes: scopes first, then runs of
        repeated blocks, then consecutive stretches), 'groups' (every group becomes one
        node), True (every group and every run of repeats), False, or a collection of
        group names to collapse.
    vanishing, exploding: L2-norm thresholds of the gradient flags.
    rankdir: 'LR' (left to right, the default for scalar circuits) or 'TB' (top to
        bottom, the default for tensor graphs, whose labels are wide).
    title: a text drawn above the graph (several lines allowed).
    view: a View to draw instead of the graph's current state (step frames pass one).
    heat: {node name: number} to fill nodes by (darker = larger), e.g. a profile's
        milliseconds; heat_unit names its unit in the labels.

    The result has `.flags`, {node name: 'vanishing' | 'exploding' | 'NaN' | 'Inf'}.
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"draw() takes a graphnet Graph, got {type(graph).__name__}; for a "
                        "model pass model.graph")
    nodes = graph.nodes
    view = View.of(graph) if view is None else view
    rankdir = rankdir or _auto_rankdir(view)
    # The arrow points the way the gradient flows: against the edge, from consumer to input.
    arrow = {"LR": "←", "RL": "→", "TB": "↑", "BT": "↓"}[rankdir]
    units = _Units(nodes, _grouping(group_by))
    units.collapse(collapse, max_nodes)
    flags = {}
    if grads:
        flags = {name: flag for name, grad in view.grads.items()
                 if (flag := gradient_flag(grad, vanishing, exploding))}
    edges = _edges(nodes, units, view if grads else dataclasses.replace(view, edge_grads={}))
    flowing = [e for e in edges if e.value is not None]
    if view.scale_grads is None:
        scale = GradientScale([e.value for e in flowing], signed=all(e.signed for e in flowing))
    else:
        scale = GradientScale(view.scale_grads, signed=all(is_scalar(g) for g in view.scale_grads)
                              and all(e.signed for e in flowing))
    sinks = set(map(id, graph.sinks))

    dot = Drawing(name="graphnet", graph_attr=dict(
        rankdir=rankdir, fontname=FONT, nodesep="0.25", ranksep="0.45", newrank="true"),
        node_attr=dict(fontname=FONT, fontsize="12", margin="0.12,0.06"),
        edge_attr=dict(fontname=FONT, fontsize="11", arrowsize="0.7"))
    if title:
        dot.attr(label=_title_label(title), labelloc="t", labeljust="l", fontsize="14")
    label_options = dict(values=values, grads=grads, show_cache=show_cache, flags=flags,
                         heat=heat or {}, heat_unit=heat_unit,
                         heat_max=max((heat or {}).values(), default=0.0))
    _emit_units(dot, units, view, sinks, label_options, with_clusters=group_by is not None)
    for edge in edges:
        dot.edge(edge.tail, edge.head, **_edge_attrs(edge, scale, view, arrow))
    if legend:
        roles = {units.role(key, sinks) for key in units.visible()}
        # Dot packs disconnected parts side by side; an invisible edge from each sink puts
        # the legend in the rank after the outputs instead.
        for sink in graph.sinks:
            dot.edge(_dot_id(units.unit[sink.name]), "legend", style="invis")
        _legend(dot, roles, scale if flowing else None, flags, vanishing, exploding,
                active=view.active is not None, arrow=arrow)
    dot.flags = flags
    return dot


def _auto_rankdir(view):
    return "LR" if all(is_scalar(v) for v in view.values.values()) else "TB"


# ----- grouping and collapsing ---------------------------------------------------------

def _grouping(group_by):
    if group_by is None:
        return lambda node: None
    if group_by == "scope":
        return lambda node: node.name.rsplit("/", 1)[0] if "/" in node.name else None
    if callable(group_by):
        return group_by
    raise ValueError(f"group_by must be 'scope', None or a function node -> group name, "
                     f"got {group_by!r}")


class _Units:
    """Which drawn unit each node belongs to: itself, or a collapsed block. Keys are
    node names for single nodes and 'block:<n>' for blocks."""

    RUN_PERIODS, MIN_REPEATS = range(1, 9), 3

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
                self.consumers[inp.name].append(node)

    def visible(self):
        return list(dict.fromkeys(self.unit[n.name] for n in self.nodes))

    def members(self, key):
        return self.blocks[key][1] if key in self.blocks else [self.by_name[key]]

    def role(self, key, sinks):
        return "block" if key in self.blocks else _role(self.by_name[key], sinks)

    def collapse(self, how, max_nodes):
        if isinstance(how, str) and how not in ("auto", "groups"):
            raise ValueError(f"collapse must be 'auto', 'groups', True, False or a collection "
                             f"of group names, got {how!r}")
        if how is False or (how == "auto" and len(self.nodes) <= max_nodes):
            return
        if how is True or how in ("auto", "groups"):
            self._collapse_groups(lambda group: True)
        else:
            wanted = set(how)
            self._collapse_groups(lambda group: group in wanted)
            return
        if how is True or (how == "auto" and len(self.visible()) > max_nodes):
            self._collapse_runs()
        if how == "auto" and len(self.visible()) > max_nodes:
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

    def _absorb_sources(self):
        """A param or const used only inside one block belongs to it (a layer's weights)."""
        absorbed = defaultdict(list)
        for node in self.nodes:
            if node.kind in ("param", "const") and self.unit[node.name] == node.name:
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

    def _collapse_runs(self):
        """Collapse each run of >= MIN_REPEATS consecutive repeats of one pattern of
        units (same gate ops in the same order) into one block: 10,000 tanh gates in a
        chain, or layer1 ... layer50 of the same layer."""
        sequence = [k for k in self.visible() if self._signature(k)]
        signatures = [self._signature(k) for k in sequence]
        start = 0
        while start < len(sequence):
            period, repeats = self._longest_run(signatures, start)
            if repeats >= self.MIN_REPEATS:
                keys = sequence[start:start + period * repeats]
                members = [n for k in keys for n in self.members(k)]
                ops = " → ".join(op for s in signatures[start:start + period] for op in s)
                title = f"{repeats} × [{ops}]"
                for key in keys:
                    self.blocks.pop(key, None)
                self._new_block(title, members)
                start += period * repeats
            else:
                start += 1
        self._absorb_sources()

    def _longest_run(self, signatures, start):
        best = (1, 1)
        for period in self.RUN_PERIODS:
            pattern = signatures[start:start + period]
            if len(pattern) < period:
                break
            repeats = 1
            while signatures[start + repeats * period:start + (repeats + 1) * period] == pattern:
                repeats += 1
            if repeats >= self.MIN_REPEATS and period * repeats > best[0] * best[1]:
                best = (period, repeats)
        return best

    def _collapse_stretches(self, max_nodes):
        """Last resort for a large graph without scopes or repeats: consecutive stretches
        of the topological order, so the drawing never exceeds about max_nodes units."""
        keys = self.visible()
        size = math.ceil(len(keys) / max(max_nodes // 2, 1))
        for index in range(0, len(keys), size):
            chunk = keys[index:index + size]
            members = [n for k in chunk for n in self.members(k)]
            for key in chunk:
                self.blocks.pop(key, None)
            self._new_block(f"{members[0].name} … {members[-1].name}", members)


def _role(node, sinks):
    if node.gate is None:
        return node.kind
    loss = node.op.endswith("_loss") or (id(node) in sinks and node.shape == ())
    return "loss" if loss else "gate"


# ----- nodes ---------------------------------------------------------------------------

def _emit_units(dot, units, view, sinks, label_options, with_clusters):
    """Every unit as a graphviz node, single nodes inside the clusters of their groups."""
    clusters = defaultdict(list)  # group path -> node statements' (key, attrs)
    for key in units.visible():
        if key in units.blocks:
            attrs = _block_attrs(units.blocks[key], view, label_options)
            group = None
        else:
            node = units.by_name[key]
            attrs = _node_attrs(node, _role(node, sinks), view, label_options)
            group = units.group_of(node) if with_clusters else None
        clusters[group].append((_dot_id(key), attrs))
    for key, attrs in clusters.pop(None, []):
        dot.node(key, **attrs)
    _emit_clusters(dot, clusters, prefix="")


def _emit_clusters(parent, clusters, prefix):
    """Nested clusters for groups 'a', 'a/b', ...: each path becomes a cluster in its
    parent's cluster, so scopes read as boxes inside boxes."""
    children = sorted({path[len(prefix):].split("/")[0] for path in clusters
                       if path.startswith(prefix)})
    for child in children:
        path = prefix + child
        with parent.subgraph(name="cluster_" + _dot_id(path)) as cluster:
            cluster.attr(label=child, labeljust="l", style="rounded,dashed", color="#888888",
                         fontcolor="#444444", fontsize="13")
            for key, attrs in clusters.get(path, []):
                cluster.node(key, **attrs)
            _emit_clusters(cluster, clusters, path + "/")


def _dot_id(key):
    # Names may hold ':' (graphviz's port separator) or quotes; ids stay plain.
    return "n_" + "".join(c if c.isalnum() else f"_{ord(c):x}_" for c in key)


def _node_attrs(node, role, view, options):
    attrs = dict(STYLES[role])
    rows = [_cell(f"<B>{_escape(node.name)}</B>", size=13),
            _cell(f"{_escape(_gate_text(node))} · {shape_text(node.shape)}", color=MUTED, size=11)]
    if options["values"]:
        rows += _quantity_rows("value", view.values.get(node.name), VALUE_COLOR,
                               pending=view.pending)
    if options["grads"] and (node.requires_grad or node.name in view.grads):
        rows += _quantity_rows("grad", view.grads.get(node.name), GRAD_COLOR,
                               pending=view.pending)
    if options["show_cache"] and node.cache is not None:
        lines = node.gate.summarize_cache(node.cache, [i.name for i in node.inputs])
        rows += [_cell(_escape(line), color="#555599", size=10) for line in lines]
    if node.name in options["heat"]:
        amount = options["heat"][node.name]
        rows.append(_cell(f"<B>{num(amount)} {_escape(options['heat_unit'])}</B>", size=11))
        if options["heat_max"] > 0:
            attrs["fillcolor"] = mix(HEAT_LOW, HEAT_HIGH, amount / options["heat_max"])
    flag = options["flags"].get(node.name)
    if flag:
        rows.append(_cell(f"<B>⚠ {flag} gradient</B>", color=FLAG_COLORS[flag], size=11))
        attrs.update(color=FLAG_COLORS[flag], penwidth="3")
    if view.active == node.name:
        attrs.update(color=ACTIVE_COLOR, penwidth="4")
    attrs["label"] = _table(rows)
    attrs["tooltip"] = _tooltip(node, view)
    return attrs


def _block_attrs(block, view, options):
    """A collapsed block: its size and ops, its output's value and gradient, the range of
    gradient norms inside, and how many of its nodes are flagged."""
    title, members = block
    ops = Counter(n.op for n in members if n.gate is not None)
    sources = Counter(n.kind for n in members if n.gate is None)
    output = members[-1]
    rows = [_cell(f"<B>{_escape(title)}</B>", size=13),
            _cell(_escape(f"{len(members)} nodes: " + ", ".join(
                f"{count} {op}" for op, count in itertools.chain(ops.items(), sources.items()))),
                color=MUTED, size=11),
            _cell(_escape(f"{members[0].name} … {output.name} · {shape_text(output.shape)}"),
                  color=MUTED, size=11)]
    if options["values"]:
        rows += _quantity_rows("value", view.values.get(output.name), VALUE_COLOR,
                               pending=view.pending)
    grads = [view.grads[n.name] for n in members if n.name in view.grads]
    if options["grads"] and grads:
        rows += _quantity_rows("grad", view.grads.get(output.name), GRAD_COLOR,
                               pending=view.pending)
        sizes = [magnitude(g) for g in grads]
        rows.append(_cell(f"grad L2 inside: {num(min(sizes))} … {num(max(sizes))}",
                          color=GRAD_COLOR, size=11))
    attrs = dict(STYLES["block"])
    flagged = Counter(options["flags"][n.name] for n in members if n.name in options["flags"])
    if flagged:
        worst = flagged.most_common(1)[0][0]
        rows.append(_cell("<B>⚠ " + ", ".join(f"{c} {f}" for f, c in flagged.items()) + "</B>",
                          color=FLAG_COLORS[worst], size=11))
        attrs.update(color=FLAG_COLORS[worst], penwidth="3")
    if view.active in {n.name for n in members}:
        attrs.update(color=ACTIVE_COLOR, penwidth="4")
    attrs["label"] = _table(rows)
    attrs["tooltip"] = f"{title}: " + ", ".join(n.name for n in members[:20]) + (
        " …" if len(members) > 20 else "")
    return attrs


def _gate_text(node):
    if node.gate is None:
        return node.kind
    attrs = ", ".join(f"{k}={v}" for k, v in node.gate.attrs().items() if v is not None)
    return f"{node.op} ({attrs})" if attrs else node.op


def _quantity_rows(what, value, color, pending):
    """'value -12' for a scalar; for a tensor its statistics on two lines; '?' for a
    quantity a step frame has not reached yet."""
    if value is None:
        return [_cell(f"{what} ?", color="#aaaaaa")] if pending else []
    if is_scalar(value):
        return [_cell(f"{what} <B>{num(scalar(value))}</B>", color=color, size=13)]
    numbers = dict(stats(value))
    if "empty" in numbers:
        return [_cell(f"{what} empty", color=color)]
    return [_cell(f"{what} mean {num(numbers['mean'])}  std {num(numbers['std'])}", color=color),
            _cell(f"min {num(numbers['min'])}  max {num(numbers['max'])}  "
                  f"<B>L2 {num(numbers['L2'])}</B>", color=color)]


def _cell(content, color=None, size=12):
    text = f'<FONT POINT-SIZE="{size}"' + (f' COLOR="{color}"' if color else "") + \
        f">{content}</FONT>"
    return f"<TR><TD>{text}</TD></TR>"


def _table(rows):
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'
            + "".join(rows) + "</TABLE>>")


def _escape(text):
    return html.escape(str(text), quote=True)


def _tooltip(node, view):
    parts = [f"{node.name}: {_gate_text(node)}, shape {shape_text(node.shape)}"]
    for what, store in (("value", view.values), ("grad", view.grads)):
        if node.name in store:
            parts.append(f"{what}: {describe(store[node.name])}")
    return "\n".join(parts)


def _title_label(title):
    lines = "".join(f'{_escape(line)}<BR ALIGN="LEFT"/>' for line in str(title).splitlines())
    return f'<<FONT POINT-SIZE="14">{lines}</FONT>>'


# ----- edges ---------------------------------------------------------------------------

@dataclasses.dataclass
class _Edge:
    tail: str
    head: str
    carried: list  # (consumer name, input position) of the graph edges drawn as this one
    grads: list    # the gradients sent along them (None where none flowed)

    @property
    def value(self):
        """The gradient to show: the one gradient, or the L2 norm of several together."""
        known = [g for g in self.grads if g is not None]
        if not known:
            return None
        if len(self.grads) == 1:
            return known[0]
        return math.sqrt(sum(norm(g) ** 2 for g in known))

    @property
    def signed(self):
        return len(self.grads) == 1 and is_scalar(self.grads[0])


def _edges(nodes, units, view):
    """Graph edges between drawn units. Edges into or out of a collapsed block merge
    into one edge per pair of units; edges between single nodes stay one per input
    position (multiply(x, x) has two)."""
    merged = {}
    for node in nodes:
        head = units.unit[node.name]
        for position, inp in enumerate(node.inputs):
            tail = units.unit[inp.name]
            if tail == head:
                continue
            key = (tail, head) if tail in units.blocks or head in units.blocks \
                else (tail, head, position)
            edge = merged.get(key)
            if edge is None:
                edge = merged[key] = _Edge(_dot_id(tail), _dot_id(head), [], [])
            edge.carried.append((node.name, position))
            edge.grads.append(view.edge_grads.get((node.name, position)))
    return list(merged.values())


def _edge_attrs(edge, scale, view, arrow):
    active = any(c in view.active_edges for c in edge.carried)
    value = edge.value
    if value is None:
        attrs = dict(color="#9a9a9a", penwidth="1")
    else:
        text = num(scalar(value)) if edge.signed else f"L2 {num(magnitude(value))}"
        if len(edge.grads) > 1:
            text += f" ({len(edge.grads)} edges)"
        # A white box under the text, so a thick edge running through it stays readable.
        label = (f'<<TABLE BORDER="0" CELLPADDING="1" BGCOLOR="white"><TR><TD>'
                 f'<FONT COLOR="{scale.text_color(value)}">{arrow} {_escape(text)}</FONT>'
                 f'</TD></TR></TABLE>>')
        attrs = dict(color=scale.color(value), penwidth=str(scale.width(value)), label=label)
    if active:
        attrs.update(color=ACTIVE_COLOR, penwidth=str(max(float(attrs["penwidth"]), 3.0)))
    return attrs


# ----- legend --------------------------------------------------------------------------

def _legend(dot, roles, scale, flags, vanishing, exploding, active, arrow):
    """One table node, right of the graph: the node roles present, the value/gradient
    colours, the flag borders, and bars as thick and coloured as edges carrying sample
    gradients on this drawing's scale."""
    def row(text):
        return f'<TR><TD COLSPAN="2" ALIGN="LEFT" BALIGN="LEFT">{text}</TD></TR>'

    rows = ['<TR><TD COLSPAN="2"><B>legend</B></TD></TR>']
    for role in ("input", "param", "const", "gate", "loss", "block"):
        if role in roles:
            style = STYLES[role]
            rows.append(f'<TR><TD BGCOLOR="{style["fillcolor"]}" BORDER="1" '
                        f'COLOR="{style["color"]}" WIDTH="34"> </TD>'
                        f'<TD ALIGN="LEFT">{ROLE_NAMES[role]}</TD></TR>')
    rows.append(row(f'<FONT COLOR="{VALUE_COLOR}">value</FONT>: forward output'))
    rows.append(row(f'<FONT COLOR="{GRAD_COLOR}">grad</FONT>: d output / d node (backward)'))
    if scale is not None:
        rows.append(row(f"edge {arrow}: the gradient sent back along it,<BR/>"
                        "width and colour on a log scale"
                        + ("<BR/>(blue negative, red positive)" if scale.signed else "")))
        samples = scale.samples()
        if scale.signed:  # both ends of the scale, for each sign
            ends = [samples[0], samples[-1]] if len(samples) > 1 else samples
            samples = [-m for m in reversed(ends)] + ends
        for sample in samples:
            height = max(round(scale.width(sample)), 1)
            rows.append(f'<TR><TD FIXEDSIZE="TRUE" WIDTH="34" HEIGHT="{height}" CELLPADDING="0" '
                        f'BGCOLOR="{scale.color(sample)}"></TD><TD ALIGN="LEFT">'
                        f'<FONT COLOR="{scale.text_color(sample)}">'
                        f'{"" if scale.signed else "L2 "}{num(sample)}</FONT></TD></TR>')
        flagged = f" ({len(flags)} flagged)" if flags else ""
        rows.append(row(f"border: gradient L2 norm{flagged}<BR/>"
                        f'<FONT COLOR="{FLAG_COLORS["vanishing"]}">vanishing</FONT> &lt; '
                        f'{num(vanishing)}, <FONT COLOR="{FLAG_COLORS["exploding"]}">exploding'
                        f'</FONT> &gt; {num(exploding)},<BR/>'
                        f'<FONT COLOR="{FLAG_COLORS["NaN"]}">NaN or Inf</FONT>'))
    if active:
        rows.append(row(f'<FONT COLOR="{ACTIVE_COLOR}"><B>orange</B></FONT>: the current step'))
    with dot.subgraph(name="legend") as legend:
        legend.attr(rank="sink")
        legend.node("legend", shape="box", style="rounded", color="#bbbbbb", fontsize="11",
                    label='<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="2">'
                          + "".join(rows) + "</TABLE>>")
