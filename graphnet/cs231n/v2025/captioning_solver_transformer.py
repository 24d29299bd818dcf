"""The course's `captioning_solver_transformer` module, 2025 edition (the same as 2021-2024):
CaptioningSolverTransformer, graphnet's CaptioningSolver training with Adam."""

from ...training.captioning_solver import CaptioningSolverTransformer

__all__ = ["CaptioningSolverTransformer"]
