"""conv -> relu / leaky relu as one step each way (graphnet/passes/conv_activation.py):
every node reads as gate by gate, bit for bit, where the pass applies and only there."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.kernels import _C
from graphnet.passes.conv_activation import ConvActivation

from .checks import (
    assert_player_and_drawing_show,
    assert_same_everywhere,
    classifier_feeds,
    deferred,
    fused_labels,
    only_pass,
    twins,
    walk,
    walk_fused_one_way,
)

pytestmark = pytest.mark.usefixtures("one_kernel_thread")

ACTIVATIONS = {
    "relu": lambda g, h, name: g.relu(h, name=name),
    "leaky_relu": lambda g, h, name: g.leaky_relu(h, 0.1, name=name),
    "leaky_relu 0": lambda g, h, name: g.leaky_relu(h, 0.0, name=name),
}


def network(
    activation="relu",
    size=(3, 2, 6, 5),
    features=(4, 5),
    layer=(3, 1, 1),
    tap=None,
    second=("relu", 3, 1, 1),
):
    """x -> conv1 -> act1 [-> conv2 -> act2] -> affine -> softmax loss. conv1 is fed by data
    (no input gradient); conv2, if `second` (its activation, kernel, stride, pad), computes
    one for act1. `layer`: conv1's (kernel, stride, pad). `tap`: a node that also feeds a
    sum added to the loss (a second reader)."""

    def build(g, rng):
        x = g.input("x")
        C = size[1]
        k, stride, pad = layer
        w1 = g.param("w1", rng.standard_normal((features[0], C, k, k)) * 0.5)
        b1 = g.param("b1", rng.standard_normal(features[0]) * 0.2)
        h = g.conv(x, w1, b1, stride=stride, pad=pad, name="conv1")
        h = ACTIVATIONS[activation](g, h, "act1")
        if second is not None:
            act2, k2, stride2, pad2 = second
            w2 = g.param("w2", rng.standard_normal((features[1], features[0], k2, k2)) * 0.5)
            b2 = g.param("b2", rng.standard_normal(features[1]) * 0.2)
            h = g.conv(h, w2, b2, stride=stride2, pad=pad2, name="conv2")
            h = ACTIVATIONS[act2](g, h, "act2")
        return classifier_feeds(g, rng, h, size, g[tap] if tap else None)

    return build


def label(activation):
    return "conv+" + activation.split()[0]


def assert_fused_reads_as_gate_by_gate(build, dtype, labels, convs=("conv1", "conv2")):
    plain, fused, feeds = twins(build, dtype)
    assert fused_labels(fused) == fused_labels(fused, "backward")[::-1] == labels
    for _ in range(2):
        for g in (plain, fused):
            walk(g, feeds, backward=False)
        for conv in convs:
            assert deferred(fused[conv]) == {"value"}
            assert deferred(fused[conv.replace("conv", "act")]) == {"cache"}
        for g in (plain, fused):
            g.backward()
        # The backward needed neither the convs' values nor the activations' caches.
        for conv in convs:
            assert deferred(fused[conv]) == {"value", "grad"}
            assert deferred(fused[conv.replace("conv", "act")]) == {"cache"}
        assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fused_conv_activation_reads_as_gate_by_gate(activation, dtype):
    build = network(activation, second=(activation, 3, 1, 1))
    assert_fused_reads_as_gate_by_gate(build, dtype, [label(activation)] * 2)


@pytest.mark.parametrize(
    "layer, second",
    [
        ((3, 1, 1), ("relu", 3, 1, 1)),  # Winograd forward and input gradient (16 channels)
        ((3, 1, 1), ("leaky_relu", 3, 2, 1)),  # stride 2: the phase-plane tap kernels
        ((1, 1, 0), ("relu", 1, 1, 0)),  # 1x1: a GEMM on the image
        ((5, 1, 2), ("relu", 3, 1, 1)),  # rows of 16+: the direct kernels
    ],
    ids=["winograd", "stride 2", "1x1", "direct"],
)
def test_the_conv_paths_of_float32_layers(layer, second):
    """float32 layers wide enough for the kernels that read the whole batch's gradient
    (Winograd, direct, tap: the gradient through the activation taken once for the batch)
    and for the per-chunk ones (the weight gradient, the GEMM's input gradient)."""
    build = network("relu", (3, 3, 16, 18), (16, 17), layer, second=second)
    assert_fused_reads_as_gate_by_gate(build, np.float32, ["conv+relu", label(second[0])])


@settings(max_examples=25, deadline=None)
@given(
    activation=st.sampled_from(sorted(ACTIVATIONS)),
    N=st.integers(1, 4),
    C=st.integers(1, 4),
    H=st.integers(7, 10),
    W=st.integers(7, 10),
    F=st.integers(1, 6),
    layer=st.sampled_from([(1, 1, 0), (1, 2, 0), (3, 1, 1), (3, 2, 1), (3, 1, 0), (3, 2, 0)]),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_random_shapes(activation, N, C, H, W, F, layer, dtype):
    build = network(activation, (N, C, H, W), (F, 3), layer, second=(activation, *layer))
    assert_fused_reads_as_gate_by_gate(build, dtype, [label(activation)] * 2)


def test_the_pass_alone(monkeypatch):
    only_pass(monkeypatch, ConvActivation)
    plain, fused, feeds = twins(network(), np.float64)
    assert fused_labels(fused) == fused_labels(fused, "backward") == ["conv+relu"] * 2
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("tap", ["conv1", "conv2"])
def test_a_conv_read_by_another_gate_is_not_fused(tap):
    plain, fused, feeds = twins(network(tap=tap), np.float64)
    fused_convs = [n for n in ("conv1", "conv2") if n != tap]
    labels = ["conv+relu"] * len(fused_convs)
    assert fused_labels(fused) == fused_labels(fused, "backward") == labels
    for g in (plain, fused):
        walk(g, feeds)
    assert not deferred(fused[tap])
    assert deferred(fused[fused_convs[0]]) == {"value", "grad"}
    assert_same_everywhere(plain, fused)


def test_an_activation_read_by_two_gates_is_fused():
    """The activation's value is computed for its readers; the backward step gets the sum
    of their gradients."""
    plain, fused, feeds = twins(network(tap="act1"), np.float64)
    assert fused_labels(fused) == fused_labels(fused, "backward") == ["conv+relu"] * 2
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("act", ["gelu", "negative slope"])
def test_other_activations_run_as_gates(act):
    def build(g, rng):
        x = g.input("x")
        w = g.param("w", rng.standard_normal((4, 2, 3, 3)))
        h = g.conv(x, w, g.param("b", np.zeros(4)), stride=1, pad=1, name="conv1")
        h = g.gelu(h, name="act1") if act == "gelu" else g.leaky_relu(h, -0.1, name="act1")
        return classifier_feeds(g, rng, h, (2, 2, 5, 5))

    plain, fused, feeds = twins(build, np.float64)
    assert fused_labels(fused) == fused_labels(fused, "backward") == []
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("fuse_forward, fuse_backward", [(True, False), (False, True)])
def test_a_fused_walk_one_way_and_gate_by_gate_the_other(fuse_forward, fuse_backward):
    for activation in ACTIVATIONS:
        plain, g, feeds = twins(network(activation, second=(activation, 3, 2, 1)), np.float64)
        walk_fused_one_way(plain, g, feeds, fuse_forward, fuse_backward)
        assert_same_everywhere(plain, g)


def test_eval_mode_forward_and_a_backward_after_it():
    plain, fused, feeds = twins(network("leaky_relu"), np.float32)
    for g in (plain, fused):
        g.eval()
        walk(g, feeds)
    assert deferred(fused["conv1"]) == {"value", "grad"}
    assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_nan_and_infinite_values_and_gradients(activation):
    """A NaN input passes the activation as in its gate; NaN and infinite upstream gradients
    reach the conv's gradients as gate by gate (0 * inf is a NaN where the relu blocks)."""
    plain, fused, feeds = twins(network(activation, second=(activation, 3, 1, 1)), np.float64)
    for g in (plain, fused):  # a NaN and an infinity in the convs' outputs
        g["w1"].value[0, 0, 1, 1] = np.nan
        g["b2"].value[1] = np.inf
        g.forward(**feeds)
    assert np.isnan(plain["act1"].value).any()
    seed = np.random.default_rng(1).standard_normal(plain["act2"].shape)
    seed.flat[::3], seed.flat[1::5], seed.flat[2::7] = np.nan, np.inf, -np.inf
    for g in (plain, fused):
        g.backward("act2", grad=seed)
    assert np.isnan(plain["w1"].grad).any() and np.isnan(plain["conv1"].grad).any()
    assert_same_everywhere(plain, fused)


def test_one_and_two_threads_give_the_same_bits():
    build = network("relu", (5, 3, 16, 18), (16, 17), second=("leaky_relu", 3, 1, 1))
    results = []
    for threads in (1, 2):
        _C.set_num_threads(threads)
        g = gn.Graph(dtype=np.float32)
        feeds = build(g, np.random.default_rng(0))
        walk(g, feeds)
        results.append([(n.value, n.grad) for n in g.nodes])
    for (value1, grad1), (value2, grad2) in zip(*results):
        assert np.array_equal(value1, value2) and np.array_equal(grad1, grad2)


def test_what_is_left_for_later_keeps_its_walk():
    """Read after the optimizer's in-place updates and a batch refilled in place, the
    convs' values and gradients and the activations' caches are those of their own walk."""
    plain, fused, feeds = twins(network("leaky_relu", second=("relu", 3, 1, 1)), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
    feeds["x"][...] = 7  # the next batch, written into the same array
    for name in ("w1", "b1", "w2", "b2"):
        fused[name].value += 1
    for name in ("conv1", "conv2"):
        assert np.array_equal(fused[name].value, plain[name].value)
        assert np.array_equal(fused[name].grad, plain[name].grad)
    for name in ("act1", "act2"):
        assert np.array_equal(fused[name].cache, plain[name].cache)


def test_drawings_steps_and_gradcheck_see_every_node():
    plain, fused, feeds = twins(network("leaky_relu", second=("relu", 3, 2, 1)), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
    assert_player_and_drawing_show(plain, fused, {"conv1", "act1", "conv2", "act2"}, "conv1")
    assert_same_everywhere(plain, fused)
    errors = gn.gradcheck(fused, **feeds)
    assert errors == gn.gradcheck(plain, **feeds)
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.torch
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_against_pytorch(activation, dtype):
    torch = pytest.importorskip("torch")
    g = gn.Graph(dtype=dtype)
    rng = np.random.default_rng(3)
    x, w, b = (
        rng.standard_normal((4, 3, 9, 8)).astype(dtype),
        rng.standard_normal((6, 3, 3, 3)).astype(dtype),
        rng.standard_normal(6).astype(dtype),
    )
    xn, wn, bn = g.input("x", requires_grad=True), g.param("w", w), g.param("b", b)
    act = ACTIVATIONS[activation](g, g.conv(xn, wn, bn, stride=2, pad=1, name="conv"), "act")
    assert fused_labels(g) == [label(activation)]
    seed = rng.standard_normal(g.run(act, x=x).shape).astype(dtype)
    g.forward(x=x)
    g.backward("act", grad=seed)

    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out = torch.nn.functional.conv2d(tx, tw, tb, stride=2, padding=1)
    slope = {"relu": 0.0, "leaky_relu": 0.1, "leaky_relu 0": 0.0}[activation]
    tout = torch.relu(out) if activation == "relu" else torch.nn.functional.leaky_relu(out, slope)
    tout.backward(torch.tensor(seed))
    tol = 1e-5 if dtype == np.float32 else 1e-10
    for got, want in (
        (act.value, tout),
        (xn.grad, tx.grad),
        (wn.grad, tw.grad),
        (bn.grad, tb.grad),
    ):
        want = want.detach().numpy()
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
