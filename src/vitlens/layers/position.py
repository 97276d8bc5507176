"""Position information: resampling learned position embeddings, and fixed 2-D sine-cosine ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import POS_INTERPOLATIONS


def resample_pos_embed(
    pos: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], method: str = "timm"
) -> Tensor:
    """Resize a (1, rows*cols, D) grid of position embeddings to ``new_grid``.

    The three libraries whose checkpoints vitlens reads each resample differently, and the
    numbers differ, so ``method`` picks the rule of the library a checkpoint came from:
    ``'timm'`` bicubic with antialias; ``'hf'`` bicubic without antialias (Hugging Face
    ``interpolate_pos_encoding``); ``'torchvision'`` bicubic with ``align_corners=True``.
    """
    if method not in POS_INTERPOLATIONS:
        raise ValueError(f"unknown position-embedding resampling {method!r}; expected one of {POS_INTERPOLATIONS}")
    if tuple(old_grid) == tuple(new_grid):
        return pos
    dim = pos.shape[-1]
    # (1, rows*cols, D) -> (1, D, rows, cols), the layout F.interpolate resizes
    grid = pos.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    if method == "timm":
        grid = F.interpolate(grid, size=new_grid, mode="bicubic", antialias=True, align_corners=False)
    elif method == "hf":
        grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    else:  # torchvision
        grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=True)
    return grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos.dtype)


def sincos_2d(grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed 2-D sine-cosine position embeddings (MoCo v3 / MAE), shape (1, rows*cols, dim)."""
    if dim % 4:
        raise ValueError(f"pos_embed='sincos2d' needs embed_dim divisible by 4, got {dim}")
    ys, xs = torch.meshgrid(
        torch.arange(grid[0], dtype=torch.float32), torch.arange(grid[1], dtype=torch.float32), indexing="ij"
    )
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    ys = ys.flatten()[:, None] * omega[None]
    xs = xs.flatten()[:, None] * omega[None]
    return torch.cat([xs.sin(), xs.cos(), ys.sin(), ys.cos()], dim=1)[None]
