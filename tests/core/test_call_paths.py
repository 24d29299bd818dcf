"""The short cuts of a call (a feed already of the input's dtype, the plan's table of
feeds, a model's eval-mode scores) give what the general path gives, and hooks, anomaly
mode and profile still see every node of an eval-mode inference."""

import numpy as np
import pytest

import graphnet as gn
from graphnet.core.feeds import convert_feed
from graphnet.models import FullyConnectedNet


def fc_model(dtype=np.float32):
    np.random.seed(0)
    return FullyConnectedNet(
        [7, 5],
        input_dim=6,
        num_classes=3,
        normalization="batchnorm",
        dropout=0.5,
        weight_scale=0.5,
        dtype=dtype,
    )


def test_a_feed_of_the_inputs_dtype_is_kept_and_still_checked():
    g = gn.Graph(dtype=np.float32)
    x = g.input("x", shape=(None, 3))
    g.relu(x, name="r")
    batch = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert convert_feed(x, batch, np.dtype(np.float32)) is batch  # no copy
    general = convert_feed(x, batch.astype(np.float64), np.dtype(np.float32))
    np.testing.assert_array_equal(general, batch)
    with pytest.raises(gn.GraphError, match=r"input 'x'.*NaN or Inf"):
        g.run("r", x=np.array([[1, np.nan, 2]], np.float32))
    with pytest.raises(gn.GraphError, match=r"input 'x' has shape \(2, 2\)"):
        g.run("r", x=np.ones((2, 2), np.float32))


def test_the_plans_feed_table_still_names_unknown_missing_and_extra_feeds():
    g = gn.Graph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    q = g.add(x, y, name="q")
    g.multiply(q, z, name="f")
    assert g.run("q", x=1.0, y=2.0) == 3.0
    assert g.run("q", x=1.0, y=5.0, z=9.0) == 6.0  # a feed the plan does not read: ignored
    with pytest.raises(gn.GraphError, match="missing feed for input 'y'"):
        g.run("q", x=1.0, z=2.0)
    with pytest.raises(gn.GraphError, match="unknown feed 'w'"):
        g.run("q", x=1.0, y=2.0, w=3.0)
    with pytest.raises(gn.GraphError, match="cannot feed 'q'"):
        g.run("q", x=1.0, y=2.0, q=3.0)
    assert g.run("q", {"x": 2.0}, y=2.0) == 4.0  # a dict and keywords together
    g.input("extra")  # the graph grew: new plans, new tables
    assert g.run("f", x=1.0, y=1.0, z=3.0) == 6.0


def test_labels_fed_to_a_plan_keep_their_integer_dtype():
    model = fc_model()
    X = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    y = np.array([0, 2, 1, 2])
    loss, grads = model.loss(X, y)
    assert model.graph["y"].value.dtype == np.int64 and np.isfinite(loss)
    scores = model.loss(X)
    assert scores.dtype == np.float32 and scores.shape == (4, 3)


def test_eval_inference_is_seen_node_by_node_by_hooks_anomaly_and_profile():
    model = fc_model()
    g = model.graph
    X = np.random.default_rng(2).standard_normal((1, 6)).astype(np.float32)
    plain = model.loss(X)
    walked = [s.node.name for s in g.executor.last_forward.steps]  # what the call ran
    seen = []
    with g.add_hook(forward=lambda event: seen.append(event.node.name)):
        hooked = model.loss(X)
    np.testing.assert_array_equal(plain, hooked)
    assert seen == walked and seen[-1] == "scores"
    with gn.detect_anomaly():
        np.testing.assert_array_equal(model.loss(X), plain)
    with gn.profile(g) as prof:
        model.loss(X)
    profiled = {name for row in prof.rows for name in row.nodes}
    assert set(walked) <= profiled
    with pytest.raises(gn.AnomalyError, match="W1"), gn.detect_anomaly():
        model.params["W1"] = np.full((6, 7), np.inf, np.float32)
        model.loss(X)
