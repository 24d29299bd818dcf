"""The course's `captioning_solver` module, 2017 edition: the same CaptioningSolver."""

from ...training.captioning_solver import CaptioningSolver  # noqa: F401

__all__ = ["CaptioningSolver"]
