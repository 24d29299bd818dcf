"""The course's `classification_solver_vit` module, 2025 edition: ClassificationSolverViT
(graphnet.training.classification_solver_vit), training a VisionTransformer with Adam."""

from ...training.classification_solver_vit import ClassificationSolverViT

__all__ = ["ClassificationSolverViT"]
