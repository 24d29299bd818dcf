"""The course's `layers` module for the 2018+ editions: dropout's `p` is the probability of
KEEPING a unit (`dropout_forward` is graphnet.kernels.layers.dropout_forward_keep). The
other layers, layernorm and spatial groupnorm included, read their arguments alike in
every edition. The functions live in graphnet.kernels.layers."""

from ..kernels.layers import *  # noqa: F401,F403
from ..kernels.layers import __all__  # noqa: F401
from ..kernels.layers import dropout_forward_keep as dropout_forward  # noqa: F401
