"""Backprop step by step: one frame per step of the scheduler's walk.

backward_steps replays the scheduler's backward plan on the values and caches of the
last forward, without touching the graph's gradients. Each frame says what the active
gate received (the upstream gradient), its local rule, the chain-rule product each input
receives, and the sum where an input already had a gradient from an earlier step
(fan-out). The last frame's gradients are those of `graph.backward()`. forward_steps
does the same for the forward walk, with the values filling in.
"""
import dataclasses
from pathlib import Path

import numpy as np

from ..errors import GraphError
from ..gates.base import unbroadcast
from ._format import describe, is_scalar, norm, num, scalar
from .draw import View, draw
from .render import to_bytes


@dataclasses.dataclass(frozen=True)
class Rule:
    """How a gate reads in words. Templates name inputs {0}, {1}, ... and the output {f}."""
    forward: str
    local: str
    derivatives: tuple = ()  # d f / d input, per input, for the scalar circuits


RULES = {
    "add": Rule("{0} + {1}", "an add gate distributes: each input receives the upstream "
                "gradient unchanged", ("1", "1")),
    "subtract": Rule("{0} − {1}", "a subtract gate distributes like add, with the sign "
                     "flipped for the second input", ("1", "−1")),
    "multiply": Rule("{0} × {1}", "a multiply gate swaps: each input receives the upstream "
                     "gradient times the other input", ("{1}", "{0}")),
    "divide": Rule("{0} / {1}", "a divide gate: d/d{0} = 1/{1}, d/d{1} = −{0}/{1}²",
                   ("1/{1}", "−{0}/{1}²")),
    "max": Rule("max({0}, {1})", "a max gate routes: the larger input receives the whole "
                "upstream gradient, the other receives 0 (a tie goes to {0})",
                ("1 if {0} ≥ {1} else 0", "1 if {1} > {0} else 0")),
    "relu": Rule("max({0}, 0)", "a relu gate passes the gradient where its input is "
                 "positive and blocks it elsewhere", ("1 if {0} > 0 else 0",)),
    "exp": Rule("exp({0})", "exp is its own derivative: d{f}/d{0} = {f}", ("{f}",)),
    "log": Rule("ln {0}", "log: d{f}/d{0} = 1/{0}", ("1/{0}",)),
    "sigmoid": Rule("σ({0})", "sigmoid: d{f}/d{0} = {f}·(1 − {f}), at most 0.25, so deep "
                    "sigmoid stacks shrink gradients", ("{f}·(1 − {f})",)),
    "tanh": Rule("tanh({0})", "tanh: d{f}/d{0} = 1 − {f}²", ("1 − {f}²",)),
    "sum": Rule("Σ {0}", "a sum distributes like add: every summed element receives the "
                "upstream gradient", ("1",)),
    "affine": Rule("{0}·{1} + {2}", "affine: d{0} = dout·{1}ᵀ, d{1} = {0}ᵀ·dout, "
                   "d{2} = dout summed over the batch"),
    "conv": Rule("conv({0}, {1}) + {2}", "conv: d{0} = dout convolved back with the "
                 "filters {1}, d{1} = {0} correlated with dout, d{2} = dout summed per filter"),
    "max_pool": Rule("max over each window of {0}", "max pool routes each window's "
                     "gradient to the position of its maximum, like a max gate"),
    "batchnorm": Rule("{1}·(({0} − mean) / std) + {2}", "batchnorm: with x̂ the normalized "
                      "input and g = dout·{1}: d{0} = (g − mean(g) − x̂·mean(g·x̂)) / std, "
                      "d{1} = Σ dout·x̂, d{2} = Σ dout"),
    "dropout": Rule("{0} × mask / (1 − p)", "dropout passes the gradient only through the "
                    "units it kept, scaled like the forward pass"),
    "softmax": Rule("softmax({0})", "softmax: d{0} = s·(dout − Σ dout·s) with s = {f}"),
    "softmax_loss": Rule("cross-entropy(softmax({0}), {1})", "softmax loss: d{0} = "
                         "(softmax({0}) − one-hot({1})) / N; the labels get no gradient"),
    "svm_loss": Rule("hinge loss({0}, {1})", "SVM loss: each violated margin adds +1/N to its "
                     "class score and −1/N to the correct one; the labels get no gradient"),
}
RULES["spatial_batchnorm"] = RULES["batchnorm"]


def _rule(node):
    rule = RULES.get(node.op)
    if rule is None:  # a gate added later: its docstring is its rule
        doc = (type(node.gate).__doc__ or node.op).strip().splitlines()[0]
        rule = Rule(f"{node.op}(" + ", ".join(f"{{{i}}}" for i in range(len(node.inputs)))
                    + ")", doc)
    return rule


def _symbol(name):
    """A name as a symbol in a formula: scoped names in parentheses, d(layer1/W)."""
    return f"({name})" if "/" in name else name


def _fill(template, node):
    return template.format(*(_symbol(i.name) for i in node.inputs), f=_symbol(node.name))


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
    node: object
    text: str
    values: dict
    grads: dict
    edge_grads: dict
    received: dict
    graph: object = dataclasses.field(repr=False, default=None)
    scale_grads: list = dataclasses.field(repr=False, default=None)

    def view(self):
        active_edges = frozenset((self.node.name, i) for i in range(len(self.node.inputs)))
        return View(values=self.values, grads=self.grads, edge_grads=self.edge_grads,
                    active=self.node.name, active_edges=active_edges, pending=True,
                    scale_grads=self.scale_grads)

    def draw(self, **options):
        """draw() of the graph in this frame's state; the title defaults to the text."""
        options.setdefault("title", self.text)
        if self.direction == "forward":
            options.setdefault("grads", False)
        return draw(self.graph, view=self.view(), **options)

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.draw()._repr_mimebundle_(include, exclude)


def forward_steps(graph, node=None):
    """One Frame per gate of the forward walk (towards `node`, or every sink), values
    filling in topologically. Uses the values of the last forward()."""
    targets = graph.sinks if node is None else [graph[node]]
    steps, _ = graph._scheduler.forward_plan(targets)
    _require_forward(graph, [n for n, _, _ in steps])
    gate_names = {n.name for n, _, _ in steps}
    values = {n.name: n.value for n in graph.nodes
              if n.value is not None and n.gate is None}
    frames = []
    for index, (gate_node, _, inputs) in enumerate(steps, 1):
        values = {**values, gate_node.name: gate_node.value}
        rule = _rule(gate_node)
        formula = _fill(rule.forward, gate_node)
        lines = [f"Step {index} of {len(steps)} (forward): {gate_node.name} = {formula}"]
        if all(is_scalar(i.value) for i in inputs) and is_scalar(gate_node.value):
            numbers = rule.forward.format(*(_factor(i.value) for i in inputs),
                                          f=gate_node.name)
            lines.append(f"  = {numbers} = {num(scalar(gate_node.value))}")
        else:
            lines.append(f"  {gate_node.name}: {describe(gate_node.value)}")
        remaining = len(gate_names) - index
        lines.append(f"{remaining} gate{'s' if remaining != 1 else ''} left to compute"
                     if remaining else "forward pass done: every value is known")
        frames.append(Frame(index, len(steps), "forward", gate_node, "\n".join(lines),
                            values, {}, {}, {}, graph))
    return frames


def backward_steps(graph, node=None, grad=None):
    """One Frame per step of the backward walk from `node` (default: the single sink),
    in reverse topological order, seeded with `grad` (default 1 for a scalar). Uses the
    values and caches of the last forward(); the graph's own gradients are untouched."""
    target = graph._single_sink("step through backward") if node is None else graph[node]
    steps, unreached, _ = graph._scheduler.backward_plan(target)
    _require_forward(graph, [target] + [n for n, _, _, _ in steps])
    seed = _seed(target, grad)
    values = {n.name: n.value for n in graph.nodes if n.value is not None}
    grads, edge_grads, frames = {target.name: seed}, {}, []
    for index, (gate_node, backward, inputs, needs) in enumerate(steps, 1):
        upstream = grads[gate_node.name]
        sent = backward(upstream, gate_node.cache, needs)
        grads, edge_grads, received = dict(grads), dict(edge_grads), {}
        arrivals = []  # (input, gradient sent, the input's gradient before it): for the text
        for position, (inp, need, gradient) in enumerate(zip(inputs, needs, sent)):
            if not need:
                continue
            gradient = unbroadcast(np.asarray(gradient), np.shape(inp.value))
            gradient = gradient[()] if gradient.ndim == 0 else gradient
            edge_grads[gate_node.name, position] = received[inp.name] = gradient
            before = grads.get(inp.name)
            grads[inp.name] = gradient if before is None else before + gradient
            arrivals.append((inp, gradient, before))
        text = _backward_text(index, len(steps), target, gate_node, upstream, arrivals, grads)
        frames.append(Frame(index, len(steps), "backward", gate_node, text, values, grads,
                            edge_grads, received, graph))
    if frames:
        # Nodes the target does not depend on get zeros from backward(); so does the frame.
        frames[-1].grads.update({n.name: np.zeros_like(n.value)[()] for n in unreached
                                 if n.value is not None})
        for frame in frames:
            frame.scale_grads = list(frames[-1].edge_grads.values())
    return frames


def _factor(x):
    """A number inside a product or sum: negative ones in parentheses, 3 × (-4)."""
    text = num(scalar(x))
    return f"({text})" if text.startswith("-") else text


def _seed(target, grad):
    value = np.asarray(target.value)
    if grad is None:
        if value.size != 1:
            raise GraphError(f"backward steps from node {target.name!r} of shape "
                             f"{value.shape} need grad= an array of that shape")
        return np.ones_like(value)[()]
    seed = np.asarray(grad, dtype=value.dtype)
    if seed.shape != value.shape:
        raise GraphError(f"grad for node {target.name!r} has shape {seed.shape}, the "
                         f"node's value has shape {value.shape}")
    return seed[()]


def _require_forward(graph, nodes):
    missing = [n.name for n in nodes if n.value is None]
    if missing:
        raise GraphError(f"node {missing[0]!r} has no value yet: call forward() before "
                         "stepping through the graph")


def _backward_text(index, total, target, node, upstream, arrivals, grads):
    rule = _rule(node)
    out, here = _symbol(target.name), _symbol(node.name)
    lines = [f"Step {index} of {total} (backward): gate {node.name} = "
             f"{_fill(rule.forward, node)}"]
    scalars = is_scalar(upstream) and all(is_scalar(g) for _, g, _ in arrivals)
    seed = " (the seed: backward starts here)" if index == 1 else ""
    lines.append(f"Upstream gradient d{out}/d{here} = {describe(upstream)}{seed}")
    lines.append("Local rule: " + _fill(rule.local, node))
    lines.append("Chain rule: upstream × local = what each input receives")
    for inp, gradient, _ in arrivals:
        position = node.inputs.index(inp)
        if scalars and position < len(rule.derivatives):
            formula = _fill(rule.derivatives[position], node)
            # For scalars, local = received / upstream exactly (unless upstream is 0).
            local = scalar(gradient) / scalar(upstream) if scalar(upstream) else None
            numbers = f" = {_factor(upstream)} × {_factor(local)}" if local is not None else ""
            lines.append(f"  d{out}/d{_symbol(inp.name)} = d{out}/d{here} × {formula}"
                         f"{numbers} = {num(scalar(gradient))}")
        else:
            lines.append(f"  d{out}/d{_symbol(inp.name)}: {describe(gradient)}")
    for inp, gradient, before in arrivals:
        if before is None:
            continue
        if scalars:
            lines.append(f"Fan-out: {inp.name} already had {num(scalar(before))}, so it now "
                         f"has {_factor(before)} + {_factor(gradient)} = "
                         f"{num(scalar(before + gradient))}")
        else:
            lines.append(f"Fan-out: {inp.name} already had a gradient (L2 "
                         f"{num(norm(before))}); adding this one (L2 {num(norm(gradient))}) "
                         f"gives {describe(before + gradient)}")
    return "\n".join(lines)


def _png_images(frames, **options):
    from io import BytesIO

    from PIL import Image
    return [Image.open(BytesIO(to_bytes(frame.draw(**options), "png"))).convert("RGB")
            for frame in frames]


def export_pngs(frames, folder, **options):
    """Write frame i as folder/step_001.png, ...; returns the paths. `options` go to draw()."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(_png_images(frames, **options), 1):
        paths.append(folder / f"step_{index:03d}.png")
        image.save(paths[-1])
    return paths


def export_gif(frames, path, seconds=1.5, **options):
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
    canvases[0].save(path, save_all=True, append_images=canvases[1:],
                     duration=int(seconds * 1000), loop=0)
    return path
