"""graphnet.layers and graphnet.layer_utils against numerical gradients, hand-computed
values, independent numpy/scipy formulations written here, and PyTorch when installed."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from graphnet import layer_utils as LU
from graphnet import layers as L
from graphnet.kernels import _C
from graphnet.gradient_check import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    rel_error,
)


def rng(seed=0):
    return np.random.default_rng(seed)


def numeric_grads(forward, args, dout, wrt, h=1e-5):
    """Numerical gradients of sum(forward(*args)[0] * dout) with respect to args[i], i in wrt."""
    return [
        eval_numerical_gradient_array(lambda _: forward(*args)[0], args[i], dout, h=h) for i in wrt
    ]


def assert_grads(analytic, numeric, tol=1e-7):
    for a, n in zip(analytic, numeric):
        assert a.shape == n.shape
        assert rel_error(a, n) < tol, rel_error(a, n)


# Independent references: sliding windows + einsum, no loops shared with the library.


def conv_reference(x, w, b, stride, pad):
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    HH, WW = w.shape[2:]
    win = sliding_window_view(xp, (HH, WW), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,fcij->nfhw", win, w) + b[None, :, None, None]


def pool_reference(x, ph, pw, stride):
    win = sliding_window_view(x, (ph, pw), axis=(2, 3))[:, :, ::stride, ::stride]
    return win.max(axis=(-2, -1))


# ------------------------------------------------------------------ affine and relu


def test_affine_forward_flattens_each_sample():
    x = rng().standard_normal((2, 4, 5, 6))
    w = rng(1).standard_normal((120, 3))
    b = rng(2).standard_normal(3)
    out, _ = L.affine_forward(x, w, b)
    expected = np.array(
        [
            [sum(x[n].ravel()[d] * w[d, m] for d in range(120)) + b[m] for m in range(3)]
            for n in range(2)
        ]
    )
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_affine_backward_numerically():
    r = rng(3)
    x, w, b = r.standard_normal((10, 2, 3)), r.standard_normal((6, 5)), r.standard_normal(5)
    dout = r.standard_normal((10, 5))
    _, cache = L.affine_forward(x, w, b)
    dx, dw, db = L.affine_backward(dout, cache)
    assert dx.shape == x.shape
    assert_grads((dx, dw, db), numeric_grads(L.affine_forward, (x, w, b), dout, (0, 1, 2)))


def test_affine_errors_name_the_function_and_shapes():
    x, w, b = np.ones((2, 3, 4)), np.ones((12, 5)), np.ones(5)
    with pytest.raises(ValueError, match=r"affine_forward: x must have shape \(N, d1, ...\)"):
        L.affine_forward(np.ones(12), w, b)
    with pytest.raises(ValueError, match=r"flattens to 12 features but w has shape \(10, 5\)"):
        L.affine_forward(x, np.ones((10, 5)), b)
    with pytest.raises(ValueError, match=r"affine_forward: b has shape \(4,\), expected \(5,\)"):
        L.affine_forward(x, w, np.ones(4))
    with pytest.raises(ValueError, match=r"affine_forward: w must be 2-D"):
        L.affine_forward(x, np.ones(12), b)
    _, cache = L.affine_forward(x, w, b)
    with pytest.raises(ValueError, match=r"affine_backward: dout has shape \(2, 4\)"):
        L.affine_backward(np.ones((2, 4)), cache)


def test_affine_promotes_integers_to_float64():
    out, _ = L.affine_forward(np.ones((2, 3), dtype=int), np.ones((3, 2)), np.zeros(2))
    assert out.dtype == np.float64


def test_relu_forward_and_backward():
    x = np.linspace(-0.5, 0.5, num=12).reshape(3, 4)
    out, cache = L.relu_forward(x)
    np.testing.assert_array_equal(out, np.where(x > 0, x, 0))
    # keep every input away from the kink so the centered difference is exact
    x = rng(4).standard_normal((5, 6))
    x[np.abs(x) < 0.1] = 0.5
    dout = rng(5).standard_normal((5, 6))
    _, cache = L.relu_forward(x)
    assert_grads([L.relu_backward(dout, cache)], numeric_grads(L.relu_forward, (x,), dout, (0,)))


# ------------------------------------------------------------------ losses

LOSSES = [L.softmax_loss, L.svm_loss]


def loss_inputs(seed=6, N=50, C=10):
    r = rng(seed)
    return 0.001 * r.standard_normal((N, C)), r.integers(C, size=N)


def test_losses_at_small_scores():
    x, y = loss_inputs()
    assert L.softmax_loss(x, y)[0] == pytest.approx(np.log(10), rel=1e-2)
    assert L.svm_loss(x, y)[0] == pytest.approx(9.0, rel=1e-2)


def test_loss_values_by_hand():
    x, y = np.array([[1.0, 2.0, 0.0], [0.5, 0.0, 3.0]]), np.array([1, 0])
    # softmax: mean of -log(e^x_y / sum e^x)
    expected = np.mean([np.log(np.exp(x[i]).sum()) - x[i, y[i]] for i in range(2)])
    assert L.softmax_loss(x, y)[0] == pytest.approx(expected, rel=1e-14)
    # svm: row 0: max(0, 1-2+1) + max(0, 0-2+1) = 0; row 1: max(0, 0-0.5+1) + (3-0.5+1) = 4
    assert L.svm_loss(x, y)[0] == pytest.approx(2.0, rel=1e-14)


@pytest.mark.parametrize("loss", LOSSES)
def test_loss_gradients_numerically(loss):
    x, y = loss_inputs(N=20, C=7)
    x *= 1000  # spread scores so no svm margin sits within h of its kink
    _, dx = loss(x, y)
    dx_num = eval_numerical_gradient(lambda _: loss(x, y)[0], x, verbose=False)
    assert rel_error(dx, dx_num) < 1e-7


def test_softmax_loss_is_numerically_stable():
    x = np.array([[1000.0, 0.0, -1000.0], [-1000.0, -1000.0, 1000.0]])
    loss, dx = L.softmax_loss(x, np.array([0, 0]))
    assert np.isfinite(dx).all()
    assert loss == pytest.approx(1000.0)  # row 0 costs 0, row 1 costs 2000
    np.testing.assert_allclose(dx, [[0, 0, 0], [-0.5, 0, 0.5]], atol=1e-12)


@pytest.mark.parametrize("loss", LOSSES)
def test_loss_label_errors(loss):
    name = loss.__name__
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match=rf"{name}: labels must lie in \[0, 4\).*max 4"):
        loss(x, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match=rf"{name}: labels must lie in \[0, 4\).*min -1"):
        loss(x, np.array([0, -1, 2]))
    with pytest.raises(ValueError, match=rf"{name}: y has shape \(2,\), expected \(3,\)"):
        loss(x, np.array([0, 1]))
    with pytest.raises(ValueError, match=rf"{name}: labels y must be integers"):
        loss(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=rf"{name}: x must be 2-D"):
        loss(np.zeros(4), np.array([0]))


@pytest.mark.torch
def test_losses_match_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, y = loss_inputs(seed=7, N=16, C=5)
    x *= 500
    for ours, theirs, scale in [
        (L.softmax_loss, F.cross_entropy, 1),
        # torch averages the hinge terms over classes too
        (L.svm_loss, F.multi_margin_loss, x.shape[1]),
    ]:
        tx = torch.tensor(x, requires_grad=True)
        t_loss = theirs(tx, torch.tensor(y)) * scale
        t_loss.backward()
        loss, dx = ours(x, y)
        assert loss == pytest.approx(t_loss.item(), rel=1e-12)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------ batchnorm


def bn_inputs(seed=8, N=4, D=5):
    r = rng(seed)
    return 5 * r.standard_normal((N, D)) + 12, r.standard_normal(D), r.standard_normal(D)


def test_batchnorm_train_normalizes_each_feature():
    x, _, _ = bn_inputs(N=200, D=3)
    gamma, beta = np.array([1.0, 2.0, 3.0]), np.array([11.0, 12.0, 13.0])
    out, _ = L.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    np.testing.assert_allclose(out.mean(axis=0), beta, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=0), gamma, rtol=1e-5)  # eps shrinks it a hair


@pytest.mark.parametrize("mode", ["train", "test"])
def test_batchnorm_backward_numerically(mode):
    x, gamma, beta = bn_inputs()
    bn_param = {"mode": mode, "running_mean": np.full(5, 11.0), "running_var": np.full(5, 20.0)}
    dout = rng(9).standard_normal(x.shape)
    _, cache = L.batchnorm_forward(x, gamma, beta, dict(bn_param))
    numeric = numeric_grads(
        lambda *a: L.batchnorm_forward(*a, dict(bn_param)), (x, gamma, beta), dout, (0, 1, 2)
    )
    assert_grads(L.batchnorm_backward(dout, cache), numeric)
    assert_grads(L.batchnorm_backward_alt(dout, cache), numeric)


def test_batchnorm_backward_alt_equals_the_graph_version():
    x, gamma, beta = bn_inputs(seed=10, N=64, D=30)
    dout = rng(11).standard_normal(x.shape)
    _, cache = L.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    for a, b in zip(L.batchnorm_backward(dout, cache), L.batchnorm_backward_alt(dout, cache)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_batchnorm_running_statistics_after_three_steps():
    batches = [bn_inputs(seed=s, N=6, D=4)[0] for s in (12, 13, 14)]
    gamma, beta = np.ones(4), np.zeros(4)
    bn_param = {"mode": "train"}
    for x in batches:
        L.batchnorm_forward(x, gamma, beta, bn_param)
    # From zeros with momentum 0.9: 0.1 * (0.81 * s1 + 0.9 * s2 + s3)
    means = [x.sum(axis=0) / 6 for x in batches]
    variances = [((x - m) ** 2).sum(axis=0) / 6 for x, m in zip(batches, means)]  # biased
    for key, stats in (("running_mean", means), ("running_var", variances)):
        expected = 0.1 * (0.81 * stats[0] + 0.9 * stats[1] + stats[2])
        np.testing.assert_allclose(bn_param[key], expected, rtol=1e-12)


def test_batchnorm_custom_momentum_and_eps():
    x, gamma, beta = bn_inputs()
    bn_param = {
        "mode": "train",
        "momentum": 0.5,
        "eps": 1e-3,
        "running_mean": np.ones(5),
        "running_var": np.ones(5),
    }
    out, _ = L.batchnorm_forward(x, gamma, beta, bn_param)
    np.testing.assert_allclose(bn_param["running_mean"], 0.5 + 0.5 * x.mean(axis=0))
    expected = gamma * (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + 1e-3) + beta
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_batchnorm_test_mode_uses_running_statistics():
    x, gamma, beta = bn_inputs()
    mean, var = np.arange(5.0), np.arange(1.0, 6.0)
    bn_param = {"mode": "test", "running_mean": mean.copy(), "running_var": var.copy()}
    out, _ = L.batchnorm_forward(x, gamma, beta, bn_param)
    np.testing.assert_allclose(out, gamma * (x - mean) / np.sqrt(var + 1e-5) + beta, rtol=1e-12)
    np.testing.assert_array_equal(bn_param["running_mean"], mean)  # untouched
    np.testing.assert_array_equal(bn_param["running_var"], var)


def test_batchnorm_creates_running_stats_in_x_dtype():
    x = bn_inputs()[0].astype(np.float32)
    bn_param = {"mode": "train"}
    L.batchnorm_forward(x, np.ones(5, np.float32), np.zeros(5, np.float32), bn_param)
    for key in ("running_mean", "running_var"):
        assert bn_param[key].shape == (5,) and bn_param[key].dtype == np.float32


def test_batchnorm_errors():
    x = np.ones((4, 5))
    with pytest.raises(
        ValueError, match=r"batchnorm_forward: gamma has shape \(4,\), expected \(5,\)"
    ):
        L.batchnorm_forward(x, np.ones(4), np.ones(5), {"mode": "train"})
    with pytest.raises(ValueError, match=r"batchnorm_forward: mode must be 'train' or 'test'"):
        L.batchnorm_forward(x, np.ones(5), np.ones(5), {"mode": "eval"})
    with pytest.raises(ValueError, match=r"batchnorm_forward: x must be 2-D"):
        L.batchnorm_forward(np.ones((2, 2, 5)), np.ones(5), np.ones(5), {"mode": "train"})
    with pytest.raises(ValueError, match=r"bn_param\['running_var'\] has shape \(3,\)"):
        L.batchnorm_forward(x, np.ones(5), np.ones(5), {"mode": "test", "running_var": np.ones(3)})


@pytest.mark.torch
def test_batchnorm_matches_torch():
    torch = pytest.importorskip("torch")
    x, gamma, beta = bn_inputs(seed=15, N=8, D=6)
    dout = rng(16).standard_normal(x.shape)
    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    t_mean, t_var = torch.zeros(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    t_out = torch.nn.functional.batch_norm(
        tx, t_mean, t_var, tg, tb, training=True, momentum=0.1, eps=1e-5
    )  # torch's momentum = 1 - ours
    t_out.backward(torch.tensor(dout))
    bn_param = {"mode": "train"}
    out, cache = L.batchnorm_forward(x, gamma, beta, bn_param)
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    for ours, theirs in zip(L.batchnorm_backward(dout, cache), (tx, tg, tb)):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(bn_param["running_mean"], t_mean.numpy(), rtol=1e-12)
    # torch keeps the unbiased variance in its running average; the course keeps the biased one
    np.testing.assert_allclose(bn_param["running_var"] * 8 / 7, t_var.numpy(), rtol=1e-12)


# ------------------------------------------------------------------ spatial batchnorm


def spatial_inputs(seed=17):
    r = rng(seed)
    return 4 * r.standard_normal((2, 3, 4, 5)), r.standard_normal(3), r.standard_normal(3)


def test_spatial_batchnorm_normalizes_each_channel():
    x, _, _ = spatial_inputs()
    gamma, beta = np.array([3.0, 4.0, 5.0]), np.array([6.0, 7.0, 8.0])
    bn_param = {"mode": "train"}
    out, _ = L.spatial_batchnorm_forward(x, gamma, beta, bn_param)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), beta, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), gamma, rtol=1e-5)
    np.testing.assert_allclose(bn_param["running_mean"], 0.1 * x.mean(axis=(0, 2, 3)))


def test_spatial_batchnorm_backward_numerically():
    x, gamma, beta = spatial_inputs(seed=18)
    dout = rng(19).standard_normal(x.shape)
    _, cache = L.spatial_batchnorm_forward(x, gamma, beta, {"mode": "train"})
    numeric = numeric_grads(
        lambda *a: L.spatial_batchnorm_forward(*a, {"mode": "train"}),
        (x, gamma, beta),
        dout,
        (0, 1, 2),
    )
    # dx sums to zero over each channel's 40 entries, so some entries are tiny and carry
    # a rounding error near 1e-7 relative; the course reports the same order here.
    assert_grads(L.spatial_batchnorm_backward(dout, cache), numeric, tol=1e-6)


@pytest.mark.torch
def test_spatial_batchnorm_matches_torch_in_both_modes():
    torch = pytest.importorskip("torch")
    x, gamma, beta = spatial_inputs(seed=20)
    running = {"mode": "train", "running_mean": np.ones(3), "running_var": np.full(3, 2.0)}
    for training in (True, False):
        bn_param = dict(running, mode="train" if training else "test")
        t_args = [torch.tensor(bn_param[k]) for k in ("running_mean", "running_var")]
        t_out = torch.nn.functional.batch_norm(
            torch.tensor(x), *t_args, torch.tensor(gamma), torch.tensor(beta), training=training
        )
        out, _ = L.spatial_batchnorm_forward(x, gamma, beta, bn_param)
        np.testing.assert_allclose(out, t_out.numpy(), rtol=1e-10, atol=1e-12)


def test_spatial_batchnorm_rank_error():
    with pytest.raises(ValueError, match=r"spatial_batchnorm_forward: x must be 4-D"):
        L.spatial_batchnorm_forward(np.ones((2, 3)), np.ones(3), np.ones(3), {})


# ------------------------------------------------------------------ dropout


@pytest.mark.parametrize("p", [0.25, 0.4, 0.7])
def test_dropout_drops_a_fraction_p_and_preserves_the_mean(p):
    x = rng(21).standard_normal((400, 500)) + 10
    out, _ = L.dropout_forward(x, {"mode": "train", "p": p, "seed": 123})
    assert np.mean(out == 0) == pytest.approx(p, abs=0.01)
    assert out.mean() == pytest.approx(x.mean(), rel=0.01)
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p), rtol=1e-14)


def test_dropout_seed_makes_the_mask_repeatable_without_touching_global_state():
    x = np.ones((50, 40))
    state = np.random.get_state()
    a, _ = L.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 1})
    b, _ = L.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 1})
    c, _ = L.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 2})
    after = np.random.get_state()
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(state[1], after[1]) and state[2:] == after[2:]


def test_dropout_without_seed_follows_np_random_seed():
    x = np.ones((20, 20))
    outs = []
    for _ in range(2):
        np.random.seed(231)
        outs.append(L.dropout_forward(x, {"mode": "train", "p": 0.5})[0])
    assert np.array_equal(*outs)


def test_dropout_test_mode_and_p_zero_are_identity():
    x = rng(22).standard_normal((5, 6))
    out, cache = L.dropout_forward(x, {"mode": "test", "p": 0.9})
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(L.dropout_backward(2 * x, cache), 2 * x)
    out, _ = L.dropout_forward(x, {"mode": "train", "p": 0.0, "seed": 0})
    np.testing.assert_array_equal(out, x)


def test_dropout_backward_uses_the_mask():
    x = rng(23).standard_normal((10, 10)) + 10
    dout = rng(24).standard_normal((10, 10))
    param = {"mode": "train", "p": 0.3, "seed": 5}
    out, cache = L.dropout_forward(x, param)
    dx = L.dropout_backward(dout, cache)
    np.testing.assert_array_equal(dx == 0, out == 0)
    np.testing.assert_allclose(dx[out != 0], dout[out != 0] / 0.7, rtol=1e-14)
    dx_num = eval_numerical_gradient_array(lambda _: L.dropout_forward(x, param)[0], x, dout)
    assert rel_error(dx, dx_num) < 1e-7


@pytest.mark.parametrize("p", [1, 1.0, -0.1, 1.5, float("nan")])
def test_dropout_rejects_p_outside_0_1(p):
    with pytest.raises(
        ValueError,
        match=r"dropout_forward: p is the probability of DROPPING a "
        r"unit \(the 2017 edition.*must be in \[0, 1\)",
    ):
        L.dropout_forward(np.ones(3), {"mode": "train", "p": p})


def test_dropout_parameter_errors():
    with pytest.raises(ValueError, match="dropout_forward: dropout_param needs 'p'"):
        L.dropout_forward(np.ones(3), {"mode": "train"})
    with pytest.raises(ValueError, match="dropout_forward: mode must be 'train' or 'test'"):
        L.dropout_forward(np.ones(3), {"mode": "eval", "p": 0.5})


# ------------------------------------------------------------------ naive convolution

# (N, C, H, W, F, HH, WW, stride, pad): square, uneven, strides that do not tile the input
CONV_CASES = [
    (2, 3, 5, 5, 4, 3, 3, 1, 0),
    (2, 3, 4, 4, 3, 4, 4, 2, 1),
    (3, 2, 7, 6, 2, 3, 2, 2, 1),
    (1, 2, 6, 7, 3, 4, 3, 2, 0),
    (2, 1, 5, 4, 2, 1, 1, 3, 2),
]


def conv_inputs(case, seed=25):
    N, C, H, W, F, HH, WW, stride, pad = case
    r = rng(seed)
    return (
        r.standard_normal((N, C, H, W)),
        r.standard_normal((F, C, HH, WW)),
        r.standard_normal(F),
        {"stride": stride, "pad": pad},
    )


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_forward_matches_sliding_window_reference(case):
    x, w, b, param = conv_inputs(case)
    out, _ = L.conv_forward_naive(x, w, b, param)
    s, p = param["stride"], param["pad"]
    H_out = 1 + (x.shape[2] + 2 * p - w.shape[2]) // s
    W_out = 1 + (x.shape[3] + 2 * p - w.shape[3]) // s
    assert out.shape == (x.shape[0], w.shape[0], H_out, W_out)
    np.testing.assert_allclose(out, conv_reference(x, w, b, s, p), rtol=1e-12, atol=1e-12)


def test_conv_forward_matches_scipy_correlate():
    signal = pytest.importorskip("scipy.signal")
    x, w, b, param = conv_inputs(CONV_CASES[0], seed=26)
    out, _ = L.conv_forward_naive(x, w, b, param)
    expected = np.array(
        [
            [
                sum(signal.correlate(x[n, c], w[f, c], mode="valid") for c in range(x.shape[1]))
                + b[f]
                for f in range(w.shape[0])
            ]
            for n in range(x.shape[0])
        ]
    )
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_backward_numerically(case):
    x, w, b, param = conv_inputs(case, seed=27)
    out, cache = L.conv_forward_naive(x, w, b, param)
    dout = rng(28).standard_normal(out.shape)
    # The convolution is linear in each argument, so the centered difference has no
    # truncation error at any h; a larger h shrinks the rounding error, which otherwise
    # dominates the relative error of gradient entries that happen to be near zero.
    numeric = numeric_grads(
        lambda *a: L.conv_forward_naive(*a, param), (x, w, b), dout, (0, 1, 2), h=1e-3
    )
    assert_grads(L.conv_backward_naive(dout, cache), numeric)


@pytest.mark.torch
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matches_torch(case):
    torch = pytest.importorskip("torch")
    x, w, b, param = conv_inputs(case, seed=29)
    out, cache = L.conv_forward_naive(x, w, b, param)
    dout = rng(30).standard_normal(out.shape)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    t_out = torch.nn.functional.conv2d(tx, tw, tb, stride=param["stride"], padding=param["pad"])
    t_out.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    for ours, theirs in zip(L.conv_backward_naive(dout, cache), (tx, tw, tb)):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_conv_errors():
    x, w, b = np.ones((2, 3, 5, 5)), np.ones((4, 3, 3, 3)), np.ones(4)
    cases = [
        ((x, w, b, {"stride": 0, "pad": 0}), r"conv_forward_naive: stride must be >= 1, got 0"),
        ((x, w, b, {"stride": 1, "pad": -1}), r"conv_forward_naive: pad must be >= 0, got -1"),
        ((x, w, b, {"stride": 1.5, "pad": 0}), r"stride must be an integer"),
        (
            (x, np.ones((4, 3, 8, 3)), b, {"stride": 1, "pad": 1}),
            r"window height 8 is larger than the \(padded\) input height 7",
        ),
        (
            (x, np.ones((4, 2, 3, 3)), b, {}),
            r"x of shape \(2, 3, 5, 5\) has 3 channels but w of shape \(4, 2, 3, 3\) expects 2",
        ),
        ((x[0], w, b, {}), r"conv_forward_naive: x must be 4-D images \(N, C, H, W\)"),
        ((x, w, np.ones(3), {}), r"conv_forward_naive: b has shape \(3,\), expected \(4,\)"),
        (
            (x, w, b, {"stride": 1, "pad": 2**31}),
            r"conv_forward_naive: pad 2147483648 makes the zero-padded x "
            r"\(2, 3, 4294967301, 4294967301\) larger than memory can address",
        ),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            L.conv_forward_naive(*args)
    out, cache = L.conv_forward_naive(x, w, b, {"stride": 1, "pad": 1})
    with pytest.raises(ValueError, match=r"conv_backward_naive: dout has shape \(2, 4, 3, 3\)"):
        L.conv_backward_naive(np.ones((2, 4, 3, 3)), cache)
    cache[3]["pad"] = 2**31  # a cache edited by hand: backward pads x in memory too
    with pytest.raises(ValueError, match=r"conv_backward_naive: pad 2147483648 makes the"):
        L.conv_backward_naive(out, cache)


# ------------------------------------------------------------------ naive max pooling

# (N, C, H, W, pool_height, pool_width, stride): tiling, overlapping, uneven
POOL_CASES = [
    (2, 3, 4, 4, 2, 2, 2),
    (2, 2, 5, 6, 3, 2, 1),
    (1, 3, 7, 8, 2, 3, 2),
    (2, 1, 5, 5, 3, 3, 2),
]


def pool_inputs(case, seed=31):
    N, C, H, W, ph, pw, stride = case
    x = rng(seed).standard_normal((N, C, H, W))
    return x, {"pool_height": ph, "pool_width": pw, "stride": stride}


@pytest.mark.parametrize("case", POOL_CASES)
def test_pool_forward_matches_sliding_window_reference(case):
    x, param = pool_inputs(case)
    out, _ = L.max_pool_forward_naive(x, param)
    expected = pool_reference(x, param["pool_height"], param["pool_width"], param["stride"])
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("case", POOL_CASES)
def test_pool_backward_numerically(case):
    x, param = pool_inputs(case, seed=32)
    out, cache = L.max_pool_forward_naive(x, param)
    dout = rng(33).standard_normal(out.shape)
    numeric = numeric_grads(lambda a: L.max_pool_forward_naive(a, param), (x,), dout, (0,))
    assert_grads([L.max_pool_backward_naive(dout, cache)], numeric)


@pytest.mark.torch
@pytest.mark.parametrize("case", POOL_CASES)
def test_pool_matches_torch(case):
    torch = pytest.importorskip("torch")
    x, param = pool_inputs(case, seed=34)
    out, cache = L.max_pool_forward_naive(x, param)
    dout = rng(35).standard_normal(out.shape)
    tx = torch.tensor(x, requires_grad=True)
    t_out = torch.nn.functional.max_pool2d(
        tx, (param["pool_height"], param["pool_width"]), stride=param["stride"]
    )
    t_out.backward(torch.tensor(dout))
    np.testing.assert_array_equal(out, t_out.detach().numpy())
    np.testing.assert_allclose(L.max_pool_backward_naive(dout, cache), tx.grad.numpy(), rtol=1e-14)


def test_pool_ties_send_the_gradient_to_the_first_maximum():
    x = np.array([[1.0, 3.0, 5.0, 5.0], [3.0, 0.0, 5.0, 5.0]])[None, None]
    _, cache = L.max_pool_forward_naive(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    dx = L.max_pool_backward_naive(np.array([[[[10.0, 20.0]]]]), cache)
    np.testing.assert_array_equal(dx[0, 0], [[0, 10, 20, 0], [0, 0, 0, 0]])


def test_overlapping_pool_windows_add_their_gradients():
    x = np.array([[0.0, 9.0, 1.0]])[None, None]  # the 9 is the max of both windows
    _, cache = L.max_pool_forward_naive(x, {"pool_height": 1, "pool_width": 2, "stride": 1})
    dx = L.max_pool_backward_naive(np.array([[[[2.0, 3.0]]]]), cache)
    np.testing.assert_array_equal(dx[0, 0], [[0, 5, 0]])


def test_pool_errors():
    x = np.ones((1, 1, 3, 4))
    for param, message in [
        (
            {"pool_height": 4, "pool_width": 2, "stride": 1},
            r"window height 4 is larger than the \(padded\) input height 3",
        ),
        (
            {"pool_height": 2, "pool_width": 2, "stride": 0},
            r"max_pool_forward_naive: stride must be >= 1, got 0",
        ),
        ({"pool_height": 0, "pool_width": 2, "stride": 1}, r"pool_height must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            L.max_pool_forward_naive(x, param)
    with pytest.raises(ValueError, match=r"max_pool_forward_naive: x must be 4-D"):
        L.max_pool_forward_naive(np.ones((3, 4)), {})


# ------------------------------------------------------------------ float32 stays float32


def _affine(a):
    out, cache = L.affine_forward(a["x4"], a["w"], a["b"])
    return (out, *L.affine_backward(a["dout2"], cache))


def _relu(a):
    out, cache = L.relu_forward(a["x4"])
    return out, L.relu_backward(a["x4"], cache)


def _losses(a):
    return L.softmax_loss(a["x2"], a["y"])[1], L.svm_loss(a["x2"], a["y"])[1]


def _batchnorm(a):
    bn_param = {"mode": "train"}
    out, cache = L.batchnorm_forward(a["x2"], a["g"], a["be"], bn_param)
    return (
        out,
        *L.batchnorm_backward(a["x2"], cache),
        *L.batchnorm_backward_alt(a["x2"], cache),
        bn_param["running_mean"],
        bn_param["running_var"],
    )


def _spatial_batchnorm(a):
    out, cache = L.spatial_batchnorm_forward(a["x4"], a["g3"], a["be3"], {"mode": "train"})
    return (out, *L.spatial_batchnorm_backward(a["x4"], cache))


def _dropout(a):
    out, cache = L.dropout_forward(a["x4"], {"mode": "train", "p": 0.3, "seed": 1})
    return out, L.dropout_backward(a["x4"], cache)


def _conv(a):
    out, cache = L.conv_forward_naive(a["x4"], a["wc"], a["bc"], {"stride": 2, "pad": 1})
    return (out, *L.conv_backward_naive(out, cache))


def _pool(a):
    out, cache = L.max_pool_forward_naive(a["x4"], {"pool_height": 2, "pool_width": 2, "stride": 2})
    return out, L.max_pool_backward_naive(out, cache)


@pytest.mark.parametrize(
    "run", [_affine, _relu, _losses, _batchnorm, _spatial_batchnorm, _dropout, _conv, _pool]
)
def test_float32_in_float32_out(run):
    r = rng(36)
    arrays = {
        "x4": r.standard_normal((2, 3, 4, 4)),
        "w": r.standard_normal((48, 5)),
        "b": r.standard_normal(5),
        "dout2": r.standard_normal((2, 5)),
        "x2": r.standard_normal((6, 5)),
        "g": r.standard_normal(5),
        "be": r.standard_normal(5),
        "g3": r.standard_normal(3),
        "be3": r.standard_normal(3),
        "wc": r.standard_normal((2, 3, 3, 3)),
        "bc": r.standard_normal(2),
    }
    results64 = run(dict(arrays, y=np.array([0, 1, 2, 3, 4, 0])))
    results32 = run(
        dict({k: v.astype(np.float32) for k, v in arrays.items()}, y=np.array([0, 1, 2, 3, 4, 0]))
    )
    for r64, r32 in zip(results64, results32):
        assert r32.dtype == np.float32
        np.testing.assert_allclose(r32, r64, rtol=2e-4, atol=2e-5)


# ------------------------------------------------------------------ layer_utils


def test_affine_relu_sandwich():
    r = rng(37)
    x, w, b = r.standard_normal((4, 2, 3)), r.standard_normal((6, 5)), r.standard_normal(5)
    out, cache = LU.affine_relu_forward(x, w, b)
    np.testing.assert_allclose(out, np.maximum(0, L.affine_forward(x, w, b)[0]))
    dout = r.standard_normal(out.shape)
    numeric = numeric_grads(LU.affine_relu_forward, (x, w, b), dout, (0, 1, 2))
    assert_grads(LU.affine_relu_backward(dout, cache), numeric)


def test_affine_bn_relu_sandwich():
    r = rng(38)
    x, w, b = r.standard_normal((6, 4)), r.standard_normal((4, 5)), r.standard_normal(5)
    gamma, beta = r.standard_normal(5), r.standard_normal(5)
    forward = lambda *a: LU.affine_bn_relu_forward(*a, {"mode": "train"})  # noqa: E731
    out, cache = forward(x, w, b, gamma, beta)
    dout = r.standard_normal(out.shape)
    numeric = numeric_grads(forward, (x, w, b, gamma, beta), dout, range(5))
    dx, dw, db, dgamma, dbeta = LU.affine_bn_relu_backward(dout, cache)
    assert_grads((dx, dw, dgamma, dbeta), numeric[:2] + numeric[3:], tol=1e-6)
    # batchnorm subtracts the batch mean, which cancels b: its gradient is zero up to
    # rounding, where a relative error means nothing
    np.testing.assert_allclose(db, 0, atol=1e-12)
    np.testing.assert_allclose(numeric[2], 0, atol=1e-9)


def conv_sandwich_inputs(seed):
    r = rng(seed)
    return (
        r.standard_normal((2, 3, 6, 6)),
        r.standard_normal((4, 3, 3, 3)),
        r.standard_normal(4),
        {"stride": 1, "pad": 1},
    )


def test_conv_relu_sandwich():
    pytest.importorskip("graphnet.fast_layers")
    x, w, b, conv_param = conv_sandwich_inputs(39)
    out, cache = LU.conv_relu_forward(x, w, b, conv_param)
    naive = np.maximum(0, L.conv_forward_naive(x, w, b, conv_param)[0])
    np.testing.assert_allclose(out, naive, rtol=1e-10, atol=1e-12)
    dout = rng(40).standard_normal(out.shape)
    numeric = numeric_grads(
        lambda *a: LU.conv_relu_forward(*a, conv_param), (x, w, b), dout, (0, 1, 2)
    )
    assert_grads(LU.conv_relu_backward(dout, cache), numeric, tol=1e-6)


@pytest.mark.slow
def test_conv_relu_pool_sandwich():
    pytest.importorskip("graphnet.fast_layers")
    x, w, b, conv_param = conv_sandwich_inputs(41)
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = LU.conv_relu_pool_forward(x, w, b, conv_param, pool_param)
    relu = np.maximum(0, L.conv_forward_naive(x, w, b, conv_param)[0])
    np.testing.assert_allclose(
        out, L.max_pool_forward_naive(relu, pool_param)[0], rtol=1e-10, atol=1e-12
    )
    dout = rng(42).standard_normal(out.shape)
    numeric = numeric_grads(
        lambda *a: LU.conv_relu_pool_forward(*a, conv_param, pool_param), (x, w, b), dout, (0, 1, 2)
    )
    assert_grads(LU.conv_relu_pool_backward(dout, cache), numeric, tol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(0, 40),
    dims=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    M=st.integers(1, 70),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_affine_on_random_shapes_matches_the_sums_on_any_thread_count(N, dims, M, dtype, seed):
    """affine_forward / affine_backward (their products on graphnet's threads) against the
    sums in float64 (einsum), the same bits on one thread and two."""
    r = np.random.default_rng(seed)
    x = r.standard_normal((N, *dims)).astype(dtype)
    D = int(np.prod(dims))
    w, b = r.standard_normal((D, M)).astype(dtype), r.standard_normal(M).astype(dtype)
    dout = r.standard_normal((N, M)).astype(dtype)
    before = _C.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            _C.set_num_threads(threads)
            out, cache = L.affine_forward(x, w, b)
            results.append((out, *L.affine_backward(dout, cache)))
    finally:
        _C.set_num_threads(before)
    rows, w64, dout64 = (
        x.reshape(N, D).astype(np.float64),
        w.astype(np.float64),
        dout.astype(np.float64),
    )
    expected = (
        np.einsum("nd,dm->nm", rows, w64) + b,
        np.einsum("nm,dm->nd", dout64, w64).reshape(x.shape),
        np.einsum("nd,nm->dm", rows, dout64),
        dout64.sum(axis=0),
    )
    tol = 1e-4 if dtype == np.float32 else 1e-11
    for ours, again, sums in zip(*results, expected):
        assert ours.dtype == dtype and ours.shape == sums.shape
        assert ours.tobytes() == again.tobytes()
        np.testing.assert_allclose(
            ours, sums, rtol=tol, atol=tol * max(1.0, np.abs(sums).max(initial=0))
        )
