"""The gates: one class per op, each complete in one place, registered by op name.

Importing this package registers the built-in gates; `gate_names()` lists every
registered op, built-in or defined elsewhere with `@register_gate`.
"""

from . import conv, elementwise, nn, norm, reduce  # noqa: F401  (registers the built-ins)
from . import indexing, logprob, pointwise, pool, tensor  # noqa: F401  (the tensor gates)
from . import sequence  # noqa: F401  (the recurrent and attention gates)
from .base import (
    Gate,
    GateError,
    ShapeError,
    gate_class,
    gate_names,  # noqa: F401
    register_gate,
)
