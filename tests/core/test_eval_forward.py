"""Eval-mode plans call a gate's eval_forward where it has one (dropout: the identity; the
softmax loss: the loss without its gradient; the LSTM: its lean forward), and a backward
may still follow: the gradients equal a train-mode walk's wherever the two modes compute
the same function, through fan-out, at any batch, in float32 and float64; the plans of the
two modes are kept apart; drawings, gradcheck and the step player see every node."""

import numpy as np
import pytest

import graphnet as gn
from graphnet import viz
from graphnet.gates.nn import LossInputs
from graphnet.kernels import _C

pytestmark = pytest.mark.usefixtures("one_kernel_thread")


def classifier(dtype, p=0.5):
    """affine -> dropout -> affine -> softmax loss, the scores also feeding a sum (fan-out)."""
    rng = np.random.default_rng(0)
    g = gn.Graph(dtype=dtype)
    x = g.input("x", shape=(None, 6))
    y = g.input("y", shape=(None,), dtype=np.int64)
    h = g.affine(x, g.param("w1", rng.standard_normal((6, 5))), g.param("b1", np.zeros(5)))
    h = g.dropout(g.relu(h), p=p, name="drop")
    scores = g.affine(
        h, g.param("w2", rng.standard_normal((5, 4))), g.param("b2", np.zeros(4)), name="scores"
    )
    loss = g.softmax_loss(scores, y, name="data_loss")
    g.add(loss, g.sum(g.multiply(scores, scores)), name="loss")
    return g


def feeds(batch, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((batch, 6)).astype(dtype),
        "y": rng.integers(4, size=batch).astype(np.int64),
    }


def gradients(g):
    return {name: g[name].grad.copy() for name in ("w1", "b1", "w2", "b2", "x")}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_eval_forward_then_backward_gives_the_train_walks_gradients(dtype, batch):
    """With p = 0 dropout keeps every unit in train mode too, so both modes compute the
    same function: the eval walk's loss and gradients (the softmax loss's computed at
    backward from its inputs) are the train walk's, bit for bit."""
    g, data = classifier(dtype, p=0.0), feeds(batch, dtype)
    trained = g.train().run("loss", data)
    g.backward("loss")
    expected = gradients(g)
    assert type(g["data_loss"].cache) is not LossInputs
    evaluated = g.eval().run("loss", data)
    assert type(g["data_loss"].cache) is LossInputs
    assert g["drop"].value is g["drop"].inputs[0].value  # the identity, no copy
    g.backward("loss")
    assert np.asarray(evaluated).tobytes() == np.asarray(trained).tobytes()
    for name, grad in gradients(g).items():
        assert grad.dtype == dtype and grad.tobytes() == expected[name].tobytes(), name


def test_plans_of_the_two_modes_are_kept_apart():
    g, data = classifier(np.float64), feeds(32, np.float64)
    g.eval()
    first = g.run("scores", data)
    g.train()
    dropped = g.run("scores", data)
    assert not np.array_equal(first, dropped)  # train mode drops units: its own plan
    assert (g["drop"].cache[1] == 0).any()
    g.eval()
    assert np.array_equal(g.run("scores", data), first)
    keys = [key for key in g.executor._plans if key[0] == "forward"]
    assert sorted(key[-1] for key in keys) == [False, True]


def test_gradcheck_and_drawings_in_eval_mode():
    g, data = classifier(np.float64), feeds(2, np.float64)
    g.eval()
    errors = gn.gradcheck(g, data)
    assert max(errors.values()) < 1e-7
    g.run("loss", data)
    lines = g["data_loss"].gate.summarize_cache(g["data_loss"].cache, ["scores", "y"])
    assert "computed by a backward" in lines[0]
    assert "no mask" in g["drop"].gate.summarize_cache(g["drop"].cache, ["x"])[0]
    source = viz.draw(g).source  # graphviz's text: no 'dot' program needed
    assert "computed by a backward" in source and "no mask" in source
    frames = viz.backward_steps(g, "loss")
    assert {frame.node.name for frame in frames} >= {"data_loss", "scores", "drop"}


def test_a_bad_label_in_eval_mode_is_named_as_in_train_mode():
    g, data = classifier(np.float32), feeds(2, np.float32)
    data["y"] = np.array([0, 7])
    for mode in (True, False):
        g.train(mode)
        with pytest.raises(gn.GraphError, match="7"):
            g.run("loss", data)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_loss_without_its_gradient_has_the_same_loss(dtype):
    rng = np.random.default_rng(2)
    for rows, V in [(1, 1), (1, 10), (7, 3), (50, 65), (3, 1000)]:
        x = (rng.standard_normal((rows, V)) * 5).astype(dtype)
        labels = rng.integers(V, size=rows).astype(np.int64)
        weight = rng.random(rows).astype(dtype)
        loss, dx = _C.softmax_loss(x, labels, weight)
        alone, none = _C.softmax_loss(x, labels, weight, False)
        assert none is None and dx.shape == x.shape
        assert alone == loss
    with pytest.raises(ValueError, match="label"):
        _C.softmax_loss(x, labels + V, weight, False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_temporal_softmax_loss_eval_forward_then_backward(dtype):
    """An LSTM language model's loss: eval mode computes the loss alone, and a backward
    after it gives the train walk's gradients (the LSTM and the loss are the same function
    in both modes), a masked step included."""
    rng = np.random.default_rng(3)
    N, T, D, H, V = 2, 4, 3, 5, 7
    g = gn.Graph(dtype=dtype)
    x = g.input("x", shape=(None, T, D))
    h0 = g.input("h0", shape=(None, H), requires_grad=False)
    h = g.lstm(
        x,
        h0,
        g.param("Wx", rng.standard_normal((D, 4 * H))),
        g.param("Wh", rng.standard_normal((H, 4 * H)) / 3),
        g.param("b", np.zeros(4 * H)),
    )
    scores = g.temporal_affine(
        h, g.param("w", rng.standard_normal((H, V))), g.param("c", np.zeros(V))
    )
    y = g.input("y", shape=(None, T), dtype=np.int64)
    mask = g.input("mask", shape=(None, T), dtype=np.int64)
    g.temporal_softmax_loss(scores, y, mask, name="loss")
    data = {
        "x": rng.standard_normal((N, T, D)).astype(dtype),
        "h0": np.zeros((N, H), dtype),
        "y": rng.integers(V, size=(N, T)),
        "mask": np.array([[1, 1, 1, 0], [1, 1, 1, 1]]),
    }
    trained = g.train().run("loss", data)
    g.backward("loss")
    expected = {name: g[name].grad.copy() for name in ("Wx", "Wh", "b", "w", "c", "x")}
    evaluated = g.eval().run("loss", data)
    assert type(g["loss"].cache) is LossInputs
    lines = g["loss"].gate.summarize_cache(g["loss"].cache, ["scores", "y", "mask"])
    assert "computed by a backward" in lines[0]
    g.backward("loss")
    assert np.asarray(evaluated).tobytes() == np.asarray(trained).tobytes()
    assert np.asarray(g["loss"].value).dtype == dtype
    for name, grad in expected.items():
        assert g[name].grad.tobytes() == grad.tobytes(), name
