"""conv -> [spatial batchnorm] -> [relu] -> [max pool] as one call in small eval batches
(graphnet/passes/conv_chain.py): every node's value, cache and state bit for bit as gate
by gate, whatever the shapes, dtypes and parts of the chain; nothing kept from one call
to the next; PyTorch's eval mode to rounding."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.kernels import _C
from graphnet.passes.batchnorm_fold import fold_pays

from .checks import (
    assert_chain_reads_as_gates,
    assert_player_and_drawing_show,
    assert_same_everywhere,
    assert_updates_between_calls_are_read,
    chain_labels,
    deferred,
    eval_walks,
    twins,
    walk,
    walk_fused_one_way,
)

pytestmark = pytest.mark.usefixtures("one_kernel_thread", "small_batch_plan")


PARTS = ("spatial_batchnorm", "relu", "max_pool")


def label(parts):
    """The chain's fused step's label."""
    return "+".join(("conv", *parts))


def network(
    parts, size=(1, 3, 7, 6), features=4, kernel=3, stride=1, pad=1, mean=0.0, skip_first=False
):
    """x -> conv -> the `parts` in order -> affine -> softmax loss; `mean` shifts the conv's
    output (its bias). An "add" adds a second conv of x (before the chain in the plan), as
    the add's first operand where `skip_first`."""

    def build(g, rng):
        x = g.input("x", requires_grad=False)
        w_shape = (features, size[1], kernel, kernel)
        if "add" in parts:  # planned before the chain's conv
            w_skip = g.param("w_skip", rng.standard_normal(w_shape) * 0.4)
            skip = g.conv(
                x,
                w_skip,
                g.param("b_skip", np.zeros(features)),
                stride=stride,
                pad=pad,
                name="skip",
            )
        h = g.conv(
            x,
            g.param("w", rng.standard_normal(w_shape) * 0.4),
            g.param("b", rng.standard_normal(features) + mean),
            stride=stride,
            pad=pad,
            name="conv",
        )
        if "spatial_batchnorm" in parts:
            h = g.spatial_batchnorm(
                h,
                g.param("gamma", rng.uniform(-2, 2, features)),
                g.param("beta", rng.standard_normal(features)),
                momentum=0.5,
                name="norm",
            )
        if "add" in parts:  # a residual block's skip, first or second operand
            h = g.add(skip, h, name="add") if skip_first else g.add(h, skip, name="add")
        if "relu" in parts:
            h = g.relu(h, name="relu")
        if "max_pool" in parts:
            h = g.max_pool(h, 2, 2, 2, name="pool")
        width = int(np.prod(g.run(h, x=rng.standard_normal(size)).shape[1:]))
        scores = g.affine(
            h,
            g.param("w_out", rng.standard_normal((width, 3)) * 0.3),
            g.param("b_out", np.zeros(3)),
            name="scores",
        )
        g.softmax_loss(scores, g.input("y", dtype=np.int64), name="loss")
        if "spatial_batchnorm" in parts:  # running averages away from 0 and 1
            for _ in range(2):
                g.forward(x=rng.standard_normal((3, *size[1:])), y=rng.integers(0, 3, 3))
        return {"x": rng.standard_normal(size).astype(g.dtype), "y": rng.integers(0, 3, size[0])}

    return build


CHAINS = [
    ("spatial_batchnorm", "add", "relu", "max_pool"),
    ("spatial_batchnorm", "add"),
    ("add", "relu"),
    ("spatial_batchnorm",),
    ("spatial_batchnorm", "relu"),
    ("spatial_batchnorm", "relu", "max_pool"),
    ("relu",),
    ("relu", "max_pool"),
    ("max_pool",),
    ("spatial_batchnorm", "max_pool"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parts", CHAINS)
def test_every_chain_reads_as_gates(parts, dtype):
    assert_chain_reads_as_gates(network(parts), dtype, "conv_chain", label(parts))


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 5),
    st.integers(3, 11),
    st.integers(3, 11),
    st.integers(1, 20),
    st.sampled_from([1, 3, 5]),
    st.integers(1, 2),
    st.integers(0, 2),
    st.sampled_from([np.float32, np.float64]),
    st.sampled_from(CHAINS),
    st.floats(-5, 5),
)
def test_random_shapes(N, C, H, W, features, kernel, stride, pad, dtype, parts, mean):
    pad = min(pad, kernel - 1)
    out_h = (H + 2 * pad - kernel) // stride + 1
    out_w = (W + 2 * pad - kernel) // stride + 1
    if min(out_h, out_w) < (2 if "max_pool" in parts else 1):
        return
    build = network(parts, (N, C, H, W), features, kernel, stride, pad, mean)
    assert_chain_reads_as_gates(build, dtype, "conv_chain", label(parts))


@pytest.mark.parametrize("skip_first", [True, False])
def test_the_add_reads_its_operands_in_order(skip_first):
    parts = ("spatial_batchnorm", "add", "relu")
    assert_chain_reads_as_gates(
        network(parts, skip_first=skip_first), np.float32, "conv_chain", label(parts)
    )


def test_an_add_that_broadcasts_or_reads_the_chain_twice():
    """A skip of another shape (broadcast by the add gate) runs the gates; an add of the
    chain's own values ends the chain before it."""

    def broadcast(g, rng):
        feeds = network(("spatial_batchnorm",))(g, rng)
        h = g.add(g["norm"], g.param("bias", rng.standard_normal((1, 4, 1, 1))), name="add")
        g.sum(h, name="total")
        return feeds

    plain, fused, feeds = twins(broadcast, np.float64)
    for g in (plain, fused):
        g.eval()
        g.run("total", x=feeds["x"])
    assert chain_labels(fused, "conv_chain") == ["conv+spatial_batchnorm+add"]  # the gates ran it
    assert_same_everywhere(plain, fused)

    def twice(g, rng):
        feeds = network(("spatial_batchnorm",))(g, rng)
        g.sum(g.relu(g.add(g["norm"], g["conv"], name="add"), name="relu"), name="total")
        return feeds

    plain, fused, feeds = twins(twice, np.float64)
    for g in (plain, fused):
        g.eval()
        g.run("total", x=feeds["x"])
    assert chain_labels(fused, "conv_chain") == ["conv+spatial_batchnorm"]
    assert_same_everywhere(plain, fused)


def test_a_larger_batch_or_train_mode_takes_the_other_plans():
    parts = ("spatial_batchnorm", "relu", "max_pool")
    plain, fused, feeds = twins(network(parts, size=(4, 3, 7, 6)), np.float64)
    fused.eval()
    walk(fused, feeds)
    assert chain_labels(fused, "conv_chain") == []
    fused.train()
    walk(fused, {"x": feeds["x"][:1], "y": feeds["y"][:1]})
    assert chain_labels(fused, "conv_chain") == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_updates_between_calls_are_read(dtype):
    parts = ("spatial_batchnorm", "relu")
    assert_updates_between_calls_are_read(network(parts), dtype, "conv_chain", label(parts))


FOLDS = [
    ("spatial_batchnorm",),
    ("spatial_batchnorm", "relu"),
    ("spatial_batchnorm", "relu", "max_pool"),
]


def assert_fold_or_chain(build, dtype, parts):
    """An eval forward of a batch of 4+ on the fused plan, whose fold of the batchnorm into
    the conv (batchnorm_fold.py, norm_relu.py's ConvBatchnormRelu,
    conv_batchnorm_relu_pool.py) runs the chain where the conv's filters have more entries
    than its output (batchnorm_fold.fold_pays): there nothing is left for later and every
    node reads bit for bit as gate by gate, elsewhere the conv's value is deferred and the
    rest reads to rounding. Then the weights updated in place are read by the next call."""
    plain, fused, feeds = twins(build, dtype)
    plain.eval(), fused.eval()
    fused.forward(**feeds)
    (step,) = [step for step in fused.executor.last_forward.steps if step.fused]
    assert step.label == "+".join(("conv", *parts))
    folds = fold_pays(fused["conv"], fused.store)
    assert deferred(fused["conv"]) == ({"value", "cache"} if folds else set())
    if not folds:
        for node in fused.nodes:
            assert not deferred(node) & {"value", "cache"}, node.name
    tol = {np.float32: 2e-5, np.float64: 1e-12}[dtype] if folds else 0.0
    walk_fused_one_way(plain, fused, feeds, fuse_forward=True, fuse_backward=False)
    assert_same_everywhere(plain, fused, tol, tol)
    fused.fuse = True
    before = np.array(fused["scores"].value)
    for g in (plain, fused):
        g["w"].value *= 0.5
        g.forward(**feeds)
    assert not np.array_equal(fused["scores"].value, before)
    assert_same_everywhere(plain, fused, tol, tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parts", FOLDS)
@pytest.mark.parametrize("N", [4, 5])
def test_the_fused_plans_folds_run_the_chain_where_the_filters_outnumber_the_outputs(
    N, parts, dtype
):
    build = network(parts, size=(N, 24, 4, 4), features=20)  # 4320 filter entries, N x 320
    assert_fold_or_chain(build, dtype, parts)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(4, 6),
    st.integers(1, 24),
    st.integers(2, 7),
    st.integers(2, 7),
    st.integers(1, 24),
    st.sampled_from([np.float32, np.float64]),
    st.sampled_from(FOLDS),
)
def test_the_fused_plans_folds_on_random_shapes(N, C, H, W, features, dtype, parts):
    build = network(parts, (N, C, H, W), features)
    assert_fold_or_chain(build, dtype, parts)


def test_what_the_kernels_do_not_take_runs_the_gates():
    """A batchnorm that never trained (no running averages yet) and mixed dtypes run the
    gates: the same numbers, and the state the gate leaves."""
    parts = ("spatial_batchnorm", "relu")

    def build(g, rng):
        feeds = network(parts)(g, rng)
        g["norm"].state.clear()
        return feeds

    plain, fused, feeds = twins(build, np.float64)
    eval_walks(plain, fused, feeds)
    assert_same_everywhere(plain, fused)
    plain, fused, feeds = twins(network(parts), np.float64)
    for g in (plain, fused):
        g["gamma"].value = g["gamma"].value.astype(np.float32)
        g.eval()
        walk(g, feeds)
    assert chain_labels(fused, "conv_chain") == ["conv+spatial_batchnorm+relu"]
    assert_same_everywhere(plain, fused)


def test_a_failing_chain_names_its_nodes_and_shapes():
    g = gn.Graph(np.float32)
    x = g.input("x", requires_grad=False)  # no static shape: the kernels find the mistake
    conv = g.conv(x, g.param("w", np.ones((4, 3, 3, 3))), g.param("b", np.zeros(4)), name="conv1")
    g.sum(g.relu(conv, name="relu1"))
    g.eval()
    with pytest.raises(gn.GraphError) as err:
        g.forward(x=np.ones((1, 2, 8, 8), np.float32))
    for word in ["'conv1' (conv)", "(1, 2, 8, 8)"]:
        assert word in str(err.value)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_same_bits_on_one_or_two_threads(threads):
    parts = ("spatial_batchnorm", "relu", "max_pool")
    plain, fused, feeds = twins(network(parts, size=(2, 16, 18, 18), features=32), np.float32)
    _C.set_num_threads(threads)
    eval_walks(plain, fused, feeds)
    assert chain_labels(fused, "conv_chain") == ["conv+spatial_batchnorm+relu+max_pool"]
    assert_same_everywhere(plain, fused)


def test_drawings_steps_and_gradcheck():
    parts = ("spatial_batchnorm", "relu", "max_pool")
    plain, fused, feeds = twins(network(parts), np.float64)
    eval_walks(plain, fused, feeds)
    assert_player_and_drawing_show(plain, fused, {"conv", "norm", "relu", "pool"}, "norm")
    errors = gn.gradcheck(fused, **feeds)
    assert max(errors[name] for name in ("w", "b", "gamma", "beta")) < 1e-6, errors


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride", [1, 2])
def test_pytorch_eval_mode(stride, dtype):
    """The chain's output against PyTorch's conv -> batchnorm -> relu -> max pool in eval
    mode: the two sum the convolution's terms in different orders, so they agree to the
    rounding of those sums, a few units in the last place of the largest output."""
    torch = pytest.importorskip("torch")
    parts = ("spatial_batchnorm", "relu", "max_pool")
    _, fused, feeds = twins(network(parts, size=(1, 8, 12, 12), features=16, stride=stride), dtype)
    fused.eval()
    fused.forward(**feeds)
    assert chain_labels(fused, "conv_chain") == ["conv+spatial_batchnorm+relu+max_pool"]
    t = {name: torch.from_numpy(np.array(fused[name].value)) for name in ("w", "b", "gamma")}
    state = fused["norm"].state
    with torch.no_grad():
        out = torch.nn.functional.conv2d(
            torch.from_numpy(feeds["x"]), t["w"], t["b"], stride=stride, padding=1
        )
        out = torch.nn.functional.batch_norm(
            out,
            torch.from_numpy(np.array(state["running_mean"])),
            torch.from_numpy(np.array(state["running_var"])),
            t["gamma"],
            torch.from_numpy(np.array(fused["beta"].value)),
            training=False,
            eps=fused["norm"].gate.eps,
        )
        want = torch.nn.functional.max_pool2d(torch.relu(out), 2, 2).numpy()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(fused["pool"].value, want, rtol=0, atol=tol * np.abs(want).max())
