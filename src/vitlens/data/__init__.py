"""Data: bundled and standard image sets, and the pre-processing each model expects."""

from .cluttered import ClutteredDigits, make_cluttered_digits
from .sources import build_dataset, open_source
from .transforms import transforms_for

__all__ = ["ClutteredDigits", "build_dataset", "make_cluttered_digits", "open_source", "transforms_for"]
