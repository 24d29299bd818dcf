"""Plan rewrites: each pass replaces runs of steps with fused steps (see base.py).
Importing this package registers the built-in passes."""

from . import batchnorm_fold, conv_batchnorm_relu_pool, conv_relu_pool, relu_pool  # noqa: F401
from .base import FusionPass, register_pass  # noqa: F401
