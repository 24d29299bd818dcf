"""One layout for many states of a graph: the step player's frames, the widget's steps
and its live updates.

Graphviz lays the drawing out once, with room in every label for the widest text it
takes in any state; each state is then a patch of texts and styles (label rows, fills,
borders, edge colours and widths, tooltips) that the browser applies to that one SVG.
So the picture never moves between frames: the same nodes sit in the same places, only
what they show changes. The patches are sent as differences from the previous state.
"""

import dataclasses
import re
from typing import Any
from importlib import resources

from .draw import Picture, Row, dot_id
from .render import inline_svg

#: The order of a node's rows; the cache rows ('cache0', ...) come after the gradient.
_SLOTS = ("name", "op", "range", "status", "value", "value2", "grad", "grad2", "inside")
_LATE_SLOTS = ("overlay", "flag")
_NUMERIC_SLOTS = ("value", "value2", "grad", "grad2", "inside", "overlay")
_NUMBER = re.compile(r"(?<![\w.])-?\d[\d.]*(?:e[-+]?\d+)?")
#: The widest text num() writes, to make room for any number a later state may bring.
_WIDEST_NUMBER = "-8.888e-88"
_WIDEST_FLAG = "⚠ exploding gradient"


def _slot_rank(slot):
    if slot in _SLOTS:
        return _SLOTS.index(slot), 0
    if slot.startswith("cache"):
        return len(_SLOTS), int(slot[5:])
    return len(_SLOTS) + 1 + _LATE_SLOTS.index(slot), 0


def static_text(name: str) -> str:
    """A file of graphnet/viz/static/ (the front end, shipped inside the package)."""
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


class Scene:
    """`states` (draw.State objects of one `picture`) on one layout. `svg` is the drawing
    laid out once; `frames` the patches, the first complete, each later one holding what
    changed since the one before. With `reserve`, labels keep room for any number (live
    updates bring numbers nobody has seen yet)."""

    def __init__(self, picture, states, reserve=False):
        self.picture = picture
        self.keys = picture.units.visible()
        patches = [self.patch(state) for state in states]
        self.slots = {}
        layout = {}
        for key in self.keys:
            node = dot_id(key)
            widest = {}
            for patch in patches:
                for row in patch["nodes"][node]["rows"]:
                    text = _reserved(row) if reserve else row.text
                    if len(text) >= len(widest.get(row.slot, ("",))[0]):
                        widest[row.slot] = (text, row)
            if reserve and "grad" in widest and "flag" not in widest:
                # room for a warning a later update may raise
                widest["flag"] = (_WIDEST_FLAG, Row("flag", _WIDEST_FLAG, size=11, bold=True))
            self.slots[node] = sorted(widest, key=_slot_rank)
            layout[key] = [
                dataclasses.replace(widest[slot][1], text=widest[slot][0])
                for slot in self.slots[node]
            ]
        for index in range(len(picture.edges)):
            labels = [p["edges"][f"e{index}"]["label"] for p in patches]
            if reserve:
                labels = [_NUMBER.sub(_WIDEST_NUMBER, text) for text in labels]
            layout[("edge", index)] = max(labels, key=len)
        self.drawing = picture.dot(states[-1], rows=layout)
        self._svg = None
        self.frames = _differences([self._encode(p) for p in patches])

    @property
    def svg(self):
        """The drawing laid out by Graphviz (run on first use)."""
        if self._svg is None:
            self._svg = inline_svg(self.drawing)
        return self._svg

    def unit_id(self, name):
        """The SVG id of the drawn unit that holds node `name` (itself, or its block)."""
        return dot_id(self.picture.units.unit.get(name, name))

    def patch(self, state):
        """What `state` shows, node by node and edge by edge."""
        picture, nodes, edges = self.picture, {}, {}
        for key in self.keys:
            attrs = picture.node_attrs(key, state)
            nodes[dot_id(key)] = dict(
                rows=picture.node_rows(key, state),
                fill=attrs["fillcolor"],
                stroke=attrs.get("color"),
                pen=attrs.get("penwidth", "1"),
                tip=attrs["tooltip"],
            )
        for index, edge in enumerate(picture.edges):
            attrs = picture.edge_attrs(edge, state)
            edges[f"e{index}"] = dict(
                label=picture.edge_label(edge, state) or "",
                color=attrs["color"],
                pen=attrs["penwidth"],
                bold=attrs.get("style") == "bold",
            )
        return {"nodes": nodes, "edges": edges}

    def encode(self, state):
        """A complete patch of `state` as the browser reads it (a live update)."""
        return self._encode(self.patch(state))

    def _encode(self, patch):
        """Rows as [text, colour, bold] in the order of the SVG's text elements."""
        nodes = {}
        for node, item in patch["nodes"].items():
            rows = {row.slot: [row.text, row.color, int(row.bold)] for row in item["rows"]}
            nodes[node] = {
                **item,
                "rows": [rows.get(slot, ["", None, 0]) for slot in self.slots[node]],
            }
        return {"nodes": nodes, "edges": patch["edges"]}


def frames_scene(frames: list, reserve: bool = False, **options: Any) -> "Scene":
    """The Scene of step frames (one walk's, or a forward's followed by a backward's);
    `options` go to the drawing (draw()'s keywords)."""
    views = [frame.view() for frame in frames]
    picture = Picture(frames[0].graph, views[-1], **options)
    return Scene(picture, [picture.state(view) for view in views], reserve)


def _reserved(row):
    if row.slot not in _NUMERIC_SLOTS:
        return row.text
    return _NUMBER.sub(_WIDEST_NUMBER, row.text)


def _differences(patches):
    """The first patch whole, then per patch only the fields that changed."""
    out, before = [], None
    for patch in patches:
        if before is None:
            out.append(patch)
        else:
            out.append(
                {
                    part: {
                        key: changed
                        for key, item in patch[part].items()
                        if (
                            changed := {
                                field: value
                                for field, value in item.items()
                                if before[part][key].get(field) != value
                            }
                        )
                    }
                    for part in ("nodes", "edges")
                }
            )
        before = patch
    return out
