"""Batchnorm, spatial batchnorm, layernorm and groupnorm on the C++ kernels (cpp/norm.h).

The gates call these; the course-named functions in ``layers`` stay the numpy reference
the tests compare against. Each forward returns ``(out, cache)``, each backward
``(dx, dgamma, dbeta)``. The kernels work on the arrays' own layout (no transposes): the
statistics in one pass in float64, the backward in one reduction and one writing pass with
the gamma and beta gradients as its sums; bitwise the same for any number of threads.

They take float32 or float64 arrays whose gamma and beta share x's dtype (``native``);
anything else goes through the numpy reference, which promotes dtypes as numpy does.
"""

from typing import Any, Optional, Tuple

import numpy as np

from . import _C

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def native(x: Any, *params: Any) -> bool:
    """Whether the C++ kernels take these arrays as they are: x a float32 or float64
    ndarray and every param an ndarray of its dtype."""
    if type(x) is not np.ndarray or x.dtype not in _FLOATS:
        return False
    for p in params:  # a loop, not all(...): every norm step of a walk asks
        if type(p) is not np.ndarray or p.dtype != x.dtype:
            return False
    return True


class NormCache:
    """What a backward pass needs: x, its statistics in x's dtype, gamma, and whether they
    were the batch's (train) or constants (batchnorm in eval mode). `per` says what has one
    mean: "channel" (batchnorm), "row" (layernorm) or a number of groups (groupnorm). The
    normalized input x_hat is not kept: it is recomputed when something reads it (the
    drawings' cache summaries). beta is kept for a backward through a relu (ReluNormCache).
    """

    __slots__ = ("train", "x", "mean", "inv_std", "gamma", "beta", "per")

    def __init__(self, train, x, mean, inv_std, gamma, beta, per):
        self.train, self.x, self.mean, self.inv_std = train, x, mean, inv_std
        self.gamma, self.beta, self.per = gamma, beta, per

    @property
    def x_hat(self) -> np.ndarray:
        x = self.x
        if self.per == "channel":
            stats = (1, -1) + (1,) * (x.ndim - 2)
            return (x - self.mean.reshape(stats)) * self.inv_std.reshape(stats)
        if self.per == "row":  # a layernorm's rows: all of x's leading axes
            rows = x.reshape(-1, x.shape[-1])
        else:  # a groupnorm's: its (sample, group) pairs
            rows = x.reshape(x.shape[0] * self.per, -1)
        return ((rows - self.mean[:, None]) * self.inv_std[:, None]).reshape(x.shape)


class ReluNormCache(NormCache):
    """The same cache, of a forward that also wrote the relu of its output (a fused norm ->
    relu step, passes/norm_relu.py): a backward with ``relu=True`` takes it, and tells
    where the relu passed the gradient by recomputing the normalized entries from x, the
    statistics, gamma and beta, exactly as the forward did."""

    __slots__ = ()


class SkipReluNormCache(NormCache):
    """The same cache, of a batchnorm forward that also added a skip to its output and
    wrote the relu of the sum (a fused norm -> add -> relu step, passes/norm_relu.py):
    batchnorm_relu_output_backward takes it, with that relu's output, which says where the
    relu passed the gradient. A backward of the norm alone reads it as a NormCache."""

    __slots__ = ()


class ActivationNormCache(NormCache):
    """The cache of a groupnorm or batchnorm forward that also applied an activation to
    its output (a fused norm -> activation step, passes/norm_activation.py): a backward
    through that activation takes it, and finds the activation's gradient at the
    normalized entries it recomputes from x, the statistics, gamma and beta, exactly as the
    forward computed them."""

    __slots__ = ()


class PooledNormCache(ActivationNormCache):
    """The cache of a groupnorm forward that applied an activation and then an average or
    a max pool (a fused groupnorm -> activation -> pool step): a backward through both takes
    the pool's gradient, spreads it over each group (a max pool's to its winners) and goes
    on as through the activation."""

    __slots__ = ()


def _cache(relu, skip=None, activation=None):
    if skip is not None:
        return SkipReluNormCache
    if activation is not None:
        return ActivationNormCache
    return ReluNormCache if relu else NormCache


def batchnorm_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    momentum: float,
    running_mean: Optional[np.ndarray],
    running_var: Optional[np.ndarray],
    train: bool,
    relu: bool = False,
    skip: Optional[np.ndarray] = None,
    skip_first: bool = False,
    pool: Optional[Tuple[int, int, int]] = None,
    keep: bool = True,
    activation: Optional[Tuple[str, float]] = None,
) -> Tuple[Any, NormCache, np.ndarray, np.ndarray]:
    """Batchnorm of x (N, C, ...) per channel (axis 1): (N, D) or (N, C, H, W).

    Train mode normalizes with the batch's mean and biased variance and returns the running
    averages updated as the course does (momentum * running + (1 - momentum) * batch);
    eval mode normalizes with the running averages (zeros when None) and returns them.
    relu: out is the relu of the normalized x; with skip (an array of x's shape and dtype:
    a residual block's skip), the relu of the normalized x + skip (skip_first: skip + the
    normalized x, the add gate's order of operands), and the cache a SkipReluNormCache.
    activation (no relu): None, or ("leaky_relu", alpha) (the leaky relu gate's kernel): out
    is the leaky relu of the normalized x, in the same loop (a fused batchnorm -> leaky relu
    step, passes/norm_activation.py), and the cache an ActivationNormCache.
    pool, with relu or activation and x (N, C, H, W): (pool_height, pool_width, stride) of
    a max pool of out, pooled in the same pass (a residual block's or a VGG unit's end
    followed by a max pool); out is then (out or, unless keep, None; the pooled values; the
    winners, as fast.max_pool_forward_fast's cache holds them), and after a relu the cache
    one of the norm alone unless out is kept (a backward through the activation recomputes
    the normalized entries: its cache is an ActivationNormCache either way).
    Returns (out, cache, running_mean, running_var).
    """
    kernel, alpha = activation or ("", 0.0)
    cache_type = _cache(relu, skip, activation) if keep or activation else NormCache
    # By position: a keyword takes pybind11's slow path, 1.2 us of a (16, 29) batchnorm's 7
    out, mean, inv_std, running_mean, running_var, *pooled = _C.batchnorm_forward(
        x,
        gamma,
        beta,
        eps,
        momentum,
        running_mean,
        running_var,
        train,
        relu,
        skip,
        skip_first,
        pool,
        keep,
        kernel,
        alpha,
    )
    cache = cache_type(train, x, mean, inv_std, gamma, beta, "channel")
    return (out, *pooled) if pooled else out, cache, running_mean, running_var


def batchnorm_backward(
    dout: np.ndarray,
    cache: NormCache,
    relu: bool = False,
    activation: Optional[Tuple[str, float]] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dgamma, dbeta) of batchnorm_forward, for train or eval mode as it ran. relu
    (the forward's too): dout is the gradient of the relu's output; activation (the
    forward's too), of the leaky relu's."""
    if activation is None:
        return _channel_backward(dout, cache, beta=_relu_beta(cache, relu))
    if not isinstance(cache, ActivationNormCache):
        raise ValueError("a backward through an activation needs the cache of a forward with it")
    kernel, alpha = activation
    return _channel_backward(dout, cache, beta=cache.beta, activation=kernel, alpha=alpha)


def batchnorm_relu_output_backward(
    dout: np.ndarray, cache: NormCache, relu_out: np.ndarray
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The gradients of a batchnorm_forward through a relu after it, from that relu's
    output `relu_out` (which says where the relu passed the gradient): the relu gate's of
    the forward's output (a plain NormCache: the forward had no relu of its own) or the
    forward's relu of its output + a skip (a SkipReluNormCache). dout is the gradient of
    relu_out. Returns (dx, dgamma, dbeta, dout masked where relu_out > 0); the last is the
    gradient of the norm's output (the relu gate's; after a skip, the add gate's of both
    its operands), written in the pass that reduces dout."""
    if type(cache) not in (NormCache, SkipReluNormCache) or cache.per != "channel":
        raise ValueError(
            "a backward from a relu's output needs the cache of a batchnorm forward without "
            "a relu or activation of its own, or with a skip and its relu"
        )
    return _channel_backward(dout, cache, relu_out=relu_out)


def _channel_backward(dout, cache, beta=None, relu_out=None, activation="", alpha=0.0):
    """The channel norm kernel's backward on `cache`, through a relu or a leaky relu as the
    rest says (beta: recomputed; relu_out: the relu's output, after a skip; activation and
    alpha: the forward's leaky relu)."""
    x = cache.x
    return _C.channel_norm_backward(  # by position, as the forward
        _like(dout, x),
        x,
        cache.gamma,
        cache.mean,
        cache.inv_std,
        cache.train,
        beta,
        relu_out,
        activation,
        alpha,
    )


def layernorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, relu: bool = False
) -> Tuple[np.ndarray, NormCache]:
    """Layernorm of the rows of x (N, D), or of each vector of D features of x
    (N, ..., D); gamma and beta (D,). relu: out is its relu."""
    out, mean, inv_std = _C.layer_norm_forward(x, gamma, beta, eps, relu)
    return out, _cache(relu)(True, x, mean, inv_std, gamma, beta, "row")


def layernorm_backward(
    dout: np.ndarray, cache: NormCache, relu: bool = False
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """relu (the forward's too): dout is the gradient of the relu's output."""
    return _C.layer_norm_backward(
        _like(dout, cache.x),
        cache.x,
        cache.gamma,
        cache.mean,
        cache.inv_std,
        _relu_beta(cache, relu),
    )


def groupnorm_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    G: int,
    eps: float,
    activation: Optional[Tuple[str, float]] = None,
    pool: Optional[Tuple[int, int, int]] = None,
    max_pool: bool = False,
) -> Tuple[Any, NormCache]:
    """Groupnorm of x (N, C, H, W) in G groups of channels; gamma and beta (C,) or
    (1, C, 1, 1) (the course's shape); their gradients come back in that shape.
    activation: None, or (kernel, alpha) of a pointwise kernel whose backward reads its
    input (gelu, gelu_tanh, leaky_relu, softplus: cpp/pointwise.h): out is that of the
    normalized x, in the same pass (a fused groupnorm -> activation step,
    passes/norm_activation.py), and the cache an ActivationNormCache. pool, with an
    activation: (pool_height, pool_width, stride) of an average pool (_C.avg_pool_forward's
    windows) of that, pooled in the same pass; the cache a PooledNormCache. With max_pool,
    a max pool's instead: out is (the pooled values, the winners, as
    fast.max_pool_forward_fast's cache holds them)."""
    if x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"groupnorm: x has shape {x.shape}; a group needs at least one pixel")
    if pool is not None and activation is None:
        raise ValueError("groupnorm: a pool follows an activation")
    kernel, alpha = activation or ("", 0.0)
    out, mean, inv_std, *winners = _C.group_norm_forward(
        x, gamma.reshape(-1), beta.reshape(-1), G, eps, kernel, alpha, pool, max_pool
    )
    kind = PooledNormCache if pool else NormCache if activation is None else ActivationNormCache
    cache = kind(True, x, mean, inv_std, gamma, beta, G)
    return ((out, *winners) if winners else out), cache


def groupnorm_backward(
    dout: np.ndarray,
    cache: NormCache,
    activation: Optional[Tuple[str, float]] = None,
    pool: Optional[Tuple[int, int, int]] = None,
    winners: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """activation (the forward's too): dout is the gradient of the activation's output; with
    pool (the forward's too), of the pool's (with winners, those of a forward with
    max_pool: of its max pool's). Without them, of the groupnorm's output, whatever the
    forward applied after it."""
    if activation is not None and not isinstance(cache, ActivationNormCache):
        raise ValueError("a backward through an activation needs the cache of a forward with it")
    if pool is not None and (activation is None or not isinstance(cache, PooledNormCache)):
        raise ValueError("a backward through a pool needs its activation and a pooled forward")
    kernel, alpha = activation or ("", 0.0)
    dx, dgamma, dbeta = _C.group_norm_backward(
        _like(dout, cache.x),
        cache.x,
        cache.gamma.reshape(-1),
        cache.per,
        cache.mean,
        cache.inv_std,
        None if activation is None else cache.beta.reshape(-1),
        kernel,
        alpha,
        pool,
        winners,
    )
    return dx, dgamma.reshape(cache.gamma.shape), dbeta.reshape(cache.gamma.shape)


def _relu_beta(cache, relu):
    """beta for a backward through the forward's relu, None for one without."""
    if relu and not isinstance(cache, ReluNormCache):
        raise ValueError("a backward through a relu needs the cache of a forward with relu")
    return cache.beta if relu else None


def _like(dout, x):
    """dout as an array of x's dtype (an upstream gradient may come in another one)."""
    return np.asarray(dout, dtype=x.dtype)
