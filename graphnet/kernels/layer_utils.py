"""Common layer "sandwiches" (CS231n's ``layer_utils``): a forward chain of layers whose
cache is the tuple of the layer caches, and the matching backward chain.

The convolutional sandwiches run on the C++ kernels of ``graphnet.fast_layers``, imported
on first use so that the dense sandwiches work even where the extension lacks them.
"""

from typing import Any, Dict, Tuple

import numpy as np

from .layers import (
    affine_backward,
    affine_forward,
    batchnorm_backward_alt,
    batchnorm_forward,
    relu_backward,
    relu_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
)

__all__ = [
    "affine_relu_forward",
    "affine_relu_backward",
    "affine_bn_relu_forward",
    "affine_bn_relu_backward",
    "conv_relu_forward",
    "conv_relu_backward",
    "conv_bn_relu_forward",
    "conv_bn_relu_backward",
    "conv_relu_pool_forward",
    "conv_relu_pool_backward",
]


def _fast_layers():
    try:
        from . import fast as fast_layers
    except ImportError as err:
        raise ImportError(
            "the conv sandwiches need graphnet.fast_layers (the C++ conv and "
            "pool kernels); rebuild graphnet with `pip install .`"
        ) from err
    return fast_layers


def affine_relu_forward(x, w, b):
    """relu(affine(x)). x: (N, d1, ...); w: (D, M); b: (M,). Returns out (N, M)."""
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache):
    """dout: (N, M). Returns dx (x's shape), dw (D, M), db (M,)."""
    fc_cache, relu_cache = cache
    return affine_backward(relu_backward(dout, relu_cache), fc_cache)


def affine_bn_relu_forward(
    x: Any, w: Any, b: Any, gamma: Any, beta: Any, bn_param: Dict[str, Any]
) -> Tuple[np.ndarray, tuple]:
    """relu(batchnorm(affine(x))). gamma, beta: (M,); bn_param as in batchnorm_forward."""
    a, fc_cache = affine_forward(x, w, b)
    return _bn_relu_forward(a, fc_cache, batchnorm_forward, gamma, beta, bn_param)


def affine_bn_relu_backward(dout: Any, cache: tuple) -> tuple:
    """dout: (N, M). Returns dx, dw, db, dgamma (M,), dbeta (M,)."""
    return _bn_relu_backward(dout, cache, batchnorm_backward_alt, affine_backward)


def _bn_relu_forward(a, first_cache, batchnorm, gamma, beta, bn_param):
    """relu(batchnorm(a)) after a first layer that gave (a, first_cache)."""
    a_bn, bn_cache = batchnorm(a, gamma, beta, bn_param)
    out, relu_cache = relu_forward(a_bn)
    return out, (first_cache, bn_cache, relu_cache)


def _bn_relu_backward(dout, cache, batchnorm_backward, first_backward):
    """The first layer's gradients, then dgamma and dbeta, for _bn_relu_forward's cache."""
    first_cache, bn_cache, relu_cache = cache
    da, dgamma, dbeta = batchnorm_backward(relu_backward(dout, relu_cache), bn_cache)
    return (*first_backward(da, first_cache), dgamma, dbeta)


def conv_relu_forward(x, w, b, conv_param):
    """relu(conv(x)). x: (N, C, H, W); w: (F, C, HH, WW); b: (F,). Returns (N, F, H', W')."""
    a, conv_cache = _fast_layers().conv_forward_fast(x, w, b, conv_param)
    out, relu_cache = relu_forward(a)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout, cache):
    """dout: (N, F, H', W'). Returns dx, dw, db."""
    conv_cache, relu_cache = cache
    return _fast_layers().conv_backward_fast(relu_backward(dout, relu_cache), conv_cache)


def conv_bn_relu_forward(
    x: Any,
    w: Any,
    b: Any,
    gamma: Any,
    beta: Any,
    conv_param: Dict[str, Any],
    bn_param: Dict[str, Any],
) -> Tuple[np.ndarray, tuple]:
    """relu(spatial_batchnorm(conv(x))). gamma, beta: (F,); bn_param as in
    spatial_batchnorm_forward. Returns (N, F, H', W')."""
    a, conv_cache = _fast_layers().conv_forward_fast(x, w, b, conv_param)
    return _bn_relu_forward(a, conv_cache, spatial_batchnorm_forward, gamma, beta, bn_param)


def conv_bn_relu_backward(dout: Any, cache: tuple) -> tuple:
    """dout: (N, F, H', W'). Returns dx, dw, db, dgamma (F,), dbeta (F,)."""
    return _bn_relu_backward(
        dout, cache, spatial_batchnorm_backward, _fast_layers().conv_backward_fast
    )


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """max_pool(relu(conv(x))). Shapes as in conv_relu_forward, then pooled."""
    fast = _fast_layers()
    a, conv_cache = fast.conv_forward_fast(x, w, b, conv_param)
    s, relu_cache = relu_forward(a)
    out, pool_cache = fast.max_pool_forward_fast(s, pool_param)
    return out, (conv_cache, relu_cache, pool_cache)


def conv_relu_pool_backward(dout, cache):
    """dout: the pooled output's shape. Returns dx, dw, db."""
    fast = _fast_layers()
    conv_cache, relu_cache, pool_cache = cache
    ds = fast.max_pool_backward_fast(dout, pool_cache)
    return fast.conv_backward_fast(relu_backward(ds, relu_cache), conv_cache)
