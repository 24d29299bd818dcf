"""One gate type per op. Each module groups gates that share a shape rule."""
from .base import Gate, ShapeError  # noqa: F401
