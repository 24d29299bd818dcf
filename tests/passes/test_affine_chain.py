"""affine -> [batchnorm or layernorm] -> [relu] as one call in small eval batches
(graphnet/passes/affine_chain.py): every node's value, cache and state bit for bit as gate
by gate, whatever the shapes, dtypes and parts of the chain; nothing kept from one call
to the next; naive numpy and PyTorch's eval mode to rounding."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.kernels import _C

from .checks import (
    assert_chain_reads_as_gates,
    assert_player_and_drawing_show,
    assert_same_everywhere,
    assert_updates_between_calls_are_read,
    chain_labels,
    classifier_feeds,
    eval_walks,
    twins,
    walk,
)

pytestmark = pytest.mark.usefixtures("one_kernel_thread", "small_batch_plan")


CHAINS = [
    ("batchnorm", "relu"),
    ("layernorm", "relu"),
    ("batchnorm",),
    ("layernorm",),
    ("relu",),
]


def label(parts):
    """The chain's fused step's label."""
    return "+".join(("affine", *parts))


def network(parts, size=(1, 7), features=5, mean=0.0, tapped=None):
    """x -> affine -> the `parts` in order -> affine -> softmax loss; `mean` shifts the
    affine's output (its bias); `tapped`, a node name, also feeds a second reader."""

    def build(g, rng):
        x = g.input("x", requires_grad=False)
        width = int(np.prod(size[1:]))
        h = g.affine(
            x,
            g.param("w", rng.standard_normal((width, features)) * 0.5),
            g.param("b", rng.standard_normal(features) + mean),
            name="affine",
        )
        gamma = g.param("gamma", rng.uniform(-2, 2, features))
        beta = g.param("beta", rng.standard_normal(features))
        if "batchnorm" in parts:
            h = g.batchnorm(h, gamma, beta, momentum=0.5, name="norm")
        if "layernorm" in parts:
            h = g.layernorm(h, gamma, beta, name="norm")
        if "relu" in parts:
            h = g.relu(h, name="relu")
        feeds = classifier_feeds(g, rng, h, size, None if tapped is None else g[tapped])
        if "batchnorm" in parts:  # running averages away from 0 and 1
            for _ in range(2):
                g.forward(x=rng.standard_normal((5, *size[1:])), y=rng.integers(0, 3, 5))
        return feeds

    return build


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parts", CHAINS)
def test_every_chain_reads_as_gates(parts, dtype):
    assert_chain_reads_as_gates(network(parts), dtype, "affine_chain", label(parts))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3),
    st.sampled_from([(1,), (9,), (40,), (3, 4), (2, 3, 5)]),
    st.integers(1, 70),
    st.sampled_from([np.float32, np.float64]),
    st.sampled_from(CHAINS),
    st.floats(-3, 3),
)
def test_random_shapes(N, sample, features, dtype, parts, mean):
    """Any batch of the small plan, inputs of any rank (the affine flattens them), widths
    off the kernels' vectors."""
    build = network(parts, (N, *sample), features, mean)
    assert_chain_reads_as_gates(build, dtype, "affine_chain", label(parts))


@pytest.mark.parametrize("tapped", ["affine", "norm"])
def test_an_inner_value_read_by_another_node(tapped):
    """Fan-out: the affine's or the norm's value read outside the chain too (every value is
    computed, so the chain stays one step) and its gradient summed from both readers."""
    parts = ("batchnorm", "relu")
    assert_chain_reads_as_gates(
        network(parts, tapped=tapped), np.float64, "affine_chain", label(parts)
    )


def test_a_strided_input():
    """x a view with strides (a slice of a larger batch): the affine reads it as it is."""
    parts = ("layernorm", "relu")

    def build(g, rng):
        feeds = network(parts, size=(2, 7))(g, rng)
        feeds["x"] = rng.standard_normal((2, 14)).astype(g.dtype)[:, ::2]
        return feeds

    assert_chain_reads_as_gates(build, np.float32, "affine_chain", label(parts))


def test_a_larger_batch_or_train_mode_takes_the_other_plans():
    parts = ("batchnorm", "relu")
    plain, fused, feeds = twins(network(parts, size=(4, 7)), np.float64)
    fused.eval()
    walk(fused, feeds)
    assert chain_labels(fused, "affine_chain") == []
    fused.train()
    walk(fused, {"x": feeds["x"][:2], "y": feeds["y"][:2]})
    assert chain_labels(fused, "affine_chain") == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_updates_between_calls_are_read(dtype):
    parts = ("batchnorm", "relu")
    assert_updates_between_calls_are_read(network(parts), dtype, "affine_chain", label(parts))


def test_what_the_kernels_do_not_take_runs_the_gates():
    """A batchnorm that never trained (no running averages yet) and mixed dtypes run the
    gates: the same numbers, and the state the gate leaves."""
    parts = ("batchnorm", "relu")

    def untrained(g, rng):
        feeds = network(parts)(g, rng)
        g["norm"].state.clear()
        return feeds

    plain, fused, feeds = twins(untrained, np.float64)
    eval_walks(plain, fused, feeds)
    assert_same_everywhere(plain, fused)
    for name in ("gamma", "w"):
        plain, fused, feeds = twins(network(parts), np.float64)
        for g in (plain, fused):
            g[name].value = g[name].value.astype(np.float32)
            g.eval()
            walk(g, feeds)
        assert chain_labels(fused, "affine_chain") == ["affine+batchnorm+relu"]
        assert_same_everywhere(plain, fused)


def test_a_failing_chain_names_its_nodes_and_shapes():
    g = gn.Graph(np.float32)
    x = g.input("x", requires_grad=False)  # no static shape: the kernels find the mistake
    h = g.affine(x, g.param("w", np.ones((6, 4))), g.param("b", np.zeros(4)), name="affine1")
    g.sum(g.relu(h, name="relu1"))
    g.eval()
    with pytest.raises(gn.GraphError) as err:
        g.forward(x=np.ones((1, 5), np.float32))
    for word in ["'affine1' (affine)", "(1, 5)"]:
        assert word in str(err.value)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_same_bits_on_one_or_two_threads(threads):
    parts = ("batchnorm", "relu")
    plain, fused, feeds = twins(network(parts, size=(3, 300), features=200), np.float32)
    _C.set_num_threads(threads)
    eval_walks(plain, fused, feeds)
    assert chain_labels(fused, "affine_chain") == ["affine+batchnorm+relu"]
    assert_same_everywhere(plain, fused)


def test_drawings_steps_and_gradcheck():
    parts = ("layernorm", "relu")
    plain, fused, feeds = twins(network(parts), np.float64)
    eval_walks(plain, fused, feeds)
    assert chain_labels(fused, "affine_chain") == ["affine+layernorm+relu"]
    assert_player_and_drawing_show(plain, fused, {"affine", "norm", "relu"}, "norm")
    errors = gn.gradcheck(fused, **feeds)
    assert max(errors[name] for name in ("w", "b", "gamma", "beta")) < 1e-6, errors


def naive(x, norm, eps, w, b, gamma, beta, running_mean=None, running_var=None):
    """The chain in plain numpy loops over the samples (float64)."""
    out = []
    for row in x.reshape(len(x), -1).astype(np.float64):
        h = row @ w + b
        if norm == "batchnorm":
            h = (h - running_mean) / np.sqrt(running_var + eps) * gamma + beta
        else:
            h = (h - h.mean()) / np.sqrt(h.var() + eps) * gamma + beta
        out.append(np.maximum(h, 0))
    return np.array(out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_naive_numpy_and_pytorch_eval_mode(norm, dtype):
    """The chain's output against naive numpy and PyTorch's Linear -> BatchNorm1d (eval) or
    LayerNorm -> ReLU: each sums the product's terms in its own order, so they agree to the
    rounding of those sums."""
    torch = pytest.importorskip("torch")
    parts = (norm, "relu")
    _, fused, feeds = twins(network(parts, size=(2, 64), features=100), dtype)
    fused.eval()
    fused.forward(**feeds)
    assert chain_labels(fused, "affine_chain") == ["affine+" + norm + "+relu"]
    got = fused["relu"].value
    params = {name: np.array(fused[name].value, np.float64) for name in ("w", "b", "gamma", "beta")}
    state = {k: np.array(v, np.float64) for k, v in fused["norm"].state.items()}
    eps = fused["norm"].gate.eps
    want = naive(feeds["x"], norm, eps, **params, **state)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())
    t = {name: torch.from_numpy(np.array(fused[name].value)) for name in params}
    with torch.no_grad():
        h = torch.from_numpy(feeds["x"]) @ t["w"] + t["b"]
        if norm == "batchnorm":
            h = torch.nn.functional.batch_norm(
                h,
                torch.from_numpy(np.array(fused["norm"].state["running_mean"])),
                torch.from_numpy(np.array(fused["norm"].state["running_var"])),
                t["gamma"],
                t["beta"],
                training=False,
                eps=eps,
            )
        else:
            h = torch.nn.functional.layer_norm(h, (100,), t["gamma"], t["beta"], eps=eps)
        theirs = torch.relu(h).numpy()
    np.testing.assert_allclose(got, theirs, rtol=0, atol=tol * np.abs(theirs).max())
