"""Random graphs of sequences (N, T, D), the kind the zoo's random CNNs never make: one
node read by two to four gates, residual adds of broadcast shapes ((T, D), (1, T, 1),
(D,), a mean over the batch), concat, take, slice, reshape and transpose between layers,
matmul, attention (plain and causal) and layernorm chains, compare into where, clip; the
course's sequence layers among them: tanh RNNs and LSTMs from an h0 given or zero (one
RNN stacked on another), the temporal affine map, a word embedding whose words repeat,
and the temporal softmax loss under a mask that leaves a sequence out whole.

Each node's value against a numpy evaluation of the same steps (float64 and float32), and
each node's gradient against centred differences in float64: a second graph adds a zero
param (a probe) to every step's output, so that d loss / d probe is the gradient the
first graph leaves at that node. float32 gradients against float64's."""

import math

import numpy as np
import pytest

import graphnet as gn
from graphnet.core.gradcheck import numerical_gradient
from graphnet.kernels import _C

T, D = 3, 4
V = 6  # the word embedding's vocabulary
CAUSAL = np.tril(np.ones((T, T), dtype=bool))
erf = np.vectorize(math.erf)


def softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def attention(q, k, v, mask=None):
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    return softmax(scores) @ v


def heads(module, x):
    """(N, T, D) -> (N, 2, T, D / 2), by graphnet's gates or numpy's functions."""
    return module.transpose(module.reshape(x, (-1, T, 2, D // 2)), (0, 2, 1, 3))


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def rnn(x, h, Wx, Wh, b):
    """The tanh RNN's hidden states (N, T, H), one step at a time."""
    states = []
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ Wx + h @ Wh + b)
        states.append(h)
    return np.stack(states, axis=1)


def lstm(x, h, Wx, Wh, b):
    """The LSTM's hidden states (N, T, H) from a zero cell state, gates i, f, o, g."""
    c, states = np.zeros_like(h), []
    for t in range(x.shape[1]):
        i, f, o, g = np.split(x[:, t] @ Wx + h @ Wh + b, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        states.append(h)
    return np.stack(states, axis=1)


def temporal_softmax_loss(x, y, mask):
    """Cross-entropy of softmax(x) (N, T, V) at the words y where mask, summed, over N."""
    log_p = np.log(softmax(x))
    picked = np.take_along_axis(log_p, y[..., None], axis=-1)[..., 0]
    return -(picked * mask).sum() / x.shape[0]


def layernorm(x, gamma, beta, eps=1e-5):
    centred = x - x.mean(axis=-1, keepdims=True)
    return centred / np.sqrt((centred**2).mean(axis=-1, keepdims=True) + eps) * gamma + beta


# name -> (build(g, a, b, P), numpy(a, b, P)): two earlier (N, T, D) nodes a and b (often
# the same one) and the graph's params P (nodes, or their arrays) and integer arrays of the
# batch (words, labels, mask: see integer_arrays) -> an (N, T, D) node. The recurrent
# layers have H = D hidden units; a sequence's first step b[:, 0] is an h0 given, zeros
# (PyTorch's default) the other.
OPS = {
    "layernorm": (
        lambda g, a, b, P: g.layernorm(a, P["gamma"], P["beta"]),
        lambda a, b, P: layernorm(a, P["gamma"], P["beta"]),
    ),
    "attention": (
        lambda g, a, b, P: g.attention(a @ P["Wq"], b @ P["Wk"], b),
        lambda a, b, P: attention(a @ P["Wq"], b @ P["Wk"], b),
    ),
    "causal attention": (
        lambda g, a, b, P: g.attention(a, a @ P["Wk"], b, mask=CAUSAL),
        lambda a, b, P: attention(a, a @ P["Wk"], b, CAUSAL),
    ),
    "batched matmul": (  # (N, T, D) @ (N, D, T) @ (N, T, D), scaled
        lambda g, a, b, P: (a @ g.transpose(g.tanh(b), (0, 2, 1))) @ b * 0.25,
        lambda a, b, P: (a @ np.swapaxes(np.tanh(b), 1, 2)) @ b * 0.25,
    ),
    "time mixing": (  # transposed, a (T, T) matmul, transposed back
        lambda g, a, b, P: g.transpose(g.transpose(a, (0, 2, 1)) @ P["Wt"], (0, 2, 1)),
        lambda a, b, P: np.swapaxes(np.swapaxes(a, 1, 2) @ P["Wt"], 1, 2),
    ),
    "residual (T, D)": (
        lambda g, a, b, P: a + P["pos"],
        lambda a, b, P: a + P["pos"],
    ),
    "residual (1, T, 1)": (
        lambda g, a, b, P: g.tanh(a) * P["gate"] + b,
        lambda a, b, P: np.tanh(a) * P["gate"] + b,
    ),
    "residual (D,) and a batch mean": (
        lambda g, a, b, P: a - g.mean(b, axis=0, keepdims=True) * P["beta"],
        lambda a, b, P: a - b.mean(axis=0, keepdims=True) * P["beta"],
    ),
    "concat and slice": (
        lambda g, a, b, P: g.concat([a, g.sigmoid(b)], axis=2)[:, :, 2 : 2 + D],
        lambda a, b, P: np.concatenate([a, 1 / (1 + np.exp(-b))], axis=2)[:, :, 2 : 2 + D],
    ),
    "concat over time and take": (
        lambda g, a, b, P: g.take(g.concat([a, b], axis=1), np.array([4, 0, 0]), axis=1),
        lambda a, b, P: np.concatenate([a, b], axis=1)[:, [4, 0, 0]],
    ),
    "index": (
        lambda g, a, b, P: a[:, np.array([2, 2, 1])] + b[:, :, ::-1],
        lambda a, b, P: a[:, [2, 2, 1]] + b[:, :, ::-1],
    ),
    "reshape": (
        lambda g, a, b, P: g.reshape(g.reshape(a, (-1, T * D)) @ P["Wr"], (-1, T, D)),
        lambda a, b, P: (a.reshape(-1, T * D) @ P["Wr"]).reshape(-1, T, D),
    ),
    "where compare": (  # against 0.7 b + 0.13: a may equal b (causal attention's first
        # query copies v's first row) or b + 0.1 (clip's step on b = a is b + 0.1 on
        # (-0.5, 0.1)), a tie that a step of h flips, a jump that centred differences
        # read as 1e3-1e5; odd coefficients make no such tie
        lambda g, a, b, P: g.where(g.compare(a, ">", b * 0.7 + 0.13), a, b * 0.5),
        lambda a, b, P: np.where(a > b * 0.7 + 0.13, a, b * 0.5),
    ),
    "clip": (
        lambda g, a, b, P: g.clip(a, -0.5, 0.7) + g.clip(b, low=0.1),
        lambda a, b, P: np.clip(a, -0.5, 0.7) + np.maximum(b, 0.1),
    ),
    "gelu softmax": (
        lambda g, a, b, P: g.gelu(a) * g.reshape(g.softmax(g.reshape(b, (-1, D))), (-1, T, D)),
        lambda a, b, P: a * 0.5 * (1 + erf(a / math.sqrt(2))) * softmax(b),
    ),
    "two heads": (  # (N, T, D) -> (N, 2, T, D/2), attention per head, and back
        lambda g, a, b, P: g.reshape(
            g.transpose(g.attention(heads(g, a), heads(g, b), heads(g, b)), (0, 2, 1, 3)),
            (-1, T, D),
        ),
        lambda a, b, P: np.swapaxes(
            attention(heads(np, a), heads(np, b), heads(np, b)), 1, 2
        ).reshape(-1, T, D),
    ),
    "cross attention": (  # over 2T keys
        lambda g, a, b, P: g.attention(a, g.concat([a, b], axis=1), g.concat([b, a], axis=1)),
        lambda a, b, P: attention(a, np.concatenate([a, b], 1), np.concatenate([b, a], 1)),
    ),
    "shared keys": (  # k and v (T, D), broadcast over the batch
        lambda g, a, b, P: g.attention(a, P["pos"], P["pos"] * 0.5) + b,
        lambda a, b, P: attention(a, P["pos"], P["pos"] * 0.5) + b,
    ),
    "layernorm over time": (
        lambda g, a, b, P: g.transpose(
            g.layernorm(g.transpose(a, (0, 2, 1)), P["gammaT"], P["betaT"]), (0, 2, 1)
        ),
        lambda a, b, P: np.swapaxes(layernorm(np.swapaxes(a, 1, 2), P["gammaT"], P["betaT"]), 1, 2),
    ),
    "batchnorm of the rows": (  # train mode, over the N * T rows
        lambda g, a, b, P: g.reshape(
            g.batchnorm(g.reshape(a, (-1, D)), P["gamma"], P["beta"]), (-1, T, D)
        ),
        lambda a, b, P: (
            layernorm(a.reshape(-1, D).T, 1.0, 0.0).T.reshape(-1, T, D) * P["gamma"] + P["beta"]
        ),
    ),
    "log_softmax over time": (
        lambda g, a, b, P: g.log_softmax(a, axis=1) + b,
        lambda a, b, P: (
            a
            - a.max(1, keepdims=True)
            - np.log(np.exp(a - a.max(1, keepdims=True)).sum(1, keepdims=True))
            + b
        ),
    ),
    "max and min of broadcasts": (
        lambda g, a, b, P: g.max(a, P["pos"]) + g.min(b, g.mean(a, axis=2, keepdims=True)),
        lambda a, b, P: np.maximum(a, P["pos"]) + np.minimum(b, a.mean(2, keepdims=True)),
    ),
    "smooth pointwise": (
        lambda g, a, b, P: g.sqrt(a * a + 1.0) * g.softplus(b) + g.leaky_relu(a, 0.2) ** 2,
        lambda a, b, P: np.sqrt(a * a + 1) * np.logaddexp(0, b) + np.where(a > 0, a, 0.2 * a) ** 2,
    ),
    "fan-out": (  # a read by four gates, all smooth: a relu here read gelu's outputs of
        # -1e-7, whose kink a step of h crosses (the other kinks sit away from 0)
        lambda g, a, b, P: g.tanh(a) + g.sigmoid(a) * a - g.softplus(a) * 0.5,
        lambda a, b, P: np.tanh(a) + a / (1 + np.exp(-a)) - np.logaddexp(0, a) * 0.5,
    ),
    "rnn (h0 given)": (
        lambda g, a, b, P: g.rnn(a, b[:, 0], P["Wx"], P["Wh"], P["b"]),
        lambda a, b, P: rnn(a, b[:, 0], P["Wx"], P["Wh"], P["b"]),
    ),
    "rnn (h0 zero) over a stacked rnn": (
        lambda g, a, b, P: g.rnn(
            g.rnn(a, P["zeros"], P["Wx"], P["Wh"], P["b"]), P["zeros"], P["Wh"], P["Wx"], P["b"]
        ),
        lambda a, b, P: rnn(
            rnn(a, P["zeros"], P["Wx"], P["Wh"], P["b"]), P["zeros"], P["Wh"], P["Wx"], P["b"]
        ),
    ),
    "lstm (h0 given)": (
        lambda g, a, b, P: g.lstm(a, b[:, -1] * 0.5, P["Wx4"], P["Wh4"], P["b4"]),
        lambda a, b, P: lstm(a, b[:, -1] * 0.5, P["Wx4"], P["Wh4"], P["b4"]),
    ),
    "lstm (h0 zero) read twice": (
        lambda g, a, b, P: g.lstm(a + b, P["zeros"], P["Wx4"], P["Wh4"], P["b4"]) * a,
        lambda a, b, P: lstm(a + b, P["zeros"], P["Wx4"], P["Wh4"], P["b4"]) * a,
    ),
    "temporal affine": (
        lambda g, a, b, P: g.temporal_affine(a, P["Wq"], P["b"]) - b,
        lambda a, b, P: a @ P["Wq"] + P["b"] - b,
    ),
    "word embedding": (  # the words repeat, the first word in every sequence
        lambda g, a, b, P: g.word_embedding(P["words"], P["W_embed"]) * g.tanh(a),
        lambda a, b, P: P["W_embed"][P["words"]] * np.tanh(a),
    ),
    "temporal softmax loss (masked)": (
        lambda g, a, b, P: a * g.temporal_softmax_loss(b, P["labels"], P["mask"]),
        lambda a, b, P: a * temporal_softmax_loss(b, P["labels"], P["mask"]),
    ),
}
PARAM_SHAPES = {
    "gamma": (D,),
    "beta": (D,),
    "Wq": (D, D),
    "Wk": (D, D),
    "Wt": (T, T),
    "Wr": (T * D, T * D),
    "pos": (T, D),
    "gammaT": (T,),
    "betaT": (T,),
    "gate": (1, T, 1),
    "Wx": (D, D),
    "Wh": (D, D),
    "b": (D,),
    "Wx4": (D, 4 * D),
    "Wh4": (D, 4 * D),
    "b4": (4 * D,),
    "W_embed": (V, D),
}


def draw_steps(seed, count):
    """(op name, index of a, index of b) for `count` steps; a and b among the earlier
    nodes, the newest more often, so that chains are deep and fan-out is common."""
    rng = np.random.default_rng(seed)
    steps = []
    for k in range(count):
        reach = k + 1  # the input and the steps before
        a, b = (max(reach - int(rng.geometric(0.5)), 0) for _ in range(2))
        steps.append((str(rng.choice(sorted(OPS))), a, b))
    return steps


def draw_params(seed):
    rng = np.random.default_rng(seed + 1)
    scale = {"Wr": (T * D) ** -0.5, "Wt": T**-0.5}
    scale.update(dict.fromkeys(["Wq", "Wk", "Wx", "Wh", "Wx4", "Wh4"], D**-0.5))
    return {k: rng.standard_normal(s) * scale.get(k, 1.0) for k, s in PARAM_SHAPES.items()}


def integer_arrays(batch):
    """The arrays of a batch the graph takes as constants: the words (N, T) of the word
    embedding (each sequence starts with word 2, so that rows repeat), the loss's labels
    (N, T) in [0, D) and its mask (N, T), whose last sequence is masked out whole but
    which counts the first word (a loss of exactly 0 made the nodes after it 0, and
    a min of two of them a tie that centred differences halve); and the recurrent
    layers' zero h0 (N, D)."""
    rng = np.random.default_rng(batch)
    words = rng.integers(V, size=(batch, T))
    words[:, 0] = 2
    mask = rng.random((batch, T)) < 0.6
    mask[-1] = False
    mask[0, 0] = True
    return {
        "words": words,
        "labels": rng.integers(D, size=(batch, T)),
        "mask": mask,
        "zeros": np.zeros((batch, D)),
    }


def build(steps, params, batch, dtype, probes=False):
    """The graph of the steps, and its step nodes (probe adds left out); with `probes`,
    each step's output plus a zero param 'probe{k}' is what later steps read. The loss:
    each node nobody reads, times a fixed random array, summed."""
    g = gn.Graph(dtype=dtype)
    P = {k: g.param(k, v) for k, v in params.items()} | integer_arrays(batch)
    nodes = [g.input("X", shape=(None, T, D))]
    outputs = []
    for k, (op, a, b) in enumerate(steps):
        node = OPS[op][0](g, nodes[a], nodes[b], P)
        outputs.append(node)
        if probes:
            node = node + g.param(f"probe{k}", np.zeros((batch, T, D)))
        nodes.append(node)
    weights = np.random.default_rng(len(steps)).standard_normal((len(nodes), T, D))
    read = {id(i) for n in g.nodes for i in n.inputs}
    unread = [k for k in range(1, len(nodes)) if id(nodes[k]) not in read]
    loss = g.sum(nodes[unread[0]] * weights[unread[0]])
    for k in unread[1:]:
        loss = loss + g.sum(nodes[k] * weights[k])
    return g, outputs


def numpy_values(steps, params, X):
    values, P = [X], params | integer_arrays(len(X))
    for op, a, b in steps:
        values.append(OPS[op][1](values[a], values[b], P))
    return values[1:]


# four cases in the quick run (about a second each), twenty more marked slow
CASES = [
    pytest.param(seed, batch, marks=[pytest.mark.slow] if seed >= 4 else [])
    for seed, batch in zip(range(24), [1, 2, 3, 5] * 6)
]


@pytest.mark.parametrize("seed, batch", CASES)
def test_every_node_of_a_random_sequence_graph_against_numpy_and_centred_differences(seed, batch):
    steps, params = draw_steps(seed, 6), draw_params(seed)
    X = np.random.default_rng(seed + 2).standard_normal((batch, T, D))
    expected = numpy_values(steps, params, X)

    g, outputs = build(steps, params, batch, np.float64)
    g.forward(X=X)
    g.backward()
    for k, (node, value) in enumerate(zip(outputs, expected)):
        np.testing.assert_allclose(node.value, value, rtol=1e-12, atol=1e-12, err_msg=steps[k])
    grads = [node.grad for node in outputs]
    param_grads, input_grad = dict(g.grads), g["X"].grad

    probed, _ = build(steps, params, batch, np.float64, probes=True)

    def loss(_):
        return float(probed.forward(X=X))

    for k, grad in enumerate(grads):
        numeric = numerical_gradient(loss, probed.params[f"probe{k}"], 1e-6)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7, err_msg=steps[k])
    for name, grad in param_grads.items():
        numeric = numerical_gradient(loss, probed.params[name], 1e-6)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7, err_msg=name)
    X_probed = X.copy()
    numeric = numerical_gradient(lambda _: float(probed.forward(X=X_probed)), X_probed, 1e-6)
    np.testing.assert_allclose(input_grad, numeric, rtol=1e-6, atol=1e-7, err_msg="X")

    single, outputs32 = build(steps, params, batch, np.float32)
    values32, grads32 = run_on_threads(single, outputs32, X.astype(np.float32), 1)
    for k, (value32, grad32, value, grad) in enumerate(zip(values32, grads32, expected, grads)):
        assert value32.dtype == np.float32 and grad32.dtype == np.float32
        scale = max(1.0, float(np.abs(value).max()), float(np.abs(grad).max()))
        np.testing.assert_allclose(value32, value, atol=2e-5 * scale, err_msg=steps[k])
        np.testing.assert_allclose(grad32, grad, atol=2e-5 * scale, err_msg=steps[k])
    for threads in (2, 3):
        again = run_on_threads(single, outputs32, X.astype(np.float32), threads)
        for k in range(len(steps)):
            np.testing.assert_array_equal(again[0][k], values32[k], err_msg=steps[k])
            np.testing.assert_array_equal(again[1][k], grads32[k], err_msg=steps[k])


def run_on_threads(g, outputs, X, threads):
    """Copies of the outputs' values and gradients after a forward and backward on
    `threads` threads of the C++ kernels."""
    before = _C.get_num_threads()
    _C.set_num_threads(threads)
    try:
        g.forward(X=X)
        g.backward()
        return [n.value.copy() for n in outputs], [n.grad.copy() for n in outputs]
    finally:
        _C.set_num_threads(before)
