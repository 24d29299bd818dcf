"""Backprop through time, visible: how much gradient reaches each time step of a recurrent
layer (`step_grad_norms`, `plot_bptt`), and the layer unrolled into one step gate per time
step (`unroll`), for drawing it (`draw`) and stepping through its backward
(`backward_steps`).

The `rnn` and `lstm` gates run the whole sequence in one kernel; their cache keeps every
hidden state, from which `hidden_state_grads` replays dL/dh_t for each step t. `unroll`
builds the same recurrence from `rnn_step` / `lstm_step` gates with the same weights and
inputs, runs it forward and backpropagates the layer's upstream gradient through it, so
each step node holds the gradient that reached it.
"""

from collections.abc import Mapping

import numpy as np

from ..core.graph import Graph
from .plots import _figure, _finish

__all__ = ["step_grad_norms", "plot_bptt", "unroll"]

RECURRENT_OPS = ("rnn", "lstm")


def _recurrent_node(node, who):
    if getattr(node, "op", None) not in RECURRENT_OPS:
        raise TypeError(
            f"{who} takes an rnn or lstm node, got {getattr(node, 'op', type(node).__name__)!r}"
        )
    if node.grad is None:
        raise ValueError(
            f"{who}: node {node.name!r} has no gradient: run forward and backward first"
        )
    return node


def step_grad_norms(node):
    """||dL/dh_t|| for t = 1..T, (T,): the L2 norm over the batch and the hidden units of
    the gradient that reaches each hidden state of an rnn or lstm node after a backward
    (from its own output and through every later step)."""
    node = _recurrent_node(node, "step_grad_norms")
    reached = node.gate.hidden_state_grads(node.grad, node.cache)
    return np.sqrt(np.sum(np.square(reached, dtype=np.float64), axis=(0, 2)))


def plot_bptt(nodes, path=None, ax=None, title=None, vanishing=1e-6):
    """||dL/dh_t|| over the time steps t on a log axis: one line per recurrent layer, to
    compare, say, an RNN and an LSTM on the same sequence with a loss on the last step
    (the RNN's line falls by orders of magnitude towards t = 1; the LSTM's cell path keeps
    its line up).

    nodes: an rnn or lstm node after a backward, a list of them, or a dict {label: node or
    array of norms (T,)}. vanishing: the drawings' vanishing threshold, drawn as a dashed
    line when the norms come near it (None: no line). ax: draw into these axes.

    The axes hold one line per layer, labelled with its label (a node's name by default).
    """
    if isinstance(nodes, Mapping):
        items = dict(nodes)
    else:
        items = {n.name: n for n in (nodes if isinstance(nodes, (list, tuple)) else [nodes])}
    if not items:
        raise ValueError("plot_bptt needs at least one rnn or lstm node")
    norms = {
        label: np.asarray(step_grad_norms(n) if hasattr(n, "gate") else n, dtype=float)
        for label, n in items.items()
    }
    fig = _figure(7, 4) if ax is None else ax.figure
    ax = fig.subplots() if ax is None else ax
    for i, (label, values) in enumerate(norms.items()):
        steps = np.arange(1, len(values) + 1)
        shown = np.where(values > 0, values, np.nan)  # log axis: a 0 is not drawn
        ax.plot(steps, shown, "-o", ms=3, color=f"C{i % 10}", label=label)
    ax.set_yscale("log")
    low = min(
        (np.nanmin(np.where(v > 0, v, np.nan)) for v in norms.values() if np.any(v > 0)),
        default=None,
    )
    if vanishing is not None and low is not None and low < 100 * vanishing:
        ax.axhline(
            vanishing,
            ls="--",
            color="0.4",
            lw=1,
            label=f"vanishing (< {vanishing:g}, the drawings' flag)",
        )
    ax.set(
        xlabel="time step t",
        ylabel="||dL/dh_t||",
        title=title or "Backprop through time: the gradient reaching each step",
    )
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(which="major", alpha=0.3)
    ax.legend(fontsize="small")
    return _finish(fig, path)


def unroll(source):
    """The recurrence of an rnn or lstm node as one step gate per time step, run forward
    and backward: a new Graph.

    source: an rnn or lstm node after a backward, or a graph (or model with `.graph`)
    holding exactly one. The new graph has inputs x, h0 (fed the layer's input values)
    and params Wx, Wh, b (the layer's weights); step t is the scope `t<t>`: `t<t>/x`
    (x[:, t-1]), and `t<t>/h` (an rnn_step), or `t<t>/lstm` (an lstm_step) with `t<t>/h`
    and `t<t>/c` picking its next hidden and cell state. The h_t are gathered (concat,
    reshape, transpose) into the node named like the layer, (N, T, H), and the layer's
    upstream gradient is backpropagated from it, so `t<t>/h`'s gradient is dL/dh_t (what
    `step_grad_norms` measures) and Wx, Wh, b get the layer's weight gradients. Step
    through that backward with `backward_steps(unrolled, layer.name, grad=layer.grad)`.
    """
    node = _recurrent_node(_the_recurrent_node(source), "unroll")
    x, h0, Wx, Wh, b = (n.value for n in node.inputs)
    N, T = x.shape[:2]
    g = Graph(dtype=node.graph.dtype)
    xs, h = g.input("x", shape=x.shape), g.input("h0", shape=h0.shape)
    weights = [g.param(name, value) for name, value in (("Wx", Wx), ("Wh", Wh), ("b", b))]
    c = g.const(np.zeros_like(h0), name="c0") if node.op == "lstm" else None
    states = []
    for t in range(1, T + 1):
        x_t = g.index(xs, (slice(None), t - 1), name=f"t{t}/x")
        if c is None:
            h = g.rnn_step(x_t, h, *weights, name=f"t{t}/h")
        else:
            step = g.lstm_step(x_t, h, c, *weights, name=f"t{t}/lstm")
            # h last: a collapsed run of steps shows its last node, the hidden state.
            c, h = g.index(step, 1, name=f"t{t}/c"), g.index(step, 0, name=f"t{t}/h")
        states.append(h)
    # Gathered after the loop (not one node per step), so each step's scope ends with h_t.
    stacked = g.reshape(g.concat(states, axis=0, name="h_1..h_T"), (T, N, -1), name="(T, N, H)")
    out = g.transpose(stacked, (1, 0, 2), name=node.name)
    g.forward(x=x, h0=h0)
    g.backward(out, grad=node.grad)
    return g


def _the_recurrent_node(source):
    if hasattr(source, "gate"):
        return source
    graph = source if isinstance(source, Graph) else getattr(source, "graph", None)
    if not isinstance(graph, Graph):
        raise TypeError(
            f"unroll takes an rnn or lstm node or a graph holding one, got {type(source).__name__}"
        )
    found = [n for n in graph.nodes if n.op in RECURRENT_OPS]
    if len(found) != 1:
        raise ValueError(
            f"unroll: the graph has {len(found)} rnn/lstm nodes "
            f"({', '.join(n.name for n in found) or 'none'}); pass the node"
        )
    return found[0]
