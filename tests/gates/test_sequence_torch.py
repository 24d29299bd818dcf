"""The sequence gates against PyTorch: torch.nn.RNN and torch.nn.LSTM with the weights
mapped (PyTorch keeps (out, in) matrices, two biases, and the LSTM's gates in the order
i, f, g, o where the course has i, f, o, g), F.embedding, F.linear, F.cross_entropy and
F.scaled_dot_product_attention; values and gradients, float64 and float32."""

import numpy as np
import pytest

import graphnet as gn

torch = pytest.importorskip("torch")
F = torch.nn.functional
pytestmark = pytest.mark.torch

rng = np.random.default_rng(1607)
N, T, D, H, V = 3, 5, 4, 6, 7
TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}
DTYPES = [np.float64, np.float32]


def course_to_torch_blocks(W):
    """The course's i, f, o, g column blocks in PyTorch's order i, f, g, o."""
    i, f, o, g = np.split(W, 4, axis=-1)
    return np.concatenate([i, f, g, o], axis=-1)


def graph_and_grads(make, arrays, dtype, upstream):
    g = gn.Graph(dtype=dtype)
    nodes = [g.param(name, value) for name, value in arrays.items()]
    out = make(g, *nodes)
    value = g.run(out)
    if upstream is None:
        g.backward(out)
    else:
        g.backward(out, grad=upstream)
    return value, {name: g[name].grad for name in arrays}


def torch_tensors(arrays, dtype):
    return {k: torch.tensor(v.astype(dtype), requires_grad=True) for k, v in arrays.items()}


def check(value, grads, expected, tensors, dtype, mapped=None):
    mapped = mapped or {}
    np.testing.assert_allclose(value, expected.detach().numpy(), **TOLERANCE[dtype])
    for name, tensor in tensors.items():
        grad = tensor.grad.numpy()
        np.testing.assert_allclose(
            grads[name], mapped.get(name, lambda a: a)(grad), **TOLERANCE[dtype], err_msg=name
        )


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_rnn_and_lstm_against_torch_modules_with_the_weights_mapped(cell, dtype):
    blocks = 4 if cell == "lstm" else 1
    arrays = dict(
        x=rng.standard_normal((N, T, D)),
        h0=rng.standard_normal((N, H)),
        Wx=rng.standard_normal((D, blocks * H)) * 0.4,
        Wh=rng.standard_normal((H, blocks * H)) * 0.4,
        b=rng.standard_normal(blocks * H),
    )
    upstream = rng.standard_normal((N, T, H))
    value, grads = graph_and_grads(lambda g, *a: getattr(g, cell)(*a), arrays, dtype, upstream)

    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    module = (torch.nn.LSTM if cell == "lstm" else torch.nn.RNN)(D, H, batch_first=True)
    module = module.to(tdtype)
    reorder = course_to_torch_blocks if cell == "lstm" else (lambda W: W)
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.tensor(reorder(arrays["Wx"]).T))
        module.weight_hh_l0.copy_(torch.tensor(reorder(arrays["Wh"]).T))
        module.bias_ih_l0.copy_(torch.tensor(reorder(arrays["b"])))
        module.bias_hh_l0.zero_()
    x = torch.tensor(arrays["x"].astype(dtype), requires_grad=True)
    h0 = torch.tensor(arrays["h0"][np.newaxis].astype(dtype), requires_grad=True)
    state = (h0, torch.zeros_like(h0)) if cell == "lstm" else h0
    out, _ = module(x, state)
    out.backward(torch.tensor(upstream.astype(dtype)))

    np.testing.assert_allclose(value, out.detach().numpy(), **TOLERANCE[dtype])
    back = course_to_torch_blocks if cell == "lstm" else (lambda W: W)  # the swap undoes itself
    expected = dict(
        x=x.grad.numpy(),
        h0=h0.grad.numpy()[0],
        Wx=back(module.weight_ih_l0.grad.numpy().T),
        Wh=back(module.weight_hh_l0.grad.numpy().T),
        b=back(module.bias_ih_l0.grad.numpy()),
    )
    for name, grad in expected.items():
        np.testing.assert_allclose(grads[name], grad, **TOLERANCE[dtype], err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_step_gates_against_torch_cells(dtype):
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    arrays = dict(
        x=rng.standard_normal((N, D)),
        h=rng.standard_normal((N, H)),
        c=rng.standard_normal((N, H)),
        Wx=rng.standard_normal((D, 4 * H)) * 0.4,
        Wh=rng.standard_normal((H, 4 * H)) * 0.4,
        b=rng.standard_normal(4 * H),
    )
    upstream = rng.standard_normal((2, N, H))
    value, grads = graph_and_grads(lambda g, *a: g.lstm_step(*a), arrays, dtype, upstream)
    cell = torch.nn.LSTMCell(D, H).to(tdtype)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor(course_to_torch_blocks(arrays["Wx"]).T))
        cell.weight_hh.copy_(torch.tensor(course_to_torch_blocks(arrays["Wh"]).T))
        cell.bias_ih.copy_(torch.tensor(course_to_torch_blocks(arrays["b"])))
        cell.bias_hh.zero_()
    t = torch_tensors({k: arrays[k] for k in ("x", "h", "c")}, dtype)
    h, c = cell(t["x"], (t["h"], t["c"]))
    torch.stack([h, c]).backward(torch.tensor(upstream.astype(dtype)))
    check(value, grads, torch.stack([h, c]), t, dtype)

    rnn_arrays = dict(
        x=arrays["x"],
        h=arrays["h"],
        Wx=arrays["Wx"][:, :H],
        Wh=arrays["Wh"][:, :H],
        b=arrays["b"][:H],
    )
    value, grads = graph_and_grads(lambda g, *a: g.rnn_step(*a), rnn_arrays, dtype, upstream[0])
    t = torch_tensors(rnn_arrays, dtype)
    out = torch.tanh(t["x"] @ t["Wx"] + t["h"] @ t["Wh"] + t["b"])
    out.backward(torch.tensor(upstream[0].astype(dtype)))
    check(value, grads, out, t, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_affine_and_loss_against_torch(dtype):
    words = rng.integers(0, V, (N, T))
    mask = rng.random((N, T)) < 0.7
    arrays = dict(
        W_embed=rng.standard_normal((V, D)), w=rng.standard_normal((D, V)), b=rng.standard_normal(V)
    )

    def make(g, W_embed, w, b):
        scores = g.temporal_affine(g.word_embedding(words, W_embed), w, b)
        return g.temporal_softmax_loss(scores, words, mask)

    value, grads = graph_and_grads(make, arrays, dtype, None)
    t = torch_tensors(arrays, dtype)
    scores = F.linear(F.embedding(torch.tensor(words), t["W_embed"]), t["w"].T, t["b"])
    per_step = F.cross_entropy(
        scores.reshape(N * T, V), torch.tensor(words).reshape(-1), reduction="none"
    )
    loss = (per_step * torch.tensor(mask.reshape(-1))).sum() / N
    loss.backward()
    check(value, grads, loss, t, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True])
def test_attention_against_scaled_dot_product_attention(masked, dtype):
    arrays = dict(
        q=rng.standard_normal((N, 2, T, D)),
        k=rng.standard_normal((N, 2, 4, D)),
        v=rng.standard_normal((N, 2, 4, H)),
    )
    mask = rng.random((T, 4)) < 0.6 if masked else None
    if masked:
        mask[:, 0] = True  # torch gives nan for a query that may attend to nothing
    upstream = rng.standard_normal((N, 2, T, H))
    value, grads = graph_and_grads(
        lambda g, q, k, v: g.attention(q, k, v, mask=mask), arrays, dtype, upstream
    )
    t = torch_tensors(arrays, dtype)
    out = F.scaled_dot_product_attention(
        t["q"], t["k"], t["v"], attn_mask=None if mask is None else torch.tensor(mask)
    )
    out.backward(torch.tensor(upstream.astype(dtype)))
    check(value, grads, out, t, dtype)


@pytest.mark.slow
def test_to_torch_writes_every_sequence_gate_as_torch_code_with_the_same_numbers():
    """graphnet.to_torch of each case of test_sequence.py: the module's output and its
    autograd gradients are the graph's."""
    from .test_sequence import CASES, build

    for name in CASES:
        g, out, feeds = build(name)
        value = g.run(out, feeds)
        upstream = rng.standard_normal(np.shape(value))
        g.backward(out, grad=upstream)
        module = gn.to_torch(g)
        tensors = [torch.tensor(feeds[n], requires_grad=True) for n in module.input_names]
        result = module(*tensors)
        np.testing.assert_allclose(
            result.detach().numpy(), value, rtol=1e-10, atol=1e-12, err_msg=name
        )
        result.backward(torch.tensor(upstream))
        for key, tensor in zip(module.input_names, tensors):
            np.testing.assert_allclose(
                tensor.grad.numpy(), g[key].grad, rtol=1e-9, atol=1e-12, err_msg=f"{name}: {key}"
            )
    # The last case, as PyTorch code: one call of graphnet.interop._torch_modules.attention.
    assert "graphnet_interop__torch_modules_attention(in0, in1, in2, const_1)" in module.code
