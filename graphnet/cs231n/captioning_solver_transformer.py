"""The course's `captioning_solver_transformer` module (assignment 3, Transformer_Captioning,
2021 to 2024 editions): CaptioningSolverTransformer, graphnet's CaptioningSolver training
with Adam (graphnet.training.captioning_solver)."""

from ..training.captioning_solver import CaptioningSolverTransformer

__all__ = ["CaptioningSolverTransformer"]
