"""graphnet: a computational-graph engine with explicit gates."""
from . import _C  # noqa: F401  (fail early if the C++ extension was not built)

__version__ = "0.1.0"
