"""The attention explorer: one self-contained HTML file to look at, poke and compare a ViT's attention.

``build(model, images, "report.html")`` writes it; ``render(model, images)`` returns a
:class:`Report` that Jupyter shows inline.
"""

from .builder import Report, build, render

__all__ = ["Report", "build", "render"]
