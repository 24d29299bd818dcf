"""A batch fed straight into an affine layer has its NaN/Inf check read off the layer's
output (graphnet/passes/feed_check.py): the same error as the feed check's, nothing stored
when it refuses, the same values as gate by gate when it does not."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.passes.feed_check import CheckedAffine

pytestmark = pytest.mark.usefixtures("one_kernel_thread")


def mlp(dtype=np.float64, w=None, shape=(None, 6)):
    rng = np.random.default_rng(0)
    g = gn.Graph(dtype=dtype)
    x = g.input("x", shape=shape)
    w = rng.standard_normal((6, 4)) if w is None else w
    h = g.relu(g.affine(x, g.param("w", w), g.param("b", np.zeros(4)), name="hidden"))
    scores = g.affine(
        h, g.param("w2", rng.standard_normal((4, 3))), g.param("b2", np.zeros(3)), name="scores"
    )
    g.softmax_loss(scores, g.input("y", dtype=np.int64), name="loss")
    return g


def batch(n=5, dtype=np.float64, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 6)).astype(dtype)


def refusal(g, x):
    with pytest.raises(gn.GraphError) as info:
        g.run("scores", x=x)
    return str(info.value)


def test_the_plan_checks_its_feed_in_the_first_affine():
    g = mlp()
    steps = g.plan("scores", fuse=True).steps
    assert isinstance(steps[0].run, CheckedAffine) and not steps[0].fused
    assert not isinstance(g.plan("scores").steps[0].run, CheckedAffine)  # gate by gate
    # an affine on a computed x, or on weights that are fed, checks nothing
    h = gn.Graph()
    x, w = h.input("x"), h.input("w")
    h.affine(x, w, h.param("b", np.zeros(2)), name="out")
    assert not isinstance(h.plan("out", fuse=True).steps[0].run, CheckedAffine)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 7),
    st.integers(0, 10**6),
    st.sampled_from([np.nan, np.inf, -np.inf]),
    st.booleans(),
    st.sampled_from([np.float32, np.float64]),
)
def test_a_nan_or_inf_anywhere_is_refused_as_by_the_feed_check(n, where, bad, dead, dtype):
    """Anywhere in the batch, also where its feature's weights are all zero (inf * 0)."""
    x = batch(n, dtype)
    row, column = divmod(where % x.size, x.shape[1])
    x[row, column] = bad
    w = np.random.default_rng(2).standard_normal((6, 4))
    if dead:
        w[column] = 0.0
    fused, plain = mlp(dtype, w), mlp(dtype, w)
    plain.fuse = False
    good = batch(n, dtype, seed=3)
    for g in (fused, plain):
        g.eval().run("scores", x=good)
    before = {node.name: node.value for node in fused.nodes}
    message = refusal(fused, x)
    assert message == refusal(plain, x)
    assert "NaN or Inf" in message and "'x'" in message
    for node in fused.nodes:  # nothing stored: every value is the last good walk's
        assert node.value is before[node.name]
    fused.backward("scores", np.ones((n, 3)))  # and a backward through it still runs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_are_the_gates_bit_for_bit(dtype):
    fused, plain = mlp(dtype), mlp(dtype)
    plain.fuse = False
    for seed in range(3):
        x = batch(8, dtype, seed)
        for g in (fused, plain):
            g.eval().run("scores", x=x)
        for node in fused.nodes:
            np.testing.assert_array_equal(node.value, plain[node.name].value)


def test_weights_holding_inf_or_a_product_that_overflows_pass_a_finite_batch():
    w = np.ones((6, 4))
    w[0, 0] = np.inf
    g = mlp(w=w)
    g.run("scores", x=batch())  # a finite feed, weights holding Inf: not refused
    assert np.isinf(g["hidden"].value[:, 0]).any()
    big = mlp(np.float32)
    huge = np.full((2, 6), 3e38, np.float32)
    big.run("scores", x=huge)  # finite feed, the product overflows: not refused
    assert np.isinf(big["hidden"].value).any()


def test_a_hooked_walk_checks_the_feed_itself():
    g = mlp()
    x = batch()
    x[2, 3] = np.nan
    events = []
    with g.add_hook(forward=events.append):
        assert "NaN or Inf" in refusal(g, x)
        assert events == []
        g.run("scores", x=batch())
    assert [e.step.node.name for e in events][0] == "hidden"


def test_a_kernel_error_still_names_the_node_and_shapes():
    """x of the wrong width: the step fails as gate by gate does, once the feed is
    checked for NaN first."""
    fused, plain = mlp(shape=None), mlp(shape=None)
    plain.fuse = False
    wrong = np.ones((3, 5))
    messages = [refusal(g, wrong) for g in (fused, plain)]
    assert messages[0] == messages[1] and "'hidden'" in messages[0]
    wrong[0, 0] = np.inf
    assert "NaN or Inf" in refusal(fused, wrong)


def test_a_new_batch_is_never_given_the_last_ones_output():
    g = mlp()
    first, second = batch(seed=4), batch(seed=5)
    run = g.plan("scores", fuse=True).steps[0].run
    run.check(first, g.store)  # a check whose walk never came
    w, b = g["w"].value, g["b"].value
    out, _ = run(second, w, b)
    np.testing.assert_array_equal(out, second @ w + b)
    run.check(first, g.store)
    out, _ = run(first, w, b)
    np.testing.assert_array_equal(out, first @ w + b)
