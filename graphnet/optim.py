"""CS231n's `optim` module at the course's import path: sgd, sgd_momentum, rmsprop, adam,
each `(w, dw, config) -> (next_w, config)` (graphnet.training.optim)."""

from .training.optim import *  # noqa: F401,F403
from .training.optim import __all__  # noqa: F401
