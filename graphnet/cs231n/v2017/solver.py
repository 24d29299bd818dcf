"""The course's `solver` module, 2017 edition: the same Solver as graphnet.cs231n.solver."""

from ..solver import Solver  # noqa: F401

__all__ = ["Solver"]
