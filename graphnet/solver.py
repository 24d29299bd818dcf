"""CS231n's `solver` module at the course's import path (graphnet.training.solver)."""

from .training.solver import Solver  # noqa: F401

__all__ = ["Solver"]
