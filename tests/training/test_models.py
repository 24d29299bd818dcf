"""graphnet.models: the course's classifiers built as graphs.

Gradients are compared with centred differences in float64 (model.loss's grads against
graphnet.gradient_check, and the whole graph with graphnet.gradcheck); the forward pass
against a plain numpy reference; and training must overfit a tiny set.
"""

import numpy as np
import pytest

import graphnet as gn
from graphnet.gradient_check import eval_numerical_gradient, rel_error
from graphnet.models import FullyConnectedNet, ThreeLayerConvNet, TwoLayerNet
from graphnet.solver import Solver


pytestmark = pytest.mark.usefixtures("one_kernel_thread")


def numeric_grads(model, X, y):
    """d loss / d param by centred differences, through model.loss itself."""
    grads = {}
    for name in model.params:
        f = lambda _: model.loss(X, y)[0]  # noqa: E731
        grads[name] = eval_numerical_gradient(f, model.params[name], verbose=False, h=1e-6)
    return grads


def assert_grads_match(model, X, y, tol=1e-6):
    loss, grads = model.loss(X, y)
    assert set(grads) == set(model.params)
    numeric = numeric_grads(model, X, y)
    for name in model.params:
        # A bias right before batchnorm has a zero gradient: compare it absolutely.
        close = np.max(np.abs(grads[name] - numeric[name])) < 1e-8
        assert close or rel_error(grads[name], numeric[name]) < tol, name


def numpy_softmax_loss(scores, y):
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(y)), y].mean()


# --------------------------------------------------------------------------- TwoLayerNet


def test_two_layer_net_matches_numpy_reference_and_reg_setter():
    rng = np.random.default_rng(0)
    N, D, H, C = 3, 5, 50, 7
    model = TwoLayerNet(input_dim=D, hidden_dim=H, num_classes=C, weight_scale=1e-3)
    W1 = np.linspace(-0.7, 0.3, num=D * H).reshape(D, H)
    b1 = np.linspace(-0.1, 0.9, num=H)
    W2 = np.linspace(-0.3, 0.4, num=H * C).reshape(H, C)
    b2 = np.linspace(-0.9, 0.1, num=C)
    for name, value in dict(W1=W1, b1=b1, W2=W2, b2=b2).items():
        model.params[name] = value
    X = rng.standard_normal((N, D))
    y = np.array([0, 5, 1])
    expected = np.maximum(X @ W1 + b1, 0) @ W2 + b2
    np.testing.assert_allclose(model.loss(X), expected, rtol=1e-12)
    loss, _ = model.loss(X, y)
    np.testing.assert_allclose(loss, numpy_softmax_loss(expected, y), rtol=1e-12)
    model.reg = 1.0  # the course's notebook sets reg on a built model
    loss, _ = model.loss(X, y)
    reference = numpy_softmax_loss(expected, y) + 0.5 * ((W1**2).sum() + (W2**2).sum())
    np.testing.assert_allclose(loss, reference, rtol=1e-12)


def test_two_layer_net_init_and_defaults():
    np.random.seed(0)
    model = TwoLayerNet(input_dim=40, hidden_dim=30, num_classes=10, weight_scale=0.1)
    assert list(model.params) == ["W1", "b1", "W2", "b2"]
    assert model.params["W1"].shape == (40, 30) and model.params["W2"].shape == (30, 10)
    assert np.all(model.params["b1"] == 0) and np.all(model.params["b2"] == 0)
    assert abs(model.params["W1"].std() - 0.1) < 0.01
    assert model.params["W1"].dtype == np.float64  # the course's TwoLayerNet is float64


@pytest.mark.parametrize("reg", [0.0, 0.7])
def test_two_layer_net_gradients(reg):
    np.random.seed(1)
    model = TwoLayerNet(input_dim=6, hidden_dim=8, num_classes=4, weight_scale=0.5, reg=reg)
    X, y = np.random.randn(5, 6), np.random.randint(4, size=5)
    assert_grads_match(model, X, y)


# --------------------------------------------------------------------------- FullyConnectedNet


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(reg=0.0),
        dict(reg=3.14),
        dict(reg=0.5, use_batchnorm=True),
        dict(reg=0.5, dropout=0.3, seed=123),
        dict(reg=0.1, use_batchnorm=True, dropout=0.25, seed=7),
        dict(reg=0.5, normalization="layernorm"),
        dict(reg=0.2, normalization="layernorm", dropout=0.25, seed=3),
    ],
)
@pytest.mark.slow
def test_fully_connected_net_gradients(kwargs):
    np.random.seed(231)
    N, D, C = 4, 9, 5
    model = FullyConnectedNet(
        [7, 6], input_dim=D, num_classes=C, weight_scale=0.3, dtype=np.float64, **kwargs
    )
    X, y = np.random.randn(N, D), np.random.randint(C, size=N)
    assert_grads_match(model, X, y, tol=1e-5)
    errors = gn.gradcheck(model.graph, X=X, y=y)
    assert set(errors) == set(model.params)  # X is data: no gradient, not checked
    if model.use_batchnorm:  # the biases b1, b2 feed batchnorm: zero gradient, see above
        errors = {k: v for k, v in errors.items() if k not in ("b1", "b2")}
    assert max(errors.values()) < 1e-5, errors


def test_fully_connected_net_layout_and_init():
    np.random.seed(0)
    model = FullyConnectedNet(
        [20, 30], input_dim=15, num_classes=4, use_batchnorm=True, weight_scale=0.05
    )
    assert list(model.params) == [
        "W1",
        "b1",
        "gamma1",
        "beta1",
        "W2",
        "b2",
        "gamma2",
        "beta2",
        "W3",
        "b3",
    ]
    shapes = {k: v.shape for k, v in model.params.items()}
    assert shapes["W1"] == (15, 20) and shapes["W2"] == (20, 30) and shapes["W3"] == (30, 4)
    assert shapes["gamma2"] == (30,) and shapes["b3"] == (4,)
    assert np.all(model.params["gamma1"] == 1) and np.all(model.params["beta2"] == 0)
    assert all(v.dtype == np.float32 for v in model.params.values())
    ops = [n.op for n in model.graph.nodes if n.kind == "gate"]
    assert ops.count("batchnorm") == 2 and "dropout" not in ops
    assert model.num_layers == 3


def test_fully_connected_net_newer_course_spelling():
    model = FullyConnectedNet([5], input_dim=3, dropout_keep_ratio=0.75, normalization="batchnorm")
    assert model.use_batchnorm and model.use_dropout
    assert model.graph["dropout1"].op == "dropout"
    assert model.graph["dropout1"].gate.p == pytest.approx(0.25)
    layered = FullyConnectedNet([5, 4], input_dim=3, normalization="layernorm")
    assert [n.op for n in layered.graph.nodes if n.name.startswith("layernorm")] == [
        "layernorm",
        "layernorm",
    ]
    assert not layered.use_batchnorm and set(layered.params) >= {"gamma1", "beta2"}
    with pytest.raises(ValueError, match="dropout"):
        FullyConnectedNet([5], input_dim=3, dropout=1.0)


def test_scores_in_eval_mode_and_mode_restored():
    np.random.seed(3)
    model = FullyConnectedNet(
        [8], input_dim=4, num_classes=3, dropout=0.5, use_batchnorm=True, weight_scale=0.5
    )
    X, y = np.random.randn(16, 4).astype(np.float32), np.random.randint(3, size=16)
    model.loss(X, y)  # train mode: updates the running averages
    assert model.graph.training
    s1, s2 = model.loss(X), model.loss(X)
    np.testing.assert_array_equal(s1, s2)  # eval: no dropout, running averages
    assert model.graph.training  # restored
    model.graph.eval()
    model.loss(X, y)
    assert not model.graph.training
    # eval-mode scores equal the numpy computation with the running statistics
    g = model.graph
    stats = g["batchnorm1"].state
    p = model.params
    h = X @ p["W1"] + p["b1"]
    h = (h - stats["running_mean"]) / np.sqrt(stats["running_var"] + 1e-5)
    h = h * p["gamma1"] + p["beta1"]
    expected = np.maximum(h, 0) @ p["W2"] + p["b2"]
    np.testing.assert_allclose(model.loss(X), expected, rtol=1e-4, atol=1e-5)


def test_unseeded_dropout_stream_exists_before_training():
    np.random.seed(5)
    model = FullyConnectedNet([8], input_dim=4, dropout=0.5)
    assert isinstance(model.graph["dropout1"].state["rng"], np.random.Generator)


# --------------------------------------------------------------------------- ThreeLayerConvNet


@pytest.mark.slow
@pytest.mark.parametrize("reg", [0.0, 0.5])
def test_three_layer_convnet_gradients(reg):
    np.random.seed(0)
    model = ThreeLayerConvNet(
        input_dim=(2, 6, 6),
        num_filters=3,
        filter_size=3,
        hidden_dim=7,
        num_classes=4,
        weight_scale=0.3,
        reg=reg,
        dtype=np.float64,
    )
    X, y = np.random.randn(3, 2, 6, 6), np.random.randint(4, size=3)
    assert_grads_match(model, X, y, tol=1e-5)
    assert max(gn.gradcheck(model.graph, X=X, y=y).values()) < 1e-5


def test_three_layer_convnet_shapes_dtype_and_no_data_gradient():
    np.random.seed(0)
    model = ThreeLayerConvNet(
        input_dim=(3, 16, 16), num_filters=8, filter_size=5, hidden_dim=20, num_classes=10
    )
    shapes = {k: v.shape for k, v in model.params.items()}
    assert shapes == {
        "W1": (8, 3, 5, 5),
        "b1": (8,),
        "W2": (8 * 8 * 8, 20),
        "b2": (20,),
        "W3": (20, 10),
        "b3": (10,),
    }
    X = np.random.randn(4, 3, 16, 16).astype(np.float32)
    scores = model.loss(X)
    assert scores.shape == (4, 10) and scores.dtype == np.float32
    loss, grads = model.loss(X, np.arange(4))
    assert isinstance(loss, float)
    assert all(grads[k].dtype == np.float32 for k in grads)
    assert model.graph["X"].grad is None  # data: no dx computed
    assert not model.graph["X"].requires_grad


def test_fully_connected_net_takes_images_and_checks_their_size():
    model = FullyConnectedNet([5], input_dim=2 * 3 * 3, num_classes=4)
    assert model.loss(np.zeros((6, 2, 3, 3), np.float32)).shape == (6, 4)
    with pytest.raises(gn.GraphError, match="input_dim"):
        model.loss(np.zeros((6, 2, 3, 4), np.float32))


def test_params_is_the_graph_paramdict():
    model = ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=2, filter_size=3, hidden_dim=5)
    assert model.params is model.graph.params
    model.params["b3"] = np.full(10, 2.0)
    np.testing.assert_array_equal(model.graph["b3"].value, np.full(10, 2.0, np.float32))
    assert model.graph["b3"].value.dtype == np.float32


def test_reg_term_is_in_the_graph():
    np.random.seed(0)
    model = ThreeLayerConvNet(
        input_dim=(1, 4, 4), num_filters=2, filter_size=3, hidden_dim=3, reg=0.25, dtype=np.float64
    )
    X, y = np.random.randn(2, 1, 4, 4), np.array([1, 2])
    loss, _ = model.loss(X, y)
    g, p = model.graph, model.params
    penalty = 0.125 * sum((p[w] ** 2).sum() for w in ("W1", "W2", "W3"))
    np.testing.assert_allclose(g["reg_loss"].value, penalty, rtol=1e-12)
    np.testing.assert_allclose(loss, g["data_loss"].value + penalty, rtol=1e-12)
    assert g.sinks == [g["loss"]]


# --------------------------------------------------------------------------- overfitting


@pytest.fixture(scope="module")
def small_digits():
    pytest.importorskip("sklearn")
    from graphnet.data import get_digits_data

    data = get_digits_data(num_training=50, num_validation=50, num_test=0)
    return {k: v for k, v in data.items() if "test" not in k}


def test_fully_connected_net_overfits_50_samples(small_digits):
    np.random.seed(0)
    model = FullyConnectedNet([50, 50], input_dim=64, weight_scale=0.1)
    solver = Solver(
        model,
        small_digits,
        update_rule="adam",
        optim_config={"learning_rate": 1e-2},
        num_epochs=30,
        batch_size=25,
        verbose=False,
        seed=0,
    )
    solver.train()
    # (the final params are the best on validation; the last epoch's are the overfit ones)
    assert solver.train_acc_history[-1] == 1.0


def test_three_layer_convnet_overfits_50_samples(small_digits):
    np.random.seed(0)
    model = ThreeLayerConvNet(
        input_dim=(1, 8, 8), num_filters=8, filter_size=3, hidden_dim=50, weight_scale=0.1
    )
    solver = Solver(
        model,
        small_digits,
        update_rule="adam",
        optim_config={"learning_rate": 1e-2},
        num_epochs=30,
        batch_size=25,
        verbose=False,
        seed=0,
    )
    solver.train()
    # (the final params are the best on validation; the last epoch's are the overfit ones)
    assert solver.train_acc_history[-1] == 1.0
