"""Normalization and dropout.

Batchnorm and dropout behave differently in train and eval mode: they are the stateful
gates, whose running averages and random stream the value store keeps per node
(`node.state`), so checkpoints can save them and the gate itself stays free of arrays.
Layernorm and groupnorm normalize each sample on its own and behave the same in both.
"""

import numpy as np

from .._format import describe, num
from ..kernels import _C, layers, norm
from ..kernels.norm import NormCache
from .base import (
    Gate,
    GateError,
    ShapeError,
    dims_match,
    integer,
    is_int,
    real,
    register_gate,
    share,
)


@register_gate
class BatchNorm(Gate):
    """Normalize each feature over the batch, then scale by gamma and shift by beta. Train
    mode uses the batch's statistics and updates the running averages; eval mode uses them."""

    op = "batchnorm"
    inputs = ("x", "gamma", "beta")
    formula = "{1}·(({0} − mean) / std) + {2}"
    rule = (
        "batchnorm: with x̂ the normalized input and g = dout·{1}: d{0} = (g − mean(g) − "
        "x̂·mean(g·x̂)) / std, d{1} = Σ dout·x̂, d{2} = Σ dout"
    )
    derivatives = ("(g − mean(g) − x̂·mean(g·x̂)) / std, g = dout·{1}", "Σ dout·x̂", "Σ dout")
    stateful = True
    channel_axis, rank, layout = 1, 2, "(N, D)"
    kernels = (layers.batchnorm_forward, layers.batchnorm_backward_alt)

    def __init__(self, eps=1e-5, momentum=0.9):
        # eps keeps the division by the standard deviation finite.
        self.eps = real("eps", eps, lambda v: v > 0, "a positive number")
        self.momentum = real("momentum", momentum, lambda v: 0 <= v <= 1, "in [0, 1]")

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

    def forward(
        self,
        state,
        training,
        x,
        gamma,
        beta,
        relu=False,
        skip=None,
        skip_first=False,
        pool=None,
        keep=True,
        activation=None,
    ):
        """relu: return the relu of the output instead (a fused batchnorm -> relu step,
        passes/norm_relu.py; for the arrays `norm.native` takes only); with skip, the relu
        of the output + skip (skip_first: skip + the output; a fused batchnorm -> add ->
        relu step, skip of x's shape and dtype); with pool, that and its max pool
        (norm.batchnorm_forward's pool and keep). activation: ("leaky_relu", alpha), return
        the leaky relu of the output instead (a fused batchnorm -> leaky relu step,
        passes/norm_activation.py; for the arrays `norm.native` takes only)."""
        if norm.native(x, gamma, beta):  # C++, on x's own layout
            out, cache, state["running_mean"], state["running_var"] = norm.batchnorm_forward(
                x,
                gamma,
                beta,
                self.eps,
                self.momentum,
                state.get("running_mean"),
                state.get("running_var"),
                training,
                relu,
                skip,
                skip_first,
                pool,
                keep,
                activation,
            )
            return out, cache
        # Mixed or integer dtypes: the numpy reference promotes them as numpy does.
        bn_param = {
            "mode": "train" if training else "test",
            "eps": self.eps,
            "momentum": self.momentum,
            **state,
        }
        out, cache = type(self).kernels[0](x, gamma, beta, bn_param)
        state["running_mean"], state["running_var"] = (
            bn_param["running_mean"],
            bn_param["running_var"],
        )
        return out, cache

    def backward(self, dout, cache, needs, relu=False, activation=None):
        """relu: dout is the gradient of the relu of the output (a forward with relu);
        activation: of the leaky relu of the output (a forward with that activation)."""
        if isinstance(cache, NormCache):
            return norm.batchnorm_backward(dout, cache, relu, activation)
        return type(self).kernels[1](dout, cache)

    def summarize_cache(self, cache, input_names):
        variance = 1.0 / np.square(cache.inv_std) - self.eps
        return [
            f"mode {'train' if cache.train else 'eval'}",
            f"x_hat {describe(cache.x_hat)}",
            f"variance {describe(variance)}",
        ]


@register_gate
class SpatialBatchNorm(BatchNorm):
    """Batchnorm of images (N, C, H, W): one mean and variance per channel."""

    op = "spatial_batchnorm"
    rank, layout = 4, "(N, C, H, W)"
    kernels = (layers.spatial_batchnorm_forward, layers.spatial_batchnorm_backward)

    def summarize_cache(self, cache, input_names):
        batchnorm_cache = cache if isinstance(cache, NormCache) else cache[0]
        return super().summarize_cache(batchnorm_cache, input_names)


_NORMALIZED = "(g − mean(g) − x̂·mean(g·x̂)) / std, g = dout·{1}"


def _normalization_cache(cache) -> list:
    return [f"x_hat {describe(cache.x_hat)}", f"1/std {describe(cache.inv_std)}"]


@register_gate
class LayerNorm(Gate):
    """Normalize each sample over its features (the last axis), then scale by gamma and
    shift by beta per feature. The same in train and eval mode: no running averages."""

    op = "layernorm"
    inputs = ("x", "gamma", "beta")
    formula = "{1}·(({0} − mean) / std) + {2}, per sample"
    rule = (
        "layernorm: with x̂ the input normalized per sample and g = dout·{1}: d{0} = "
        "(g − mean(g) − x̂·mean(g·x̂)) / std, the means over each sample's features; "
        "d{1} = Σ dout·x̂, d{2} = Σ dout over the samples"
    )
    derivatives = (_NORMALIZED + " (per sample)", "Σ dout·x̂", "Σ dout")

    def __init__(self, eps=1e-5):
        self.eps = real("eps", eps, lambda v: v > 0, "a positive number")

    def attrs(self):
        return {"eps": self.eps}

    def shape(self, x, gamma, beta):
        if x is not None and len(x) < 2:
            raise ShapeError(f"x must be (N, D) or (N, ..., D), got {x}")
        features = None if x is None else x[-1]
        for name, param in (("gamma", gamma), ("beta", beta)):
            if param is not None and (len(param) != 1 or not dims_match(param[0], features)):
                raise ShapeError(f"{name} must be ({features},) for x {x}, got {param}")
        return x

    def forward(self, x, gamma, beta, relu=False):
        """relu: as in BatchNorm.forward."""
        # Leading axes are samples alike: (N, T, D) normalizes each of the N * T vectors.
        # The kernel takes x as it is; the course's numpy layer takes its rows.
        if norm.native(x, gamma, beta):
            out, cache = norm.layernorm_forward(x, gamma, beta, self.eps, relu)
            return out, (cache, x.shape)
        rows = x.reshape(-1, x.shape[-1])
        out, cache = layers.layernorm_forward(rows, gamma, beta, {"eps": self.eps})
        return out.reshape(x.shape), (cache, x.shape)

    def backward(self, dout, cache, needs, relu=False):
        """relu: dout is the gradient of the relu of the output (a forward with relu)."""
        cache, shape = cache
        if isinstance(cache, NormCache):
            return norm.layernorm_backward(dout, cache, relu)
        dx, dgamma, dbeta = layers.layernorm_backward(dout.reshape(-1, shape[-1]), cache)
        return dx.reshape(shape), dgamma, dbeta

    def summarize_cache(self, cache, input_names):
        return _normalization_cache(cache[0])


@register_gate
class SpatialGroupNorm(Gate):
    """Group normalization of images (N, C, H, W): each sample's channels are split into G
    groups, each normalized over its channels and pixels, then every channel is scaled by
    gamma and shifted by beta ((C,) or (1, C, 1, 1), as in the course)."""

    op = "spatial_groupnorm"
    inputs = ("x", "gamma", "beta")
    formula = "{1}·(({0} − mean) / std) + {2}, per sample and group of channels"
    rule = (
        "groupnorm: like layernorm, with the means taken over each group of channels "
        "and its pixels, per sample"
    )
    derivatives = (
        _NORMALIZED + " (per sample and group)",
        "Σ dout·x̂ per channel",
        "Σ dout per channel",
    )

    def __init__(self, G=1, eps=1e-5):
        self.G = integer("G (the number of groups)", G, 1)
        self.eps = real("eps", eps, lambda v: v > 0, "a positive number")

    def attrs(self):
        return {"G": self.G, "eps": self.eps}

    def shape(self, x, gamma, beta):
        if x is not None and len(x) != 4:
            raise ShapeError(f"x must be (N, C, H, W), got {x}")
        channels = None if x is None else x[1]
        if channels is not None and channels % self.G:
            raise ShapeError(f"G={self.G} groups do not divide the {channels} channels of x {x}")
        for name, param in (("gamma", gamma), ("beta", beta)):
            if param is None:
                continue
            size = param[0] if len(param) == 1 else param[1] if len(param) == 4 else None
            if (
                len(param) == 4
                and tuple(param[i] for i in (0, 2, 3)) != (1, 1, 1)
                or size is None
                or not dims_match(size, channels)
            ):
                raise ShapeError(
                    f"{name} must be ({channels},) or (1, {channels}, 1, 1) for x {x}, got {param}"
                )
        return x

    def forward(self, x, gamma, beta, activation=None, pool=None, max_pool=False):
        """activation: (kernel, alpha), return that pointwise kernel of the output instead
        (a fused groupnorm -> activation step, passes/norm_activation.py; for the arrays
        `norm.native` takes only); pool, with it: (pool_height, pool_width, stride), the
        average pool of that (max_pool: the max pool, and its winners)."""
        if norm.native(x, gamma, beta):
            return norm.groupnorm_forward(
                x, gamma, beta, self.G, self.eps, activation, pool, max_pool
            )
        return layers.spatial_groupnorm_forward(x, gamma, beta, self.G, {"eps": self.eps})

    def backward(self, dout, cache, needs, activation=None, pool=None, winners=None):
        """activation, pool: the forward's; dout is the gradient of the activation's output
        (of the pool's, with a pool; winners: a max pool's, of its forward)."""
        if isinstance(cache, NormCache):
            return norm.groupnorm_backward(dout, cache, activation, pool, winners)
        return layers.spatial_groupnorm_backward(dout, cache)

    def summarize_cache(self, cache, input_names):
        return [f"G = {self.G} groups"] + _normalization_cache(cache)


def _next_key(rng: np.random.Generator) -> int:
    """`int(rng.integers(2**64, dtype=np.uint64))`: the generator's next 64 bits. A PCG64
    stream's (what the gate makes) are its raw output, read in 0.2 us instead of 3."""
    bits = rng.bit_generator
    if type(bits) is np.random.PCG64:
        return bits.random_raw()
    return int(rng.integers(2**64, dtype=np.uint64))


@register_gate
class Dropout(Gate):
    """Inverted dropout: in train mode each unit is zeroed with probability p and the rest
    are scaled by 1 / (1 - p); eval mode is the identity. With a seed the mask is the same
    on every call (what a gradient check needs) and is the course's for that seed; without
    one each call draws a new mask from the node's own random stream (a numpy Generator,
    itself seeded from numpy's global state when the node first runs or is built by a
    model): one 64-bit key per call, from which the C++ kernel derives every unit's uniform
    (SplitMix64's output at the unit's index, cpp/dropout_loops.h) while it writes the
    output and the mask in one pass. The masks are the same for any thread count, CPU and
    float dtype; integer and float16 inputs take the course's function instead, seeded
    from the stream."""

    op = "dropout"
    inputs = ("x",)
    formula = "{0} × mask / (1 − p)"
    rule = (
        "dropout passes the gradient only through the units it kept, scaled like the forward pass"
    )
    derivatives = ("mask / (1 − p)",)
    stateful = True

    def __init__(self, p=0.5, seed=None):
        self.p = real(
            "p (the probability of dropping a unit)", p, lambda v: 0 <= v < 1, "a number in [0, 1)"
        )
        if seed is not None and not (is_int(seed) and 0 <= seed < 2**63):
            raise GateError(f"seed must be an integer in [0, 2**63) or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)

    def attrs(self):
        return {"p": self.p, "seed": self.seed}

    def shape(self, x):
        return x

    def eval_forward(self, x):
        """The identity: x, and a cache without a mask."""
        if norm.native(x):  # without the course's checks
            return x, ({"mode": "test", "p": self.p, "seed": self.seed}, None)
        return layers.dropout_forward(x, {"mode": "test", "p": self.p, "seed": self.seed})

    def forward(self, state, training, x):
        if not training:
            return self.eval_forward(x)
        if self.seed is not None:  # np.random.seed(seed)'s draws, the course's masks
            return layers.dropout_forward(x, {"mode": "train", "p": self.p, "seed": self.seed})
        if "rng" not in state:
            state["rng"] = np.random.default_rng(np.random.randint(2**31))
        if not norm.native(x):  # integers, float16: the course's function, seeded from the stream
            return layers.dropout_forward(
                x, {"mode": "train", "p": self.p, "seed": int(state["rng"].integers(2**63))}
            )
        # Unseeded: a key from the node's own stream (so checkpoints and resumes replay the
        # masks), the units' uniforms from the key in C++, kept where below 1 - p.
        out, mask = _C.dropout_forward(x, _next_key(state["rng"]), 1 - self.p)
        return out, ({"mode": "train", "p": self.p, "seed": None}, mask)

    def backward(self, dout, cache, needs):
        return (layers.dropout_backward(dout, cache),)

    def summarize_cache(self, cache, input_names):
        param, mask = cache
        if mask is None:
            return [f"eval mode: no mask (p = {num(param['p'])})"]
        kept = np.asarray(mask) != 0
        return [
            f"mask keeps {int(kept.sum())}/{kept.size} units {share(kept)}, p = {num(param['p'])}",
            f"kept units scaled by {num(1 / (1 - param['p']))}",
        ]
