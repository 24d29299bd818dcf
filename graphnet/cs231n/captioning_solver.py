"""The course's `captioning_solver` module (assignment 3): CaptioningSolver, graphnet's
Solver on captioning data (graphnet.training.captioning_solver)."""

from ..training.captioning_solver import CaptioningSolver  # noqa: F401

__all__ = ["CaptioningSolver"]
