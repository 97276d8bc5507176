"""Pictures of what the model sees: overlays, per-head and per-layer grids, distance plots, the HTML explorer.

Everything here takes plain tensors or arrays (any map, from any method) and writes files whole
or not at all. ``vitlens.viz.report`` builds the self-contained attention explorer.
"""

from .plot import distance_plot, head_grid, layer_grid, overlay, panel_grid, save_figure, to_numpy_image

__all__ = ["distance_plot", "head_grid", "layer_grid", "overlay", "panel_grid", "save_figure", "to_numpy_image"]
