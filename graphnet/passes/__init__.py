"""Plan rewrites: each pass replaces runs of steps with fused steps (see base.py).
Importing this package registers the built-in passes."""
from . import conv_relu_pool  # noqa: F401  (registers the pass)
from .base import FusionPass, register_pass  # noqa: F401
