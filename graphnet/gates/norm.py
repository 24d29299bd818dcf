"""Batch normalization and dropout: the gates whose behaviour depends on train/eval mode.

They are the stateful gates: the node keeps batchnorm's running averages and dropout's
random stream in `node.state`, so checkpoints can save them and the gate stays stateless.
"""
import numpy as np

from ..kernels import layers
from .base import Gate, ShapeError, dims_match


class BatchNorm(Gate):
    """Normalize each feature over the batch, then scale by gamma and shift by beta. Train
    mode uses the batch's statistics and updates the running averages; eval mode uses them."""
    op = "batchnorm"
    stateful = True
    channel_axis, rank, layout = 1, 2, "(N, D)"
    kernels = (layers.batchnorm_forward, layers.batchnorm_backward_alt)

    def __init__(self, eps=1e-5, momentum=0.9):
        self.eps, self.momentum = float(eps), float(momentum)

    def attrs(self):
        return {"eps": self.eps, "momentum": self.momentum}

    def shape(self, x, gamma, beta):
        if x is not None and len(x) != self.rank:
            raise ShapeError(f"x must be {self.layout}, got {x}")
        features = None if x is None else x[self.channel_axis]
        for name, param in (("gamma", gamma), ("beta", beta)):
            if param is not None and (len(param) != 1 or not dims_match(param[0], features)):
                raise ShapeError(f"{name} must be ({features},) for x {x}, got {param}")
        return x

    def forward(self, state, training, x, gamma, beta):
        bn_param = {"mode": "train" if training else "test", "eps": self.eps,
                    "momentum": self.momentum, **state}
        out, cache = type(self).kernels[0](x, gamma, beta, bn_param)
        state["running_mean"], state["running_var"] = bn_param["running_mean"], bn_param["running_var"]
        return out, cache

    def backward(self, dout, cache, needs):
        return type(self).kernels[1](dout, cache)


class SpatialBatchNorm(BatchNorm):
    """Batchnorm of images (N, C, H, W): one mean and variance per channel."""
    op = "spatial_batchnorm"
    rank, layout = 4, "(N, C, H, W)"
    kernels = (layers.spatial_batchnorm_forward, layers.spatial_batchnorm_backward)


class Dropout(Gate):
    """Inverted dropout: in train mode each unit is zeroed with probability p and the rest
    are scaled by 1 / (1 - p); eval mode is the identity. With a seed the mask is the same
    on every call (what a gradient check needs); without one each call draws a new mask
    from the node's own random stream, itself seeded from numpy's global state."""
    op = "dropout"
    stateful = True

    def __init__(self, p=0.5, seed=None):
        if not 0 <= p < 1:
            raise ShapeError(f"p (the probability of dropping a unit) must be in [0, 1), got {p!r}")
        self.p, self.seed = float(p), seed

    def attrs(self):
        return {"p": self.p, "seed": self.seed}

    def shape(self, x):
        return x

    def forward(self, state, training, x):
        seed = self.seed
        if seed is None and training:
            if "rng" not in state:
                state["rng"] = np.random.default_rng(np.random.randint(2**31))
            seed = int(state["rng"].integers(2**63))
        return layers.dropout_forward(x, {"mode": "train" if training else "test",
                                          "p": self.p, "seed": seed})

    def backward(self, dout, cache, needs):
        return (layers.dropout_backward(dout, cache),)
