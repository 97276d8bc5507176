"""Pictures of attention: heat-map overlays and per-head grids (matplotlib / PIL).

Inputs are plain tensors or arrays, so these functions work on any map, from any method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..atomic import atomic_write


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
    maps = torch.as_tensor(maps).detach().float().cpu()
    if maps.dim() != 3:
        raise ValueError(f"head_grid expects maps of shape (heads, rows, cols), got {tuple(maps.shape)}")
    return panel_grid(maps, [f"head {h}" for h in range(maps.shape[0])], image, path, title, cmap, alpha)


def pyplot():
    """matplotlib's pyplot on the Agg backend (files, no screen), unless a backend was already chosen."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` to ``path`` (format from the suffix; PNG without one), whole or not at all, and close it."""
    kind = Path(path).suffix.lstrip(".").lower() or "png"
    path = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=kind))
    pyplot().close(fig)
    return path


def panel_grid(
    maps: Tensor,
    labels: list[str],
    image: Any | None = None,
    path: str | Path | None = None,
    title: str | None = None,
    cmap: str = "inferno",
    alpha: float = 0.6,
):
    """One panel per map (K, gh, gw), titled by ``labels``, after the input image when given."""
    plt = pyplot()
    maps = torch.as_tensor(maps).detach().float().cpu()
    if maps.dim() != 3 or len(labels) != maps.shape[0]:
        raise ValueError(f"expected maps (K, rows, cols) and K labels, got {tuple(maps.shape)} and {len(labels)}")
    count = maps.shape[0]
    cols = min(count, 4) if count > 1 else 1
    rows = -(-count // cols) + (1 if image is not None else 0)
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
    for k in range(count):
        ax = axes.flat[start + k]
        heat = maps[k].numpy()
        if base is not None:
            ax.imshow(base)
            ax.imshow(_resize_heat(heat, base.shape[:2]), cmap=cmap, alpha=alpha)
        else:
            ax.imshow(heat, cmap=cmap)
        ax.set_title(labels[k], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


# ------------------------------------------------------------ explanation pictures
def overlay(
    image: Any,
    heat: Any,
    cmap: str | None = None,
    alpha: float = 0.5,
    size: int | None = None,
    marks: Any = None,
    signed: bool = False,
):
    """A PIL image of ``heat`` (gh, gw) — any map on the patch grid — blended over ``image``.

    The map is upsampled bilinearly to the image, stretched to [0, 1] and coloured with
    ``cmap`` (default ``inferno``); ``size`` (pixels of the longer side) enlarges small images for
    viewing. ``marks`` (gh, gw, bool): patches outlined in cyan, e.g.
    ``explain.high_norm_tokens(...).high[b, -1]``. ``signed``: a map whose sign means something
    (LRP, IG, occlusion) — 0 is the middle of the colours (default ``bwr``: red for, blue against),
    scaled by the largest magnitude.
    """
    import matplotlib
    from PIL import Image

    base = to_numpy_image(image)
    heat = torch.as_tensor(heat).detach().float().cpu().squeeze()
    if heat.dim() != 2:
        raise ValueError(f"overlay expects one map of shape (rows, cols), got {tuple(heat.shape)}")
    if size is not None:
        scale = size / max(base.shape[:2])
        enlarged = Image.fromarray((base * 255).round().astype(np.uint8)).resize(
            (round(base.shape[1] * scale), round(base.shape[0] * scale)), Image.NEAREST
        )
        base = np.asarray(enlarged, dtype=np.float32) / 255.0
    heat = _resize_heat(heat.numpy(), base.shape[:2])
    if signed:
        heat = 0.5 + 0.5 * heat / max(float(np.abs(heat).max()), 1e-12)
    else:
        heat = (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-12)
    coloured = matplotlib.colormaps[cmap or ("bwr" if signed else "inferno")](heat)[..., :3]
    blended = (1 - alpha) * base + alpha * coloured
    picture = Image.fromarray((blended.clip(0, 1) * 255).round().astype(np.uint8))
    if marks is not None:
        _outline_patches(picture, torch.as_tensor(marks).bool().cpu(), heat.shape)
    return picture


def _outline_patches(picture: Any, marks: Tensor, shape: tuple[int, ...]) -> None:
    """Draw a cyan box around each marked patch of a (rows, cols) grid laid over ``picture``."""
    from PIL import ImageDraw

    rows, cols = marks.shape
    height, width = shape[:2]
    draw = ImageDraw.Draw(picture)
    for r, c in marks.nonzero().tolist():
        box = (c * width / cols, r * height / rows, (c + 1) * width / cols - 1, (r + 1) * height / rows - 1)
        draw.rectangle(box, outline=(0, 255, 255), width=max(1, round(min(width / cols, height / rows) / 12)))


def layer_grid(
    maps: Tensor,
    image: Any | None = None,
    path: str | Path | None = None,
    title: str | None = "rollout through layer l",
    cmap: str = "inferno",
    alpha: float = 0.6,
):
    """One panel per layer: ``maps`` is (L, gh, gw), e.g. ``explain.rollout_per_layer(...)[i]``."""
    maps = torch.as_tensor(maps).detach().float().cpu()
    if maps.dim() != 3:
        raise ValueError(f"layer_grid expects maps of shape (layers, rows, cols), got {tuple(maps.shape)}")
    return panel_grid(maps, [f"layer {i}" for i in range(maps.shape[0])], image, path, title, cmap, alpha)


def distance_plot(
    distances: Any,
    path: str | Path | None = None,
    title: str | None = "mean attention distance",
    ylabel: str = "mean attention distance (pixels)",
    image_size: float | None = None,
):
    """The ViT paper's Fig. 7: one dot per head, layer on x, distance (L, H) on y.

    ``image_size`` draws a dashed line at the image width for scale. NaN rows (layers without
    maps) are left empty. Returns the figure; saves it to ``path`` when given.
    """
    plt = pyplot()
    d = torch.as_tensor(distances).detach().float().cpu()
    if d.dim() != 2:
        raise ValueError(f"distance_plot expects distances of shape (layers, heads), got {tuple(d.shape)}")
    layers, heads = d.shape
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for h in range(heads):
        ax.scatter(torch.arange(layers), d[:, h], s=18, alpha=0.8, label=f"head {h}" if heads <= 8 else None)
    if image_size:
        ax.axhline(image_size, ls="--", lw=0.8, color="grey")
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_xticks(range(layers))
    if heads <= 8:
        ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig
