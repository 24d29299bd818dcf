"""Short summaries of what each gate saved for its backward pass (`show_cache=True`).

The cache is where backprop's "local gradient" comes from, so seeing it explains the
gradients: which input a max gate picked, which units a relu or dropout let through,
what batchnorm normalized with. Gates with a telling cache get a summary of their own;
every other cache is described generically (arrays by shape, masks by how many pass).
"""
import numpy as np

from ._format import describe, is_scalar, num, scalar


def summarize_cache(node):
    """Lines of text describing `node.cache`, [] when the gate saved nothing."""
    if node.cache is None:
        return []
    summarize = _BY_OP.get(node.op)
    if summarize is not None:
        return summarize(node)
    return [f"saved {_generic(node.cache)}"]


def _mask(mask, what):
    mask = np.asarray(mask)
    if mask.size == 1:
        return f"{what}: {bool(mask.reshape(()))}"
    return f"{what}: {int(mask.sum())}/{mask.size} true ({num(100 * mask.mean())}%)"


def _max(node):
    a, b = (i.name for i in node.inputs)
    return [_mask(node.cache, f"mask {a} >= {b}")]


def _relu(node):
    return [_mask(node.cache, f"mask {node.inputs[0].name} > 0")]


def _batchnorm(node):
    cache = node.cache[0] if node.op == "spatial_batchnorm" else node.cache
    variance = 1.0 / np.square(cache.inv_std) - node.gate.eps
    return [f"mode {'train' if cache.train else 'eval'}",
            f"x_hat {describe(cache.x_hat)}",
            f"variance {describe(variance)}"]


def _dropout(node):
    param, mask = node.cache
    if mask is None:
        return [f"eval mode: no mask (p = {num(param['p'])})"]
    kept = np.asarray(mask) != 0
    return [f"mask keeps {int(kept.sum())}/{kept.size} units ({num(100 * kept.mean())}%),"
            f" p = {num(param['p'])}",
            f"kept units scaled by {num(1 / (1 - param['p']))}"]


def _conv(node):
    x, w = node.cache[:2]
    return [f"saved x {np.shape(x)} and w {np.shape(w)} for dw and dx"]


def _affine(node):
    _, rows, w = node.cache
    return [f"saved x as rows {np.shape(rows)} and w {np.shape(w)}"]


def _loss(node):
    return [f"saved d loss / d scores {np.shape(node.cache)}, computed with the loss"]


def _max_pool(node):
    x_shape, winners = node.cache[:2]
    return [f"saved each window's winner {np.shape(winners)} of x {tuple(x_shape)}"]


_BY_OP = {"max": _max, "relu": _relu, "batchnorm": _batchnorm,
          "spatial_batchnorm": _batchnorm, "dropout": _dropout, "conv": _conv,
          "max_pool": _max_pool, "affine": _affine, "softmax_loss": _loss, "svm_loss": _loss}


def _generic(item):
    if item is None:
        return "nothing"
    if isinstance(item, np.ndarray) and item.dtype == bool:
        return _mask(item, "mask")
    if isinstance(item, (np.ndarray, np.generic, float, int)):
        return num(scalar(item)) if is_scalar(item) else f"array {item.shape}"
    if isinstance(item, dict):
        return "{" + ", ".join(f"{k}: {_generic(v)}" for k, v in item.items()) + "}"
    if isinstance(item, tuple) and hasattr(item, "_fields"):
        return ", ".join(f"{k} {_generic(v)}" for k, v in zip(item._fields, item))
    if isinstance(item, (tuple, list)):
        # A tuple of ints is a shape (conv and pool keep the input's shape).
        if item and all(isinstance(v, int) for v in item):
            return f"shape {item}"
        return ", ".join(_generic(v) for v in item)
    return type(item).__name__
