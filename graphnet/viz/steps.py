"""Backprop step by step: one frame per step of a walk.

backward_steps runs the executor's backward, gate by gate, into a scratch copy of the
graph's gradients (the graph's own are untouched) and turns each step its hook reports
into a frame: what the active gate received (the upstream gradient), its local rule, the
chain-rule product each input receives, and the sum where an input already had a gradient
from an earlier step (fan-out). The last frame's gradients are those of
`graph.backward()`. forward_steps does the same for the forward walk's plan, with the
values of the last forward filling in.
"""

import dataclasses
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import numpy as np

from .._format import describe, is_scalar, norm, num, scalar
from ..core.executor import Hook
from ..errors import GraphError
from ..gates.base import fill, formula_of, rule_of
from .draw import View, draw
from .render import to_bytes


def _symbol(name):
    """A name as a symbol in a formula: scoped names in parentheses, d(layer1/W)."""
    return f"({name})" if "/" in name else name


def _fill(template, node):
    return fill(
        template,
        [_symbol(i.name) for i in node.inputs],
        _symbol(node.name),
        node.gate.attrs() if node.gate is not None else None,
    )


@dataclasses.dataclass
class Frame:
    """One step of a walk: the active `node`, an explanation in `text`, and the state
    after the step: `values` and `grads` ({node name: array}) and `edge_grads`
    ({(consumer name, input position): gradient sent along that edge}). `received` holds
    what each input of the active gate got at this step. `draw()` draws the graph in
    that state with the active node and its edges highlighted."""

    step: int
    total: int
    direction: str
    node: Any
    text: str
    values: dict
    grads: dict
    edge_grads: dict
    received: dict
    graph: Any = dataclasses.field(repr=False, default=None)
    scale_grads: Optional[list] = dataclasses.field(repr=False, default=None)

    def view(self) -> View:
        """The graph's state at this step, as draw(view=...) takes it: the values and
        gradients so far, the active gate and its edges highlighted."""
        active_edges = frozenset((self.node.name, i) for i in range(len(self.node.inputs)))
        return View(
            values=self.values,
            grads=self.grads,
            edge_grads=self.edge_grads,
            active=self.node.name,
            active_edges=active_edges,
            pending=frozenset({"value" if self.direction == "forward" else "grad"}),
            scale_grads=self.scale_grads,
        )

    def draw(self, **options: Any) -> Any:
        """draw() of the graph in this frame's state; the title defaults to the text."""
        options.setdefault("title", self.text)
        if self.direction == "forward":
            options.setdefault("grads", False)
        return draw(self.graph, view=self.view(), **options)

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.draw()._repr_mimebundle_(include, exclude)


def forward_steps(graph: Any, node: Any = None) -> List[Frame]:
    """One Frame per gate of the forward walk (towards `node`, or every sink), values
    filling in topologically. Uses the values of the last forward()."""
    steps = graph.plan(node, "forward").steps
    _require_forward([step.node for step in steps])
    gate_names = {step.node.name for step in steps}
    values = {n.name: n.value for n in graph.nodes if n.value is not None and n.gate is None}
    frames = []
    for index, step in enumerate(steps, 1):
        gate_node, inputs = step.node, step.inputs
        values = {**values, gate_node.name: gate_node.value}
        gate_cls = type(gate_node.gate)
        formula = formula_of(gate_cls, len(inputs))
        lines = [
            f"Step {index} of {len(steps)} (forward): {gate_node.name} = "
            f"{_fill(formula, gate_node)}"
        ]
        if all(is_scalar(i.value) for i in inputs) and is_scalar(gate_node.value):
            numbers = fill(
                formula, [_factor(i.value) for i in inputs], gate_node.name, gate_node.gate.attrs()
            )
            lines.append(f"  = {numbers} = {num(scalar(gate_node.value))}")
        else:
            lines.append(f"  {gate_node.name}: {describe(gate_node.value)}")
        remaining = len(gate_names) - index
        lines.append(
            f"{remaining} gate{'s' if remaining != 1 else ''} left to compute"
            if remaining
            else "forward pass done: every value is known"
        )
        frames.append(
            Frame(
                index, len(steps), "forward", gate_node, "\n".join(lines), values, {}, {}, {}, graph
            )
        )
    return frames


def backward_steps(graph: Any, node: Any = None, grad: Any = None) -> List[Frame]:
    """One Frame per step of the backward walk from `node` (default: the single sink),
    in reverse topological order, seeded with `grad` (default 1 for a scalar). Uses the
    values and caches of the last forward(); the graph's own gradients are untouched."""
    target, seed = graph.backward_seed(node, grad, action="step through backward")
    plan = graph.plan(target, "backward")
    _require_forward([target] + [step.node for step in plan.steps])
    values = {n.name: n.value for n in graph.nodes if n.value is not None}
    state = {"grads": {target.name: seed}, "edges": {}}
    frames = []

    def record(event):
        grads, edge_grads = dict(state["grads"]), dict(state["edges"])
        received, arrivals = {}, []  # arrivals: (input, gradient, its gradient before)
        for position, (inp, gradient) in enumerate(zip(event.step.inputs, event.received)):
            if gradient is None:
                continue
            gradient = gradient[()] if np.ndim(gradient) == 0 else gradient
            edge_grads[event.node.name, position] = received[inp.name] = gradient
            before = grads.get(inp.name)
            grads[inp.name] = gradient if before is None else before + gradient
            arrivals.append((inp, gradient, before))
        text = _backward_text(
            event.number, event.total, target, event.node, event.upstream, arrivals, grads
        )
        frames.append(
            Frame(
                event.number,
                event.total,
                "backward",
                event.node,
                text,
                values,
                grads,
                edge_grads,
                received,
                graph,
            )
        )
        state["grads"], state["edges"] = grads, edge_grads

    graph.executor.run_backward(plan, seed, graph.store.scratch(), [Hook(backward=record)])
    if frames:
        # Nodes the target does not depend on get zeros from backward(); so does the frame.
        frames[-1].grads.update(
            {n.name: np.zeros_like(n.value)[()] for n in plan.unreached if n.value is not None}
        )
        for frame in frames:
            frame.scale_grads = list(frames[-1].edge_grads.values())
    return frames


def _factor(x):
    """A number inside a product or sum: negative ones in parentheses, 3 × (-4)."""
    text = num(scalar(x))
    return f"({text})" if text.startswith("-") else text


def _require_forward(nodes):
    missing = [n.name for n in nodes if n.value is None]
    if missing:
        raise GraphError(
            f"node {missing[0]!r} has no value yet: call forward() before "
            "stepping through the graph"
        )


def _backward_text(index, total, target, node, upstream, arrivals, grads):
    gate_cls = type(node.gate)
    out, here = _symbol(target.name), _symbol(node.name)
    lines = [
        f"Step {index} of {total} (backward): gate {node.name} = "
        f"{_fill(formula_of(gate_cls, len(node.inputs)), node)}"
    ]
    scalars = is_scalar(upstream) and all(is_scalar(g) for _, g, _ in arrivals)
    seed = " (the seed: backward starts here)" if index == 1 else ""
    lines.append(f"Upstream gradient d{out}/d{here} = {describe(upstream)}{seed}")
    lines.append("Local rule: " + _fill(rule_of(gate_cls), node))
    lines.append("Chain rule: upstream × local = what each input receives")
    for inp, gradient, _ in arrivals:
        position = node.inputs.index(inp)
        if scalars and position < len(gate_cls.derivatives):
            formula = _fill(gate_cls.derivatives[position], node)
            # For scalars, local = received / upstream exactly (unless upstream is 0).
            local = scalar(gradient) / scalar(upstream) if scalar(upstream) else None
            numbers = f" = {_factor(upstream)} × {_factor(local)}" if local is not None else ""
            lines.append(
                f"  d{out}/d{_symbol(inp.name)} = d{out}/d{here} × {formula}"
                f"{numbers} = {num(scalar(gradient))}"
            )
        else:
            lines.append(f"  d{out}/d{_symbol(inp.name)}: {describe(gradient)}")
    for inp, gradient, before in arrivals:
        if before is None:
            continue
        if scalars:
            lines.append(
                f"Fan-out: {inp.name} already had {num(scalar(before))}, so it now "
                f"has {_factor(before)} + {_factor(gradient)} = "
                f"{num(scalar(before + gradient))}"
            )
        else:
            lines.append(
                f"Fan-out: {inp.name} already had a gradient (L2 "
                f"{num(norm(before))}); adding this one (L2 {num(norm(gradient))}) "
                f"gives {describe(before + gradient)}"
            )
    return "\n".join(lines)


def _png_images(frames, **options):
    from io import BytesIO

    from PIL import Image

    return [
        Image.open(BytesIO(to_bytes(frame.draw(**options), "png"))).convert("RGB")
        for frame in frames
    ]


def export_pngs(
    frames: Sequence[Frame], folder: Union[str, "os.PathLike[str]"], **options: Any
) -> List[Path]:
    """Write frame i as folder/step_001.png, ...; returns the paths. `options` go to draw()."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(_png_images(frames, **options), 1):
        paths.append(folder / f"step_{index:03d}.png")
        image.save(paths[-1])
    return paths


def export_gif(
    frames: Sequence[Frame],
    path: Union[str, "os.PathLike[str]"],
    seconds: float = 1.5,
    **options: Any,
) -> Path:
    """An animated GIF of the frames, `seconds` per frame, looping. Frames differ in size
    as labels fill in, so each is centred on a white canvas of the largest size."""
    from PIL import Image

    images = _png_images(frames, **options)
    if not images:
        raise ValueError("export_gif needs at least one frame")
    width = max(i.width for i in images)
    height = max(i.height for i in images)
    canvases = []
    for image in images:
        canvas = Image.new("RGB", (width, height), "white")
        canvas.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
        canvases.append(canvas)
    path = Path(path)
    canvases[0].save(
        path, save_all=True, append_images=canvases[1:], duration=int(seconds * 1000), loop=0
    )
    return path
