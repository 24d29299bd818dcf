"""graphnet.cs231n (the 2018+ editions) and graphnet.cs231n.v2017: what differs between
them, the layers the later editions added (layernorm, spatial groupnorm) against PyTorch and
numerical gradients, and the course names graphnet adds (conv_bn_relu, the fast layers'
variants, data_utils, vis_utils)."""

import pickle

import numpy as np
import pytest

import graphnet.cs231n.v2017.layers as layers_2017
from graphnet import models
from graphnet.cs231n import data_utils, fast_layers, layer_utils, layers, vis_utils
from graphnet.cs231n.classifiers.fc_net import FullyConnectedNet
from graphnet.cs231n.v2017.classifiers import fc_net as fc_net_2017
from graphnet.gradient_check import eval_numerical_gradient_array, rel_error

pytestmark = pytest.mark.usefixtures("one_kernel_thread")


def rng(seed):
    return np.random.default_rng(seed)


def numeric(forward, args, dout, index):
    return eval_numerical_gradient_array(lambda _: forward(*args)[0], args[index], dout)


def assert_numerical_gradients(forward, backward, inputs, dout):
    """backward's dx, dgamma, dbeta against centred differences of forward(x, gamma, beta)."""
    _, cache = forward(*inputs)
    grads = backward(dout, cache)
    for index, grad in enumerate(grads):
        assert grad.shape == inputs[index].shape
        np.testing.assert_allclose(
            grad, numeric(forward, inputs, dout, index), rtol=1e-6, atol=1e-9
        )


# ------------------------------------------------------------------ dropout's p


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_seeded_dropout_gives_the_courses_mask_and_leaves_numpy_alone(p):
    x = rng(0).standard_normal((30, 40))
    state = np.random.get_state()
    out, cache = layers.dropout_forward(x, {"mode": "train", "p": p, "seed": 123})
    assert np.array_equal(np.random.get_state()[1], state[1])
    # What the course's 2018+ dropout_forward computes with a seed:
    np.random.seed(123)
    course_mask = (np.random.rand(*x.shape) < p) / p
    np.testing.assert_array_equal(out, x * course_mask)
    np.testing.assert_array_equal(layers.dropout_backward(np.ones_like(x), cache), course_mask)


def test_unseeded_dropout_draws_from_numpys_global_state_as_the_course_does():
    x = np.ones((50, 50))
    np.random.seed(7)
    out, _ = layers.dropout_forward(x, {"mode": "train", "p": 0.3})
    np.random.seed(7)
    np.testing.assert_array_equal(out, (np.random.rand(*x.shape) < 0.3) / 0.3)


def test_both_editions_keep_the_same_units_for_the_same_draws():
    x = rng(1).standard_normal((20, 20))
    kept, _ = layers.dropout_forward(x, {"mode": "train", "p": 0.25, "seed": 5})
    dropped, _ = layers_2017.dropout_forward(x, {"mode": "train", "p": 0.75, "seed": 5})
    np.testing.assert_array_equal(kept, dropped)


def test_p_outside_an_editions_range_names_its_meaning():
    with pytest.raises(ValueError, match=r"KEEPING a unit \(the 2018\+ editions.*\(0, 1\]"):
        layers.dropout_forward(np.ones(3), {"mode": "train", "p": 0})
    with pytest.raises(ValueError, match=r"DROPPING a unit \(the 2017 edition.*\[0, 1\)"):
        layers_2017.dropout_forward(np.ones(3), {"mode": "train", "p": 1})
    with pytest.raises(ValueError, match="needs 'p', the probability of KEEPING"):
        layers.dropout_forward(np.ones(3), {"mode": "train"})
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        layers.dropout_forward(np.ones(3), {"mode": "train", "p": 0.5, "seed": -1})


def test_keep_probability_one_keeps_everything():
    x = rng(2).standard_normal((4, 5)).astype(np.float32)
    out, cache = layers.dropout_forward(x, {"mode": "train", "p": 1})
    np.testing.assert_array_equal(out, x)
    assert out.dtype == np.float32


def test_a_large_seed_is_accepted_and_repeatable():
    x = np.ones((8, 8))
    a, _ = layers_2017.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 2**62 + 3})
    b, _ = layers_2017.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 2**62 + 3})
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ layernorm


def layernorm_inputs(seed, N=6, D=7, dtype=np.float64):
    r = rng(seed)
    return (
        tuple(
            a.astype(dtype)
            for a in (3 * r.standard_normal((N, D)) + 2, r.standard_normal(D), r.standard_normal(D))
        ),
        r.standard_normal((N, D)).astype(dtype),
    )


def test_layernorm_numerical_gradients():
    inputs, dout = layernorm_inputs(3)
    assert_numerical_gradients(
        lambda x, g, b: layers.layernorm_forward(x, g, b, {}),
        layers.layernorm_backward,
        inputs,
        dout,
    )


def test_layernorm_is_the_same_in_train_and_test_mode_and_keeps_no_state():
    (x, gamma, beta), _ = layernorm_inputs(4)
    param = {"mode": "train"}
    train, _ = layers.layernorm_forward(x, gamma, beta, param)
    test, _ = layers.layernorm_forward(x, gamma, beta, {"mode": "test"})
    np.testing.assert_array_equal(train, test)
    assert param == {"mode": "train"}
    # each sample on its own: a sample's output does not depend on the others
    alone, _ = layers.layernorm_forward(x[:1], gamma, beta, {})
    np.testing.assert_allclose(alone, train[:1], rtol=1e-13)


@pytest.mark.torch
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_layernorm_matches_torch(dtype, tol):
    torch = pytest.importorskip("torch")
    (x, gamma, beta), dout = layernorm_inputs(5, dtype=dtype)
    out, cache = layers.layernorm_forward(x, gamma, beta, {"eps": 1e-3})
    dx, dgamma, dbeta = layers.layernorm_backward(dout, cache)
    assert {a.dtype for a in (out, dx, dgamma, dbeta)} == {np.dtype(dtype)}
    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    t_out = torch.nn.functional.layer_norm(tx, (x.shape[1],), tg, tb, eps=1e-3)
    t_out.backward(torch.tensor(dout))
    for ours, theirs in ((out, t_out), (dx, tx.grad), (dgamma, tg.grad), (dbeta, tb.grad)):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=tol, atol=tol)


def test_layernorm_errors_name_the_function_and_shapes():
    (x, gamma, beta), _ = layernorm_inputs(6)
    with pytest.raises(
        ValueError,
        match=r"layernorm_forward: gamma has shape \(3,\), "
        r"expected \(7,\)",
    ):
        layers.layernorm_forward(x, gamma[:3], beta, {})
    with pytest.raises(ValueError, match=r"layernorm_forward: x must be 2-D"):
        layers.layernorm_forward(x[0], gamma, beta, {})
    with pytest.raises(ValueError, match=r"layernorm_forward: eps must be"):
        layers.layernorm_forward(x, gamma, beta, {"eps": 0})
    with pytest.raises(ValueError, match=r"at least one feature"):
        layers.layernorm_forward(np.ones((2, 0)), np.ones(0), np.ones(0), {})
    _, cache = layers.layernorm_forward(x, gamma, beta, {})
    with pytest.raises(ValueError, match=r"layernorm_backward: dout has shape \(6, 6\)"):
        layers.layernorm_backward(np.ones((6, 6)), cache)


def test_layernorm_of_an_empty_batch():
    out, cache = layers.layernorm_forward(np.ones((0, 3)), np.ones(3), np.zeros(3), {})
    dx, dgamma, dbeta = layers.layernorm_backward(np.ones((0, 3)), cache)
    assert out.shape == dx.shape == (0, 3)
    np.testing.assert_array_equal(dgamma, np.zeros(3))


# ------------------------------------------------------------------ spatial groupnorm


def groupnorm_inputs(seed, N=2, C=6, H=4, W=5, gamma_shape=None, dtype=np.float64):
    r = rng(seed)
    shape = gamma_shape or (1, C, 1, 1)
    return (
        tuple(
            a.astype(dtype)
            for a in (
                5 * r.standard_normal((N, C, H, W)) + 12,
                r.standard_normal(shape),
                r.standard_normal(shape),
            )
        ),
        r.standard_normal((N, C, H, W)).astype(dtype),
    )


@pytest.mark.parametrize("G", [1, 2, 3, 6])
@pytest.mark.parametrize("gamma_shape", [(1, 6, 1, 1), (6,)])
def test_groupnorm_numerical_gradients(G, gamma_shape):
    inputs, dout = groupnorm_inputs(7, gamma_shape=gamma_shape)
    assert_numerical_gradients(
        lambda x, g, b: layers.spatial_groupnorm_forward(x, g, b, G, {}),
        layers.spatial_groupnorm_backward,
        inputs,
        dout,
    )


def test_groupnorm_normalizes_each_group_of_each_sample():
    (x, _, _), _ = groupnorm_inputs(8)
    ones, zeros = np.ones((1, 6, 1, 1)), np.zeros((1, 6, 1, 1))
    out, _ = layers.spatial_groupnorm_forward(x, ones, zeros, 3, {})
    groups = out.reshape(2, 3, -1)  # channels 0-1, 2-3, 4-5 of each sample
    np.testing.assert_allclose(groups.mean(axis=2), 0, atol=1e-12)
    np.testing.assert_allclose(groups.std(axis=2), 1, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_groupnorm_matches_torch(dtype, tol):
    torch = pytest.importorskip("torch")
    (x, gamma, beta), dout = groupnorm_inputs(9, gamma_shape=(6,), dtype=dtype)
    out, cache = layers.spatial_groupnorm_forward(x, gamma, beta, 2, {"eps": 1e-4})
    dx, dgamma, dbeta = layers.spatial_groupnorm_backward(dout, cache)
    assert {a.dtype for a in (out, dx, dgamma, dbeta)} == {np.dtype(dtype)}
    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    t_out = torch.nn.functional.group_norm(tx, 2, tg, tb, eps=1e-4)
    t_out.backward(torch.tensor(dout))
    for ours, theirs in ((out, t_out), (dx, tx.grad), (dgamma, tg.grad), (dbeta, tb.grad)):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=tol, atol=tol)


def test_groupnorm_errors_name_the_function_and_shapes():
    (x, gamma, beta), _ = groupnorm_inputs(10)
    forward = layers.spatial_groupnorm_forward
    with pytest.raises(ValueError, match=r"G = 4 groups do not divide the 6 channels"):
        forward(x, gamma, beta, 4, {})
    with pytest.raises(ValueError, match=r"G must be >= 1"):
        forward(x, gamma, beta, 0, {})
    with pytest.raises(ValueError, match=r"G must be an integer"):
        forward(x, gamma, beta, 2.0, {})
    with pytest.raises(
        ValueError,
        match=r"gamma has shape \(1, 5, 1, 1\), expected "
        r"\(1, 6, 1, 1\) or \(6,\)",
    ):
        forward(x, gamma[:, :5], beta, 2, {})
    with pytest.raises(ValueError, match=r"beta has shape \(6,\), expected \(1, 6, 1, 1\)"):
        forward(x, gamma, beta.ravel(), 2, {})
    with pytest.raises(ValueError, match=r"x must be 4-D"):
        forward(x[0], gamma, beta, 2, {})
    with pytest.raises(ValueError, match=r"at least one pixel"):
        forward(np.ones((1, 6, 0, 3)), gamma, beta, 2, {})


# ------------------------------------------------------------------ layer_utils, fast_layers


def test_conv_bn_relu_sandwich_numerically():
    r = rng(11)
    x, w, b = r.standard_normal((2, 3, 5, 5)), r.standard_normal((4, 3, 3, 3)), r.standard_normal(4)
    gamma, beta = r.standard_normal(4), r.standard_normal(4)
    conv_param, bn_param = {"stride": 1, "pad": 1}, {"mode": "train"}
    forward = lambda *a: layer_utils.conv_bn_relu_forward(*a, conv_param, bn_param)  # noqa
    out, cache = forward(x, w, b, gamma, beta)
    dout = r.standard_normal(out.shape)
    dx, dw, db, dgamma, dbeta = layer_utils.conv_bn_relu_backward(dout, cache)
    args = (x, w, b, gamma, beta)
    for index, grad in [(0, dx), (1, dw), (3, dgamma), (4, dbeta)]:
        assert rel_error(grad, numeric(forward, args, dout, index)) < 1e-7
    # b is cancelled by the batch mean: its gradient is zero up to rounding
    np.testing.assert_allclose(db, 0, atol=1e-12)
    naive = np.maximum(
        0,
        layers.spatial_batchnorm_forward(
            layers.conv_forward_naive(x, w, b, conv_param)[0], gamma, beta, {"mode": "train"}
        )[0],
    )
    np.testing.assert_allclose(out, naive, rtol=1e-10, atol=1e-12)


def test_the_courses_fast_layer_variants_share_one_cache():
    r = rng(12)
    x, w, b = r.standard_normal((2, 3, 8, 8)), r.standard_normal((4, 3, 3, 3)), r.standard_normal(4)
    conv_param = {"stride": 1, "pad": 1}
    out, cache = fast_layers.conv_forward_strides(x, w, b, conv_param)
    dout = r.standard_normal(out.shape)
    for backward in (
        fast_layers.conv_backward_im2col,
        fast_layers.conv_backward_strides,
        fast_layers.conv_backward_fast,
    ):
        for ours, reference in zip(
            backward(dout, cache),
            layers.conv_backward_naive(dout, layers.conv_forward_naive(x, w, b, conv_param)[1]),
        ):
            np.testing.assert_allclose(ours, reference, rtol=1e-10, atol=1e-12)
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    pooled, pool_cache = fast_layers.max_pool_forward_reshape(x, pool_param)
    np.testing.assert_array_equal(pooled, fast_layers.max_pool_forward_im2col(x, pool_param)[0])
    dpool = r.standard_normal(pooled.shape)
    np.testing.assert_array_equal(
        fast_layers.max_pool_backward_im2col(dpool, pool_cache),
        fast_layers.max_pool_backward_reshape(dpool, pool_cache),
    )


# ------------------------------------------------------------------ FullyConnectedNet


def test_later_editions_fully_connected_net_takes_the_keep_probability():
    for kwargs in (
        {"dropout": 0.25},
        {"dropout_keep_ratio": 0.25},
        {"dropout_keep_ratio": 0.25, "dropout": 0.25},
    ):
        model = FullyConnectedNet([5, 4], input_dim=3, **kwargs)
        assert model.use_dropout and model.graph["dropout2"].gate.p == pytest.approx(0.75)
    model = FullyConnectedNet([5], input_dim=3, normalization="batchnorm")
    assert not model.use_dropout and model.use_batchnorm and model.normalization == "batchnorm"
    assert "dropout" not in [n.op for n in model.graph.nodes]
    positional = FullyConnectedNet([5], 3, 4, 0.5, "batchnorm")
    assert positional.config["dropout_keep_ratio"] == 0.5
    assert positional.config["normalization"] == "batchnorm"


def test_each_edition_refuses_the_others_arguments_with_a_pointer():
    with pytest.raises(TypeError, match="use_batchnorm= is the 2017 edition's.*v2017"):
        FullyConnectedNet([5], input_dim=3, use_batchnorm=True)
    with pytest.raises(ValueError, match=r"probability of keeping a unit must be in \(0, 1\]"):
        FullyConnectedNet([5], input_dim=3, dropout=0)
    with pytest.raises(ValueError, match="two names of the probability of keeping"):
        FullyConnectedNet([5], input_dim=3, dropout=0.5, dropout_keep_ratio=0.25)
    with pytest.raises(ValueError, match="must be None, 'batchnorm' or 'layernorm'"):
        FullyConnectedNet([5], input_dim=3, normalization="groupnorm")
    with pytest.raises(ValueError, match=r"dropout=1: .*2017 edition.*DROPPING.*graphnet.cs231n"):
        fc_net_2017.FullyConnectedNet([5], input_dim=3, dropout=1)
    with pytest.raises(ValueError, match="disagree"):
        fc_net_2017.FullyConnectedNet([5], input_dim=3, dropout=0.5, dropout_keep_ratio=0.75)
    with pytest.raises(ValueError, match="disagree"):
        fc_net_2017.FullyConnectedNet(
            [5], input_dim=3, use_batchnorm=True, normalization="layernorm"
        )


def test_the_config_reads_alike_in_both_editions():
    np.random.seed(0)
    later = FullyConnectedNet([5], input_dim=3, dropout=0.75, normalization="batchnorm", seed=1)
    np.random.seed(0)
    first = fc_net_2017.FullyConnectedNet(
        [5], input_dim=3, dropout=0.25, use_batchnorm=True, seed=1
    )
    assert later.config == first.config
    assert fc_net_2017.FullyConnectedNet is models.FullyConnectedNet
    for cls in (models.FullyConnectedNet, FullyConnectedNet):
        rebuilt = cls(**later.config)
        assert rebuilt.config == later.config
        assert [n.op for n in rebuilt.graph.nodes] == [n.op for n in later.graph.nodes]
    assert "dropout_keep_ratio=0.75" in repr(later)


# ------------------------------------------------------------------ data_utils, vis_utils


def test_get_cifar10_data_reads_the_courses_dataset_folder(tmp_path, monkeypatch):
    folder = tmp_path / data_utils.COURSE_CIFAR10_DIR
    folder.mkdir(parents=True)
    for index, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        r = rng(index)
        batch = {
            "data": r.integers(0, 255, size=(20, 3072), dtype=np.uint8),
            "labels": [int(label) for label in r.integers(0, 10, size=20)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRAPHNET_DATA", str(tmp_path / "elsewhere"))
    data = data_utils.get_CIFAR10_data(num_training=60, num_validation=20, num_test=10)
    assert data["X_train"].shape == (60, 3, 32, 32) and data["X_val"].shape == (20, 3, 32, 32)
    assert data["X_test"].shape == (10, 3, 32, 32) and data["y_train"].shape == (60,)
    X_train, y_train, X_test, y_test = data_utils.load_CIFAR10(folder)
    assert X_train.shape == (100, 32, 32, 3) and X_train.dtype == np.float64
    assert X_test.shape == (20, 32, 32, 3) and y_test.shape == (20,)
    np.testing.assert_allclose(
        data["X_train"],
        (X_train[:60] - X_train[:60].mean(axis=0)).transpose(0, 3, 1, 2),
        rtol=1e-5,
        atol=1e-3,
    )


def test_visualize_grid_tiles_filters():
    grid = vis_utils.visualize_grid(rng(13).standard_normal((5, 3, 3, 3)))
    assert grid.shape == (3 * 3 + 2, 3 * 3 + 2, 3) and grid.max() == 255
