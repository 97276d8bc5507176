"""Data: bundled and standard image sets, and the pre-processing each model expects."""

from .cluttered import ClutteredDigits, make_cluttered_digits
from .transforms import transforms_for

__all__ = ["ClutteredDigits", "make_cluttered_digits", "transforms_for"]
