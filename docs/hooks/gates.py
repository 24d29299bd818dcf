"""MkDocs hook: the gate reference (reference/gates.md), generated from the gate registry.

For every registered gate: its docstring, its forward formula, its local rule and the
local derivative for each input (the gate's `formula`, `rule` and `derivatives`, as the
step player shows them), its hyperparameters, what it caches (the gate's own
summarize_cache on a small example), and a drawing of that example made by graphnet.viz
after a forward and a backward pass. A gate registered later gets its section with no
change here: gates without an entry in EXAMPLES are tried on scalar inputs, and drawn
unevaluated when that fails.

`reference_markdown(drawings=False)` gives the page without rendering anything (the docs
test uses it); the build writes the page and one SVG per gate (reference/gates/OP.svg).
"""
from __future__ import annotations

import inspect
import logging
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

import graphnet as gn
from graphnet.gates.base import fill, formula_of, gate_class, rule_of

log = logging.getLogger("mkdocs.hooks.gates")
PAGE = "reference/gates.md"

Example = Callable[["gn.Graph"], dict]  # builds the gate as node "out", returns the feeds


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _unary(op: str, x=0.5, **attrs) -> Example:
    def build(g):
        getattr(g, op)(g.input("x"), name="out", **attrs)
        return {"x": x}
    return build


def _binary(op: str, a=2.0, b=-3.0) -> Example:
    def build(g):
        getattr(g, op)(g.input("a"), g.input("b"), name="out")
        return {"a": a, "b": b}
    return build


def _array(op: str, x_shape=(2, 3), **attrs) -> Example:
    def build(g):
        getattr(g, op)(g.input("x", shape=x_shape), name="out", **attrs)
        return {"x": _rng().normal(size=x_shape).round(2)}
    return build


def _norm(op: str, x_shape, param_shape, **attrs) -> Example:
    def build(g):
        getattr(g, op)(g.input("x", shape=x_shape), g.param("gamma", np.ones(param_shape)),
                       g.param("beta", np.zeros(param_shape)), name="out", **attrs)
        return {"x": _rng().normal(size=x_shape)}
    return build


def _loss(op: str) -> Example:
    def build(g):
        getattr(g, op)(g.input("scores", shape=(3, 4)), g.input("y", shape=(3,), dtype=np.int64),
                       name="out")
        return {"scores": _rng().normal(size=(3, 4)).round(2), "y": np.array([0, 3, 1])}
    return build


def _affine(g):
    g.affine(g.input("x", shape=(2, 3)), g.param("w", _rng().normal(size=(3, 2)).round(2)),
             g.param("b", np.zeros(2)), name="out")
    return {"x": _rng().normal(size=(2, 3)).round(2)}


def _conv(g):
    g.conv(g.input("x", shape=(1, 1, 4, 4)), g.param("w", _rng().normal(size=(2, 1, 3, 3))),
           g.param("b", np.zeros(2)), stride=1, pad=1, name="out")
    return {"x": _rng().normal(size=(1, 1, 4, 4))}


def _concat(g):
    g.concat([g.input("a", shape=(2, 2)), g.input("b", shape=(2, 3))], axis=1, name="out")
    return {"a": np.ones((2, 2)), "b": np.zeros((2, 3))}


def _slice(g):
    g.index(g.input("x", shape=(3, 4)), (slice(None), slice(1, 3)), name="out")
    return {"x": np.arange(12.0).reshape(3, 4)}


def _take(g):
    g.take(g.param("W", _rng().normal(size=(5, 2)).round(2)), np.array([4, 0, 4]), name="out")
    return {}


def _where(g):
    g.where(np.array([1, 0, 1]), g.input("a", shape=(3,)), g.input("b", shape=(3,)), name="out")
    return {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([-1.0, -2.0, -3.0])}


def _compare(g):
    g.compare(g.input("a", shape=(3,)), ">", g.input("b", shape=(3,)), name="out")
    return {"a": np.array([1.0, -2.0, 0.5]), "b": np.array([0.0, 0.0, 1.0])}


def _matmul(g):
    g.matmul(g.input("a", shape=(2, 3)), g.input("b", shape=(3, 2)), name="out")
    return {"a": _rng().normal(size=(2, 3)).round(2), "b": _rng().normal(size=(3, 2)).round(2)}


def _cross_entropy(g):
    g.cross_entropy(g.input("scores", shape=(2, 3, 4)),
                    g.input("y", shape=(2, 3), dtype=np.int64), ignore_index=0, name="out")
    return {"scores": _rng().normal(size=(2, 3, 4)), "y": np.array([[1, 2, 0], [3, 0, 0]])}


def _param(g, name, *shape):
    return g.param(name, _rng().normal(scale=0.5, size=shape).round(2))


def _sequence(op: str):
    """rnn and lstm over x (N=1, T=3, D=2) from h0 (1, H=2)."""
    def build(g):
        width = {"rnn": 2, "lstm": 8}[op]
        g.apply(op, g.input("x", shape=(1, 3, 2)), g.input("h0", shape=(1, 2)),
                _param(g, "Wx", 2, width), _param(g, "Wh", 2, width),
                g.param("b", np.zeros(width)), name="out")
        return {"x": _rng().normal(size=(1, 3, 2)), "h0": np.zeros((1, 2))}
    return build


def _rnn_step(g):
    g.apply("rnn_step", g.input("x", shape=(1, 2)), g.input("prev_h", shape=(1, 2)),
            _param(g, "Wx", 2, 2), _param(g, "Wh", 2, 2), g.param("b", np.zeros(2)), name="out")
    return {"x": np.array([[1.0, -1.0]]), "prev_h": np.array([[0.5, 0.0]])}


def _lstm_step(g):
    g.apply("lstm_step", g.input("x", shape=(1, 2)), g.input("prev_h", shape=(1, 2)),
            g.input("prev_c", shape=(1, 2)), _param(g, "Wx", 2, 8), _param(g, "Wh", 2, 8),
            g.param("b", np.zeros(8)), name="out")
    return {"x": np.array([[1.0, -1.0]]), "prev_h": np.array([[0.5, 0.0]]),
            "prev_c": np.zeros((1, 2))}


def _word_embedding(g):
    g.apply("word_embedding", np.array([[3, 0, 3]]), _param(g, "W", 4, 2), name="out")
    return {}


def _temporal_affine(g):
    g.apply("temporal_affine", g.input("x", shape=(1, 3, 2)), _param(g, "w", 2, 3),
            g.param("b", np.zeros(3)), name="out")
    return {"x": _rng().normal(size=(1, 3, 2)).round(2)}


def _temporal_softmax_loss(g):
    g.apply("temporal_softmax_loss", g.input("x", shape=(1, 3, 4)),
            g.input("y", shape=(1, 3), dtype=np.int64),
            g.input("mask", shape=(1, 3), dtype=np.int64), name="out")
    return {"x": _rng().normal(size=(1, 3, 4)).round(2), "y": np.array([[1, 2, 0]]),
            "mask": np.array([[1, 1, 0]])}


def _attention(masked: bool):
    def build(g):
        qkv = [g.input(n, shape=(1, 3, 2)) for n in "qkv"]
        mask = [np.tril(np.ones((3, 3), dtype=np.int64))] if masked else []
        g.apply("masked_attention" if masked else "attention", *qkv, *mask, name="out")
        return {n: _rng().normal(size=(1, 3, 2)).round(2) for n in "qkv"}
    return build


#: A small example per built-in gate; the drawing is of this graph. (An entry whose op is
#: not registered is never used.)
EXAMPLES: Dict[str, Example] = {
    "add": _binary("add"), "subtract": _binary("subtract"),
    "multiply": _binary("multiply"), "divide": _binary("divide"),
    "max": _binary("max"), "min": _binary("min"),
    "relu": _unary("relu", -0.5), "exp": _unary("exp"), "log": _unary("log", 2.0),
    "sigmoid": _unary("sigmoid"), "tanh": _unary("tanh"), "negate": _unary("negate"),
    "sqrt": _unary("sqrt", 4.0), "abs": _unary("abs", -1.5), "softplus": _unary("softplus"),
    "gelu": _unary("gelu"), "leaky_relu": _unary("leaky_relu", -2.0, alpha=0.1),
    "pow": _unary("pow", 3.0, exponent=2), "clip": _unary("clip", 1.5, low=-1.0, high=1.0),
    "sum": _array("sum"), "mean": _array("mean", axis=1), "softmax": _array("softmax"),
    "log_softmax": _array("log_softmax"), "reshape": _array("reshape", shape=(3, 2)),
    "flatten": _array("flatten", x_shape=(2, 2, 2)), "transpose": _array("transpose"),
    "dropout": _array("dropout", p=0.5, seed=0),
    "max_pool": _array("max_pool", x_shape=(1, 1, 4, 4)),
    "avg_pool": _array("avg_pool", x_shape=(1, 1, 4, 4)),
    "batchnorm": _norm("batchnorm", (4, 3), (3,)),
    "layernorm": _norm("layernorm", (4, 3), (3,)),
    "spatial_batchnorm": _norm("spatial_batchnorm", (2, 2, 2, 2), (2,)),
    "spatial_groupnorm": _norm("spatial_groupnorm", (2, 4, 2, 2), (1, 4, 1, 1), G=2),
    "softmax_loss": _loss("softmax_loss"), "svm_loss": _loss("svm_loss"),
    "affine": _affine, "conv": _conv, "concat": _concat, "slice": _slice, "take": _take,
    "where": _where, "compare": _compare, "matmul": _matmul, "cross_entropy": _cross_entropy,
    "rnn": _sequence("rnn"), "lstm": _sequence("lstm"), "rnn_step": _rnn_step,
    "lstm_step": _lstm_step, "word_embedding": _word_embedding,
    "temporal_affine": _temporal_affine, "temporal_softmax_loss": _temporal_softmax_loss,
    "attention": _attention(False), "masked_attention": _attention(True),
}


def _scalar_example(op: str) -> Example:
    """For a gate with no entry in EXAMPLES: scalars (integers at its integer inputs)."""
    cls = gate_class(op)

    def build(g):
        names = cls.inputs or ("x",)
        inputs = [g.input(n, dtype=np.int64 if i in cls.integer_inputs else None)
                  for i, n in enumerate(names)]
        g.apply(op, *inputs, name="out")
        return {n: (1 if i in cls.integer_inputs else 0.5 + i) for i, n in enumerate(names)}
    return build


def run_example(op: str) -> Tuple[Optional["gn.Graph"], bool]:
    """(graph, ran): the example graph after forward and backward, or built but not run
    when running failed, or (None, False) when even building failed."""
    for build in (EXAMPLES.get(op), _scalar_example(op)):
        if build is None:
            continue
        g = gn.Graph(dtype=np.float64)
        try:
            feeds = build(g)
        except Exception:  # noqa: BLE001 - a gate the generic example does not fit
            continue
        try:
            g.forward(**feeds)
            out = g["out"]
            g.backward(out, grad=np.ones(np.shape(out.value)) if np.ndim(out.value) else 1.0)
            return g, True
        except Exception:  # noqa: BLE001
            return g, False
    return None, False


def _signature(cls) -> str:
    params = [p for p in inspect.signature(cls.__init__).parameters.values()
              if p.name != "self"]
    return ", ".join(str(p) for p in params)


def _builder_call(op: str, cls) -> str:
    args = ", ".join(cls.inputs) if cls.inputs else "*inputs"
    extra = _signature(cls) if cls.__init__ is not object.__init__ else ""
    extra = extra.replace("*, ", "")
    call_args = ", ".join(a for a in (args, extra) if a)
    if hasattr(gn.Graph, op):
        return f"g.{op}({call_args}, name=None)"
    return f'g.apply("{op}", {call_args}, name=None)'


def _docstring(cls) -> str:
    doc = inspect.cleandoc(cls.__doc__ or "")
    return doc or "(no docstring)"


def gate_section(op: str, graph: Optional["gn.Graph"], ran: bool, drawing: Optional[str]
                 ) -> List[str]:
    cls = gate_class(op)
    names = list(cls.inputs) or ["x₀", "x₁", "…"]
    node = graph["out"] if graph is not None else None
    attrs = node.gate.attrs() if node is not None else {}
    out = "out"
    lines = [f"## {op}", "",
             f"`{cls.__module__}.{cls.__qualname__}`: `{_builder_call(op, cls)}`", "",
             _docstring(cls), "",
             f"- **Forward**: `{out} = {fill(formula_of(cls, len(names)), names, out, attrs)}`",
             f"- **Local rule**: {fill(rule_of(cls), names, out, attrs)}"]
    for i, name in enumerate(names if cls.inputs else []):
        if i < len(cls.derivatives):
            lines.append(f"- **∂{out}/∂{name}** = `{fill(cls.derivatives[i], names, out, attrs)}`")
    if not cls.inputs and cls.derivatives:
        lines.append(f"- **∂{out}/∂ each input** = `{cls.derivatives[0]}`")
    if cls.integer_inputs:
        ints = ", ".join(names[i] for i in cls.integer_inputs)
        lines.append(f"- **Integer inputs** (no gradient): {ints}")
    if cls.stateful:
        lines.append("- **State** across calls (saved in checkpoints): "
                     "running averages or a random stream, in the node's `state`")
    if node is not None and ran:
        summary = node.gate.summarize_cache(node.cache, [i.name for i in node.inputs])
        cached = "; ".join(summary) if summary else "nothing"
        lines.append(f"- **Caches** for backward (in the example below): {cached}")
    lines.append("")
    if drawing:
        what = ("after a forward and a backward pass" if ran else "(not run)")
        lines += [f"![The {op} gate in a small graph, {what}]({drawing})", ""]
    return lines


def reference_markdown(drawings: bool = False) -> Tuple[str, Dict[str, bytes]]:
    """The page, and {path relative to the page: SVG bytes} when `drawings`."""
    from graphnet import viz
    ops = gn.gate_names()
    lines = ["# Gate reference", "",
             "Every gate registered in graphnet's gate registry (`gn.gate_names()`), "
             "generated from the gates themselves when the site is built: its forward "
             "formula, its local rule and derivatives as the step player shows them "
             "(out is the gate's output), what it caches for backward, and a drawing of "
             "a small graph using it, after a forward and a backward pass "
             "(with `show_cache=True`). See [Adding a gate](../how-to/adding-a-gate.md) "
             "for what each attribute means.", "",
             " · ".join(f"[{op}](#{op})" for op in ops), ""]
    svgs: Dict[str, bytes] = {}
    for op in ops:
        graph, ran = run_example(op)
        path = None
        if drawings and graph is not None:
            drawing = viz.draw(graph, show_cache=ran, legend=False)
            path = f"gates/{op}.svg"
            svgs[path] = drawing.pipe(format="svg")
        lines += gate_section(op, graph, ran, path)
    return "\n".join(lines), svgs


def on_files(files, config):
    from mkdocs.structure.files import File
    text, svgs = reference_markdown(drawings=True)
    files.append(File.generated(config, PAGE, content=text))
    for rel, data in svgs.items():
        files.append(File.generated(config, f"reference/{rel}", content=data))
    return files
