"""The tensor gates against PyTorch, float64 and float32: values and the gradients of a
random upstream gradient."""

import numpy as np
import pytest

import graphnet as gn

torch = pytest.importorskip("torch")
F = torch.nn.functional
pytestmark = pytest.mark.torch

rng = np.random.default_rng(61)
LABELS = np.array([[1, 4, 0, 2], [3, 0, 0, 4]])

# name -> (build(g, *nodes), input arrays, torch function of the input tensors)
CASES = {
    "matmul": (lambda g, a, b: a @ b, [(3, 4), (4, 5)], lambda a, b: a @ b),
    "matmul batched, broadcast": (
        lambda g, a, b: a @ b,
        [(2, 1, 3, 4), (5, 4, 2)],
        lambda a, b: a @ b,
    ),
    "matmul stack @ matrix": (lambda g, a, b: a @ b, [(2, 3, 4), (4, 5)], lambda a, b: a @ b),
    "matmul vector @ stack": (lambda g, a, b: a @ b, [(4,), (2, 4, 5)], lambda a, b: a @ b),
    "gelu": (lambda g, x: g.gelu(x), [(4, 6)], F.gelu),
    "gelu tanh": (
        lambda g, x: g.gelu(x, approximate="tanh"),
        [(4, 6)],
        lambda x: F.gelu(x, approximate="tanh"),
    ),
    "softplus": (lambda g, x: g.softplus(x), [(4, 6)], F.softplus),
    "log_softmax": (lambda g, x: g.log_softmax(x), [(4, 6)], lambda x: F.log_softmax(x, dim=-1)),
    "log_softmax axis 1": (
        lambda g, x: g.log_softmax(x, axis=1),
        [(2, 3, 4)],
        lambda x: F.log_softmax(x, dim=1),
    ),
    "avg_pool": (lambda g, x: g.avg_pool(x), [(2, 3, 8, 6)], lambda x: F.avg_pool2d(x, 2)),
    "avg_pool 3x2 stride 1": (
        lambda g, x: g.avg_pool(x, 3, 2, stride=1),
        [(2, 3, 7, 5)],
        lambda x: F.avg_pool2d(x, (3, 2), stride=1),
    ),
    "global_avg_pool": (
        lambda g, x: g.global_avg_pool(x),
        [(2, 3, 5, 4)],
        lambda x: F.adaptive_avg_pool2d(x, 1)[:, :, 0, 0],
    ),
    "cross_entropy": (
        lambda g, s: g.cross_entropy(s, LABELS[0]),
        [(4, 5)],
        lambda s: F.cross_entropy(s, torch.tensor(LABELS[0])),
    ),
    "cross_entropy ignore_index": (
        lambda g, s: g.cross_entropy(s, LABELS, ignore_index=0),
        [(2, 4, 5)],
        lambda s: F.cross_entropy(s.permute(0, 2, 1), torch.tensor(LABELS), ignore_index=0),
    ),
    "leaky_relu": (lambda g, x: g.leaky_relu(x, 0.2), [(4, 6)], lambda x: F.leaky_relu(x, 0.2)),
    # The C++ kernels (cpp/pointwise.cpp) over several threads' chunks and AVX2 tails.
    "gelu, 3 chunks": (lambda g, x: g.gelu(x), [(3, 70_001)], F.gelu),
    "gelu tanh, 3 chunks": (
        lambda g, x: g.gelu(x, approximate="tanh"),
        [(3, 70_001)],
        lambda x: F.gelu(x, approximate="tanh"),
    ),
    "softplus, 3 chunks": (lambda g, x: g.softplus(x), [(3, 70_001)], F.softplus),
    "leaky_relu, 3 chunks": (
        lambda g, x: g.leaky_relu(x, 0.1),
        [(3, 70_001)],
        lambda x: F.leaky_relu(x, 0.1),
    ),
    "exp": (lambda g, x: g.exp(x), [(5, 13)], torch.exp),
    "sigmoid": (lambda g, x: g.sigmoid(x), [(5, 13)], torch.sigmoid),
    "tanh": (lambda g, x: g.tanh(x), [(5, 13)], torch.tanh),
    "pow 3": (lambda g, x: x**3, [(5, 13)], lambda x: x**3),
    "softmax": (lambda g, x: g.softmax(x), [(3, 5, 37)], lambda x: F.softmax(x, dim=-1)),
    "avg_pool 3x3 stride 2": (
        lambda g, x: g.avg_pool(x, 3, 3, stride=2),
        [(2, 3, 9, 8)],
        lambda x: F.avg_pool2d(x, 3, stride=2),
    ),
    "attention": (
        lambda g, q, k, v: g.attention(q, k, v),
        [(2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 6, 7)],
        F.scaled_dot_product_attention,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", CASES)
def test_against_torch(name, dtype):
    make, shapes, torch_fn = CASES[name]
    arrays = [rng.standard_normal(s).astype(dtype) * 2 for s in shapes]
    g = gn.Graph(dtype=dtype)
    nodes = [g.input(f"in{i}", shape=s) for i, s in enumerate(shapes)]
    out = make(g, *nodes)
    value = g.run(out, {f"in{i}": a for i, a in enumerate(arrays)})
    upstream = rng.standard_normal(np.shape(value)).astype(dtype)
    g.backward(out, grad=upstream)
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    expected = torch_fn(*tensors)
    expected.backward(torch.tensor(upstream))
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    assert np.asarray(out.value).dtype == dtype
    np.testing.assert_allclose(value, expected.detach().numpy(), **tol)
    for node, tensor in zip(nodes, tensors):
        assert node.grad.dtype == dtype
        np.testing.assert_allclose(node.grad, tensor.grad.numpy(), **tol)
