"""Plan rewrites: each pass replaces runs of steps with fused steps (see base.py).
Importing this package registers the built-in passes."""

from . import (  # noqa: F401
    activation_pool,
    affine_chain,
    batchnorm_fold,
    conv_chain,
    conv_activation,
    conv_batchnorm_relu_pool,
    conv_relu_pool,
    dropout_mean,
    feed_check,
    norm_activation,
    norm_relu,
    relu_pool,
)
from .base import FusionPass, register_pass  # noqa: F401
