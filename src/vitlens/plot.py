"""Pictures of attention: heat-map overlays and per-head grids (matplotlib / PIL).

Inputs are plain tensors or arrays, so these functions work on any map, from any method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor


def to_numpy_image(image: Any) -> np.ndarray:
    """An image as an (H, W, 3) float array in [0, 1], from a PIL image, array or (C, H, W) tensor."""
    if isinstance(image, Tensor):
        image = image.detach().float().cpu()
        if image.dim() == 3 and image.shape[0] in (1, 3, 4):
            image = image.permute(1, 2, 0)
        image = image.numpy()
    arr = np.asarray(image)
    arr = arr.astype(np.float32)
    if arr.max() > 1.0:
        arr = arr / 255.0
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.shape[-1] == 4:
        arr = arr[..., :3]
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:  # a normalized tensor: stretch back to [0, 1] for display
        arr = (arr - lo) / max(hi - lo, 1e-12)
    return arr


def _resize_heat(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.as_tensor(heat, dtype=torch.float32)[None, None]
    return torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def head_grid(
    maps: Tensor,
    image: Any | None = None,
    path: str | Path | None = None,
    title: str | None = None,
    cmap: str = "inferno",
    alpha: float = 0.6,
):
    """One panel per head: ``maps`` is (H, gh, gw); drawn over ``image`` when given.

    Returns the matplotlib figure; saves it to ``path`` when given.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    maps = torch.as_tensor(maps).detach().float().cpu()
    if maps.dim() != 3:
        raise ValueError(f"head_grid expects maps of shape (heads, rows, cols), got {tuple(maps.shape)}")
    heads = maps.shape[0]
    cols = min(heads, 4) if heads > 1 else 1
    rows = -(-heads // cols) + (1 if image is not None else 0)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    start = 0
    base = None
    if image is not None:
        base = to_numpy_image(image)
        axes[0, 0].imshow(base)
        axes[0, 0].set_title("input", fontsize=9)
        start = cols
    for h in range(heads):
        ax = axes.flat[start + h]
        heat = maps[h].numpy()
        if base is not None:
            ax.imshow(base)
            ax.imshow(_resize_heat(heat, base.shape[:2]), cmap=cmap, alpha=alpha)
        else:
            ax.imshow(heat, cmap=cmap)
        ax.set_title(f"head {h}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig
