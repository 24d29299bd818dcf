"""The course's `solver` module (every edition): graphnet's Solver, which samples and prints
as the course's does (graphnet.training.solver)."""

from ..training.solver import Solver  # noqa: F401

__all__ = ["Solver"]
