"""Data: bundled and standard image sets, and the pre-processing each model expects."""

from .transforms import transforms_for

__all__ = ["transforms_for"]
