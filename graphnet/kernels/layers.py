"""Stateless layer kernels with the calling convention of Stanford CS231n, assignment 2.

Every ``*_forward`` returns ``(out, cache)`` and every ``*_backward(dout, cache)`` returns
the gradients of its inputs in the order the forward pass took them. The losses return
``(loss, dx)`` directly. Shapes follow the course: N is the batch size, D the number of
features, C the number of classes (losses) or channels (images), H and W the image size.

Where the course's editions differ, this module follows the 2017 edition: in
``dropout_forward``, ``p`` is the probability of DROPPING a unit. ``dropout_forward_keep``
is the 2018+ editions' dropout (``p`` the probability of KEEPING a unit); it is what
``graphnet.cs231n.layers`` exports as ``dropout_forward``, and it is not part of this
module's star export.

Floating inputs keep their precision (float32 in, float32 out); integer inputs are
promoted to float64 so that gradients are not truncated. The affine layer's products run
on graphnet's threads (matmul), not numpy's BLAS, whose own threads take the cores: on
one thread a (64, 3072) x (3072, 100) affine_forward took 15 ms of CPU time through
numpy's @ on the shared 2-core machine, 0.5 ms through graphnet's.

The ``*_naive`` convolution and pooling kernels are deliberately written as loops over
output positions: they are the reference a student reads and checks the fast C++ kernels
(``graphnet.fast_layers``) against.
"""

import collections
import math
import operator
from typing import Any, Dict, Tuple

import numpy as np

from . import _C, geometry

__all__ = [
    "affine_forward",
    "affine_backward",
    "relu_forward",
    "relu_backward",
    "softmax_loss",
    "svm_loss",
    "batchnorm_forward",
    "batchnorm_backward",
    "batchnorm_backward_alt",
    "spatial_batchnorm_forward",
    "spatial_batchnorm_backward",
    "layernorm_forward",
    "layernorm_backward",
    "spatial_groupnorm_forward",
    "spatial_groupnorm_backward",
    "dropout_forward",
    "dropout_backward",
    "conv_forward_naive",
    "conv_backward_naive",
    "max_pool_forward_naive",
    "max_pool_backward_naive",
]


# --------------------------------------------------------------------------- validation


def _float_array(a, fn=None, name="x"):
    """``a`` as an ndarray; integers and booleans become float64 so gradients stay exact.
    Complex, object and string arrays, and arrays (broadcast views) that stand for more
    than the machine's memory, are refused (ValueError naming fn and the argument)."""
    try:
        a = np.asarray(a)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{fn or 'layers'}: {name} is not an array of numbers: {err}") from None
    if a.dtype.kind not in "biuf":
        raise ValueError(
            f"{fn or 'layers'}: {name} (shape {a.shape}) has dtype {a.dtype}; it "
            f"must hold real numbers: convert it with {name}.astype(np.float64)"
        )
    if a.nbytes > geometry.MEMORY_BYTES:
        raise ValueError(geometry.beyond_memory(a, f"{fn or 'layers'}: {name}"))
    if not a.dtype.isnative:  # big-endian data: the kernels read native byte order
        a = a.astype(a.dtype.str[1:])
    return a if a.dtype.kind == "f" else a.astype(np.float64)


def _upstream(fn, name, grad, shape):
    """An upstream gradient (dout) as an array of real numbers of the expected shape."""
    if type(grad) is not np.ndarray or grad.dtype not in _FLOAT_DTYPES:  # else already one
        grad = _float_array(grad, fn, name)
    _check_shape(fn, name, grad, shape)
    return grad


def _real_param(fn, params, key, default, low, high, low_open=False, high_open=False):
    """A float hyper-parameter (eps, momentum, p) that must lie in [low, high] (or the
    open ends given), as a ValueError saying so."""
    value = params.get(key, default)
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{fn}: {key} must be a number in {interval}, got {value!r}")
    return value


_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # dtypes, not types: faster `in`


def matmul(a, b, transpose_a=False, transpose_b=False):
    """op(a) @ op(b) for 2-D a and b, on graphnet's own threads when they share a float
    dtype (numpy's BLAS threads would fight the kernels' for the cores: cpp/matmul.h)."""
    if a.dtype == b.dtype and a.dtype in _FLOAT_DTYPES:
        return _C.matmul(a, b, transpose_a, transpose_b)  # by position: no keyword's slow path
    return (a.T if transpose_a else a) @ (b.T if transpose_b else b)


def _column_sums(rows):
    """rows.sum(axis=0), the same bits: in C++ (a C-contiguous float32 / float64 array's
    columns summed over its rows in order, as numpy does; cpp/matmul.h), else numpy's.
    A single column is numpy's: numpy sums it pairwise, as a contiguous run."""
    if (
        rows.dtype in (np.float32, np.float64)
        and rows.ndim == 2
        and rows.shape[1] > 1
        and rows.flags.c_contiguous
    ):
        return _C.column_sums(rows)
    return rows.sum(axis=0)


def _check_ndim(fn, name, a, ndim, layout):
    if a.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D {layout}, got shape {a.shape}")


def _check_shape(fn, name, a, expected):
    if a.shape != tuple(expected):
        raise ValueError(f"{fn}: {name} has shape {a.shape}, expected {tuple(expected)}")


def _int_param(fn, params, key, default, minimum):
    """Read an integer hyper-parameter (stride, pad, pool size) and enforce its minimum."""
    value = params.get(key, default)
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{fn}: {key} must be an integer, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{fn}: {key} must be >= {minimum}, got {value}")
    return value


def _mode(fn, params):
    mode = params.get("mode", "train")
    if mode not in ("train", "test"):
        raise ValueError(f"{fn}: mode must be 'train' or 'test', got {mode!r}")
    return mode


def _check_scores_and_labels(fn, x, y):
    """Validate (N, C) scores and (N,) integer labels in [0, C); return labels as intp."""
    _check_ndim(fn, "x", x, 2, "scores (N, C)")
    N, C = x.shape
    if N == 0 or C == 0:
        raise ValueError(f"{fn}: scores must be non-empty, got shape {x.shape}")
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise ValueError(f"{fn}: labels y must be integers, got dtype {y.dtype}")
    _check_shape(fn, "y", y, (N,))
    labels = y.astype(np.intp, copy=False)
    # One reduction: read as unsigned words, a negative label is larger than any C.
    if np.maximum.reduce(labels.view(np.uintp)) >= C:
        raise ValueError(
            f"{fn}: labels must lie in [0, {C}) for x of shape {x.shape}, "
            f"got min {y.min()} and max {y.max()}"
        )
    return labels


# --------------------------------------------------------------------------- affine, relu


def affine_forward(x, w, b):
    """out = x.reshape(N, D) @ w + b.

    x: (N, d1, ..., dk) with D = d1 * ... * dk; w: (D, M); b: (M,). Returns out (N, M).
    """
    fn = "affine_forward"
    x, w, b = _float_array(x, fn, "x"), _float_array(w, fn, "w"), _float_array(b, fn, "b")
    if x.ndim < 2:
        raise ValueError(f"{fn}: x must have shape (N, d1, ...), got shape {x.shape}")
    _check_ndim(fn, "w", w, 2, "weights (D, M)")
    D = int(np.prod(x.shape[1:]))
    if w.shape[0] != D:
        raise ValueError(
            f"{fn}: x of shape {x.shape} flattens to {D} features but w has shape {w.shape}"
        )
    _check_shape(fn, "b", b, (w.shape[1],))
    out = matmul(x.reshape(x.shape[0], D), w) + b
    return out, (x, w, b)


def affine_backward(dout, cache):
    """dout: (N, M). Returns dx (x's original shape), dw (D, M), db (M,)."""
    x, w, b = cache
    dout = _upstream("affine_backward", "dout", dout, (x.shape[0], w.shape[1]))
    dx = matmul(dout, w, transpose_b=True).reshape(x.shape)
    dw = matmul(x.reshape(x.shape[0], w.shape[0]), dout, transpose_a=True)
    db = _column_sums(dout)
    return dx, dw, db


def relu_forward(x):
    """out = max(x, 0) elementwise, any shape."""
    x = _float_array(x, "relu_forward", "x")
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    """The gradient passes where the input was positive (0 at the kink)."""
    x = cache
    dout = _upstream("relu_backward", "dout", dout, x.shape)
    return dout * (x > 0)


# --------------------------------------------------------------------------- losses


def softmax_loss(x, y):
    """Mean cross-entropy of softmax(x) against labels.

    x: (N, C) scores; y: (N,) integer labels in [0, C). Returns (loss, dx (N, C)).
    """
    x = _float_array(x, "softmax_loss", "x")
    y = _check_scores_and_labels("softmax_loss", x, y)
    N, C = x.shape
    # Subtracting the row maximum leaves softmax unchanged and keeps exp from overflowing.
    # (The ufuncs' reductions called directly, and the labels' entries read and written by
    # their flat indices with take and put rather than indexed by (rows, y): the same
    # numbers with fewer numpy calls, which at batch 1 cost more than the arithmetic.)
    shifted = x - np.maximum.reduce(x, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.add.reduce(np.exp(shifted), axis=1, keepdims=True))
    at_label = np.arange(0, N * C, C) + y  # row r's label y[r] at r * C + y[r]
    loss = -log_probs.take(at_label).mean()
    dx = np.exp(log_probs)
    dx.put(at_label, dx.take(at_label) - 1)
    dx /= N
    return float(loss), dx


def svm_loss(x, y):
    """Mean multiclass hinge loss with margin 1: sum over j != y of max(0, x_j - x_y + 1).

    x: (N, C) scores; y: (N,) integer labels in [0, C). Returns (loss, dx (N, C)).
    """
    x = _float_array(x, "svm_loss", "x")
    y = _check_scores_and_labels("svm_loss", x, y)
    N = x.shape[0]
    rows = np.arange(N)
    margins = np.maximum(0, x - x[rows, y][:, None] + 1)
    margins[rows, y] = 0
    loss = margins.sum() / N
    # Each violated margin pushes its class up and the correct class down by one unit.
    dx = (margins > 0).astype(x.dtype)
    dx[rows, y] = -dx.sum(axis=1)
    dx /= N
    return float(loss), dx


# --------------------------------------------------------------------------- batchnorm


def _features_and_scales(fn, x, gamma, beta):
    """x (N, D) and gamma, beta (D,) as float arrays, or a ValueError naming fn and shapes."""
    x, gamma, beta = (
        _float_array(x, fn, "x"),
        _float_array(gamma, fn, "gamma"),
        _float_array(beta, fn, "beta"),
    )
    _check_ndim(fn, "x", x, 2, "(N, D)")
    _check_shape(fn, "gamma", gamma, x.shape[1:])
    _check_shape(fn, "beta", beta, x.shape[1:])
    return x, gamma, beta


def _normalize(x, axis, eps):
    """x_hat = (x - mean) / sqrt(var + eps) over `axis` (biased variance), and 1 / sqrt(var +
    eps) with the reduced axis kept."""
    mean = x.mean(axis=axis, keepdims=True)
    inv_std = 1.0 / np.sqrt(x.var(axis=axis, keepdims=True) + eps)
    return (x - mean) * inv_std, inv_std


def _normalized_backward(dx_hat, x_hat, inv_std, axis):
    """dL/dx from dL/dx_hat for x_hat = (x - mean) * inv_std with the mean and variance over
    `axis`: inv_std * (g - mean(g) - x_hat * mean(g * x_hat)), g = dL/dx_hat."""
    return inv_std * (
        dx_hat
        - dx_hat.mean(axis=axis, keepdims=True)
        - x_hat * (dx_hat * x_hat).mean(axis=axis, keepdims=True)
    )


# What the backward pass needs; `train` selects between the full and the frozen-statistics
# gradient.
_BatchnormCache = collections.namedtuple("_BatchnormCache", "train x_hat x_centered inv_std gamma")


def _running_stat(fn, bn_param, key, D, dtype):
    stat = bn_param.get(key)
    if stat is None:
        return np.zeros(D, dtype=dtype)
    stat = np.asarray(stat)
    _check_shape(fn, f"bn_param[{key!r}]", stat, (D,))
    return stat


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization over the batch axis.

    x: (N, D); gamma, beta: (D,). bn_param: 'mode' ('train' or 'test'), 'eps' (1e-5),
    'momentum' (0.9), 'running_mean' and 'running_var' ((D,), created as zeros in x's dtype
    when missing). In train mode the batch mean and biased (1/N) variance normalize x and
    the running statistics in bn_param are replaced by
    momentum * running + (1 - momentum) * batch_stat; test mode normalizes with them.
    Returns out (N, D).
    """
    fn = "batchnorm_forward"
    x, gamma, beta = _features_and_scales(fn, x, gamma, beta)
    D = x.shape[1]
    mode = _mode(fn, bn_param)
    eps = _real_param(fn, bn_param, "eps", 1e-5, 0, np.inf, low_open=True)
    momentum = _real_param(fn, bn_param, "momentum", 0.9, 0, 1)
    running_mean = _running_stat(fn, bn_param, "running_mean", D, x.dtype)
    running_var = _running_stat(fn, bn_param, "running_var", D, x.dtype)

    if mode == "train":
        if x.shape[0] == 0:
            raise ValueError(f"{fn}: train mode needs a non-empty batch, got shape {x.shape}")
        mean, var = x.mean(axis=0), x.var(axis=0)
        running_mean = momentum * running_mean + (1 - momentum) * mean
        running_var = momentum * running_var + (1 - momentum) * var
    else:
        mean, var = running_mean, running_var
    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var

    # Running statistics may be stored in higher precision; normalize in x's own dtype.
    x_centered = x - mean.astype(x.dtype, copy=False)
    inv_std = 1.0 / np.sqrt(var.astype(x.dtype, copy=False) + eps)
    x_hat = x_centered * inv_std
    out = gamma * x_hat + beta
    return out, _BatchnormCache(mode == "train", x_hat, x_centered, inv_std, gamma)


def _batchnorm_param_grads(fn, dout, cache):
    """dgamma, dbeta (D,), and dx_hat (N, D): the part both backward variants share."""
    dout = _upstream(fn, "dout", dout, cache.x_hat.shape)
    return (dout * cache.x_hat).sum(axis=0), dout.sum(axis=0), dout * cache.gamma


def batchnorm_backward(dout, cache):
    """Backward pass through batchnorm, one node of the computation graph at a time.

    dout: (N, D). Returns dx (N, D), dgamma (D,), dbeta (D,).
    """
    dgamma, dbeta, dx_hat = _batchnorm_param_grads("batchnorm_backward", dout, cache)
    if not cache.train:
        # Test mode normalizes with constants: only the final scaling depends on x.
        return dx_hat * cache.inv_std, dgamma, dbeta
    N = dx_hat.shape[0]
    xc, inv_std = cache.x_centered, cache.inv_std
    # x_hat = xc * inv_std: xc reaches the output directly and through the variance.
    dxc = dx_hat * inv_std
    dinv_std = (dx_hat * xc).sum(axis=0)
    # inv_std = (var + eps) ** -1/2
    dvar = -0.5 * inv_std**3 * dinv_std
    # var = mean(xc ** 2)
    dxc += (2.0 / N) * xc * dvar
    # xc = x - mean(x)
    dx = dxc - dxc.sum(axis=0) / N
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    """Batchnorm backward in closed form: inv_std * (g - mean(g) - x_hat * mean(g * x_hat))
    with g = dout * gamma. Same shapes and results as batchnorm_backward.
    """
    dgamma, dbeta, dx_hat = _batchnorm_param_grads("batchnorm_backward_alt", dout, cache)
    if not cache.train:
        return dx_hat * cache.inv_std, dgamma, dbeta
    return _normalized_backward(dx_hat, cache.x_hat, cache.inv_std, axis=0), dgamma, dbeta


def _channels_to_rows(x):
    """(N, C, H, W) -> (N*H*W, C): every pixel becomes one sample of C features."""
    N, C, H, W = x.shape
    return x.transpose(0, 2, 3, 1).reshape(N * H * W, C)


def _rows_to_channels(rows, shape):
    """Inverse of _channels_to_rows for an (N, C, H, W) shape."""
    N, C, H, W = shape
    return rows.reshape(N, H, W, C).transpose(0, 3, 1, 2)


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batchnorm per channel over the batch and both spatial axes.

    x: (N, C, H, W); gamma, beta: (C,); bn_param as in batchnorm_forward, with (C,)
    running statistics. Returns out (N, C, H, W).
    """
    x = _float_array(x, "spatial_batchnorm_forward", "x")
    _check_ndim("spatial_batchnorm_forward", "x", x, 4, "(N, C, H, W)")
    out, cache = batchnorm_forward(_channels_to_rows(x), gamma, beta, bn_param)
    return _rows_to_channels(out, x.shape), (cache, x.shape)


def spatial_batchnorm_backward(dout, cache):
    """dout: (N, C, H, W). Returns dx (N, C, H, W), dgamma (C,), dbeta (C,)."""
    bn_cache, shape = cache
    dout = _upstream("spatial_batchnorm_backward", "dout", dout, shape)
    dx, dgamma, dbeta = batchnorm_backward_alt(_channels_to_rows(dout), bn_cache)
    return _rows_to_channels(dx, shape), dgamma, dbeta


# --------------------------------------------------------------------------- layernorm, groupnorm

# What the backward passes of layernorm and groupnorm need.
_LayernormCache = collections.namedtuple("_LayernormCache", "x_hat inv_std gamma")
_GroupnormCache = collections.namedtuple("_GroupnormCache", "x_hat inv_std gamma groups")


def layernorm_forward(
    x: Any, gamma: Any, beta: Any, ln_param: Dict[str, Any]
) -> Tuple[np.ndarray, Any]:
    """Layer normalization: each sample normalized over its own features, then scaled by
    gamma and shifted by beta per feature.

    x: (N, D); gamma, beta: (D,); ln_param: 'eps' (1e-5). Train and test mode behave alike
    and keep no running statistics, so other keys (the notebooks pass 'mode') are ignored.
    Returns out (N, D).
    """
    fn = "layernorm_forward"
    x, gamma, beta = _features_and_scales(fn, x, gamma, beta)
    if x.shape[1] == 0:
        raise ValueError(f"{fn}: x has shape {x.shape}; a sample needs at least one feature")
    eps = _real_param(fn, ln_param, "eps", 1e-5, 0, np.inf, low_open=True)
    x_hat, inv_std = _normalize(x, 1, eps)
    return gamma * x_hat + beta, _LayernormCache(x_hat, inv_std, gamma)


def layernorm_backward(dout: Any, cache: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dout: (N, D). Returns dx (N, D), dgamma (D,), dbeta (D,)."""
    dout = _upstream("layernorm_backward", "dout", dout, cache.x_hat.shape)
    dx = _normalized_backward(dout * cache.gamma, cache.x_hat, cache.inv_std, axis=1)
    return dx, (dout * cache.x_hat).sum(axis=0), dout.sum(axis=0)


def spatial_groupnorm_forward(
    x: Any, gamma: Any, beta: Any, G: int, gn_param: Dict[str, Any]
) -> Tuple[np.ndarray, Any]:
    """Group normalization: each sample's C channels are split into G contiguous groups of
    C // G, each group is normalized over its channels and pixels, then every channel is
    scaled by gamma and shifted by beta.

    x: (N, C, H, W); gamma, beta: (1, C, 1, 1) as in the course, or (C,); G: the number of
    groups, a divisor of C; gn_param: 'eps' (1e-5), other keys ignored (no running
    statistics). Returns out (N, C, H, W).
    """
    fn = "spatial_groupnorm_forward"
    x, gamma, beta = (
        _float_array(x, fn, "x"),
        _float_array(gamma, fn, "gamma"),
        _float_array(beta, fn, "beta"),
    )
    _check_ndim(fn, "x", x, 4, "(N, C, H, W)")
    N, C, H, W = x.shape
    G = _int_param(fn, {"G": G}, "G", None, 1)
    if C % G:
        raise ValueError(f"{fn}: G = {G} groups do not divide the {C} channels of x {x.shape}")
    if H * W == 0:
        raise ValueError(f"{fn}: x has shape {x.shape}; a group needs at least one pixel")
    if gamma.shape not in ((C,), (1, C, 1, 1)):
        raise ValueError(f"{fn}: gamma has shape {gamma.shape}, expected (1, {C}, 1, 1) or ({C},)")
    _check_shape(fn, "beta", beta, gamma.shape)
    eps = _real_param(fn, gn_param, "eps", 1e-5, 0, np.inf, low_open=True)
    x_hat, inv_std = _normalize(x.reshape(N, G, -1), 2, eps)
    x_hat = x_hat.reshape(x.shape)
    out = gamma.reshape(1, C, 1, 1) * x_hat + beta.reshape(1, C, 1, 1)
    return out, _GroupnormCache(x_hat, inv_std, gamma, G)


def spatial_groupnorm_backward(dout: Any, cache: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dout: (N, C, H, W). Returns dx (N, C, H, W), and dgamma, dbeta of gamma's shape."""
    x_hat, gamma = cache.x_hat, cache.gamma
    dout = _upstream("spatial_groupnorm_backward", "dout", dout, x_hat.shape)
    N, C = x_hat.shape[:2]
    grouped = (N, cache.groups, -1)
    dx_hat = (dout * gamma.reshape(1, C, 1, 1)).reshape(grouped)
    dx = _normalized_backward(dx_hat, x_hat.reshape(grouped), cache.inv_std, axis=2)
    dgamma = (dout * x_hat).sum(axis=(0, 2, 3)).reshape(gamma.shape)
    return dx.reshape(x_hat.shape), dgamma, dout.sum(axis=(0, 2, 3)).reshape(gamma.shape)


# --------------------------------------------------------------------------- dropout

# What p means: a description for errors, its valid interval, and the probability of
# keeping a unit that it gives.
_DropoutConvention = collections.namedtuple(
    "_DropoutConvention", "meaning interval is_valid keep_probability"
)
_P_DROPS = _DropoutConvention(
    "the probability of DROPPING a unit (the 2017 edition, as in graphnet.layers and "
    "graphnet.cs231n.v2017)",
    "[0, 1)",
    lambda p: 0 <= p < 1,
    lambda p: 1 - p,
)
_P_KEEPS = _DropoutConvention(
    "the probability of KEEPING a unit (the 2018+ editions, as in graphnet.cs231n)",
    "(0, 1]",
    lambda p: 0 < p <= 1,
    lambda p: p,
)


def _uniform(fn, shape, seed):
    """Draws in [0, 1) of the given shape: np.random.rand's, from numpy's global state
    without a seed; with one, those np.random.seed(seed) would give (the masks of the
    course's seeded dropout), from a private RandomState that leaves the global state alone.
    """
    if seed is None:
        return np.random.random_sample(shape)
    try:
        seed = operator.index(seed)
    except TypeError:
        raise ValueError(f"{fn}: seed must be a non-negative integer, got {seed!r}") from None
    if seed < 0:
        raise ValueError(f"{fn}: seed must be a non-negative integer, got {seed}")
    # RandomState takes one 32-bit word (np.random.seed's case) or several, for larger seeds
    # (graphnet's dropout gate draws 63-bit ones).
    words = (
        seed
        if seed < 2**32
        else [(seed >> shift) & 0xFFFFFFFF for shift in range(0, seed.bit_length(), 32)]
    )
    return np.random.RandomState(words).random_sample(shape)


def _dropout_forward(x, dropout_param, convention):
    fn = "dropout_forward"
    x = _float_array(x, fn, "x")
    mode = _mode(fn, dropout_param)
    if "p" not in dropout_param:
        raise ValueError(f"{fn}: dropout_param needs 'p', {convention.meaning}")
    p = dropout_param["p"]
    if (
        not isinstance(p, (int, float, np.integer, np.floating))
        or isinstance(p, bool)
        or not convention.is_valid(p)
    ):  # also rejects NaN
        raise ValueError(
            f"{fn}: p is {convention.meaning}; it must be in {convention.interval}, got {p!r}"
        )
    if mode == "test":
        return x, (dropout_param, None)
    # A unit is kept where its draw is below the keep probability, as in the course notes'
    # (np.random.rand(*x.shape) < p) / p, so the same draws give the course's mask.
    keep = convention.keep_probability(p)
    uniform = _uniform(fn, x.shape, dropout_param.get("seed"))
    mask = ((uniform < keep) / keep).astype(x.dtype, copy=False)
    return x * mask, (dropout_param, mask)


def dropout_forward(x: Any, dropout_param: Dict[str, Any]) -> Tuple[np.ndarray, Any]:
    """Inverted dropout with the 2017 edition's p: the probability of DROPPING a unit.

    x: any shape. dropout_param: 'p' (in [0, 1)), 'mode' ('train' or 'test'), optional
    'seed'. In train mode each unit is zeroed with probability p and the survivors are
    scaled by 1 / (1 - p), so the expected output is x and test mode is the identity.
    (The 2018+ editions' p is the probability of keeping a unit: dropout_forward_keep,
    which graphnet.cs231n.layers exports as dropout_forward.)

    A unit is kept where np.random.rand draws a number below 1 - p. Without a 'seed' the
    draws come from numpy's global state (never reseeded here), so np.random.seed(...) in a
    notebook makes a run repeatable. With one, they are the draws np.random.seed(seed)
    would give, from a private generator: the same seed gives the same mask, and numpy's
    global random state is left alone. Returns out (x's shape).
    """
    return _dropout_forward(x, dropout_param, _P_DROPS)


def dropout_forward_keep(x: Any, dropout_param: Dict[str, Any]) -> Tuple[np.ndarray, Any]:
    """Inverted dropout with the 2018+ editions' p: the probability of KEEPING a unit.

    dropout_param: 'p' (in (0, 1]; 1 keeps everything), 'mode', optional 'seed'. Each unit
    is kept with probability p and the survivors are scaled by 1 / p. Otherwise as
    dropout_forward (same cache, same dropout_backward).
    """
    return _dropout_forward(x, dropout_param, _P_KEEPS)


def dropout_backward(dout, cache):
    """dout: x's shape. The gradient flows through the units kept in the forward pass."""
    _, mask = cache
    if mask is None:  # eval mode: the gradient passes as it is
        return _float_array(dout, "dropout_backward", "dout")
    dout = _upstream("dropout_backward", "dout", dout, mask.shape)
    return dout * mask


# --------------------------------------------------------------------------- conv, pool


def _window_count(fn, axis, size, kernel, stride, pad=0):
    """Number of window positions along one axis: 1 + (size + 2 * pad - kernel) // stride,
    in the kernels' checked int64 arithmetic (graphnet.kernels.geometry)."""
    try:
        return geometry.window_count(size, kernel, stride, pad, axis)
    except ValueError as err:
        raise ValueError(f"{fn}: {err}") from None


def _window(i, j, stride, height, width):
    """Index of the window behind output position (i, j) in the last two axes."""
    return (
        slice(None),
        slice(None),
        slice(i * stride, i * stride + height),
        slice(j * stride, j * stride + width),
    )


def _conv_geometry(fn, x, w, b, conv_param):
    """Validate conv inputs; return stride, pad and the output size (H', W')."""
    _check_ndim(fn, "x", x, 4, "images (N, C, H, W)")
    _check_ndim(fn, "w", w, 4, "filters (F, C, HH, WW)")
    if w.shape[1] != x.shape[1]:
        raise ValueError(
            f"{fn}: x of shape {x.shape} has {x.shape[1]} channels but "
            f"w of shape {w.shape} expects {w.shape[1]}"
        )
    _check_shape(fn, "b", b, (w.shape[0],))
    stride = _int_param(fn, conv_param, "stride", 1, 1)
    pad = _int_param(fn, conv_param, "pad", 0, 0)
    (N, C, H, W), (_, _, HH, WW) = x.shape, w.shape
    padded = (N, C, H + 2 * pad, W + 2 * pad)
    if math.prod(padded) * x.itemsize > np.iinfo(np.intp).max:
        # The naive layers pad x in memory: say so rather than numpy's "array is too big".
        raise ValueError(
            f"{fn}: pad {pad} makes the zero-padded x {padded} larger than memory can "
            f"address (x has shape {x.shape})"
        )
    return (
        stride,
        pad,
        _window_count(fn, "height", H, HH, stride, pad),
        _window_count(fn, "width", W, WW, stride, pad),
    )


def conv_forward_naive(x, w, b, conv_param):
    """Convolution (cross-correlation, as in the course) with zero padding.

    x: (N, C, H, W); w: (F, C, HH, WW); b: (F,); conv_param: 'stride' (1), 'pad' (0).
    Returns out (N, F, H', W') with H' = 1 + (H + 2*pad - HH) // stride and likewise W'.
    """
    fn = "conv_forward_naive"
    x, w, b = _float_array(x, fn, "x"), _float_array(w, fn, "w"), _float_array(b, fn, "b")
    stride, pad, H_out, W_out = _conv_geometry("conv_forward_naive", x, w, b, conv_param)
    F, _, HH, WW = w.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.empty((x.shape[0], F, H_out, W_out), dtype=np.result_type(x, w, b))
    for i in range(H_out):
        for j in range(W_out):
            patch = x_pad[_window(i, j, stride, HH, WW)]
            # (N, C, HH, WW) against (F, C, HH, WW), summed over C, HH, WW -> (N, F)
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    """dout: (N, F, H', W'). Returns dx (N, C, H, W), dw (F, C, HH, WW), db (F,)."""
    x, w, b, conv_param = cache
    fn = "conv_backward_naive"
    stride, pad, H_out, W_out = _conv_geometry(fn, x, w, b, conv_param)
    dout = _upstream(fn, "dout", dout, (x.shape[0], w.shape[0], H_out, W_out))
    HH, WW = w.shape[2:]
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dx_pad = np.zeros_like(x_pad, dtype=np.result_type(x, w, dout))
    dw = np.zeros_like(w, dtype=np.result_type(x, w, dout))
    for i in range(H_out):
        for j in range(W_out):
            window = _window(i, j, stride, HH, WW)
            g = dout[:, :, i, j]  # (N, F)
            dw += np.tensordot(g, x_pad[window], axes=([0], [0]))  # (F, C, HH, WW)
            dx_pad[window] += np.tensordot(g, w, axes=([1], [0]))  # (N, C, HH, WW)
    H, W = x.shape[2:]
    return dx_pad[:, :, pad : pad + H, pad : pad + W], dw, dout.sum(axis=(0, 2, 3))


def _pool_geometry(fn, x, pool_param):
    """Validate pooling inputs; return pool height, width, stride and output (H', W')."""
    _check_ndim(fn, "x", x, 4, "images (N, C, H, W)")
    ph = _int_param(fn, pool_param, "pool_height", 2, 1)
    pw = _int_param(fn, pool_param, "pool_width", 2, 1)
    stride = _int_param(fn, pool_param, "stride", 2, 1)
    H, W = x.shape[2:]
    return (
        ph,
        pw,
        stride,
        _window_count(fn, "height", H, ph, stride),
        _window_count(fn, "width", W, pw, stride),
    )


def max_pool_forward_naive(x, pool_param):
    """Max pooling without padding.

    x: (N, C, H, W); pool_param: 'pool_height', 'pool_width', 'stride' (each 2 by
    default). Returns out (N, C, H', W') with H' = 1 + (H - pool_height) // stride.
    """
    x = _float_array(x, "max_pool_forward_naive", "x")
    ph, pw, stride, H_out, W_out = _pool_geometry("max_pool_forward_naive", x, pool_param)
    out = np.empty(x.shape[:2] + (H_out, W_out), dtype=x.dtype)
    for i in range(H_out):
        for j in range(W_out):
            out[:, :, i, j] = x[_window(i, j, stride, ph, pw)].max(axis=(2, 3))
    return out, (x, pool_param)


def max_pool_backward_naive(dout, cache):
    """dout: (N, C, H', W'). Returns dx (N, C, H, W).

    Each window's gradient goes to its maximum. On ties the FIRST maximum in row-major
    order within the window receives all of it (np.argmax semantics), so the gradient is
    never duplicated. Overlapping windows (stride < pool size) add up.
    """
    x, pool_param = cache
    fn = "max_pool_backward_naive"
    ph, pw, stride, H_out, W_out = _pool_geometry(fn, x, pool_param)
    N, C = x.shape[:2]
    dout = _upstream(fn, "dout", dout, (N, C, H_out, W_out))
    dx = np.zeros_like(x, dtype=np.result_type(x, dout))
    positions = np.arange(ph * pw)
    for i in range(H_out):
        for j in range(W_out):
            window = _window(i, j, stride, ph, pw)
            first_max = x[window].reshape(N, C, ph * pw).argmax(axis=2)
            is_max = positions == first_max[..., None]  # (N, C, ph*pw)
            dx[window] += (is_max * dout[:, :, i, j, None]).reshape(N, C, ph, pw)
    return dx
