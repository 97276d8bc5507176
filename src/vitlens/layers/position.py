"""Position information: resampling learned position embeddings, fixed 2-D sine-cosine ones, and BEiT's
learned relative position bias."""

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


def resample_rel_pos_table(table: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> Tensor:
    """BEiT's (distances + 3, heads) relative position table for another patch grid, as Hugging Face does it.

    The (2 rows - 1) x (2 cols - 1) offsets are resized bilinearly (``align_corners=False``); the class
    token's three entries are kept. (timm resamples with a geometric spacing of its own; the loaders
    call timm's function for its checkpoints.)
    """
    if tuple(old_grid) == tuple(new_grid):
        return table
    old = (2 * old_grid[0] - 1, 2 * old_grid[1] - 1)
    new = (2 * new_grid[0] - 1, 2 * new_grid[1] - 1)
    offsets = table[: old[0] * old[1]].float().reshape(1, old[0], old[1], -1).permute(0, 3, 1, 2)
    offsets = F.interpolate(offsets, size=new, mode="bilinear", align_corners=False)
    offsets = offsets.permute(0, 2, 3, 1).reshape(new[0] * new[1], -1).to(table.dtype)
    return torch.cat([offsets, table[old[0] * old[1] :]])


def relative_position_index(grid: tuple[int, int]) -> Tensor:
    """BEiT's lookup (N + 1, N + 1) into a relative position table, the class token first.

    Patch pairs index the (2 rows - 1) x (2 cols - 1) table of offsets (row-major); the last three
    entries are the class token's: to every patch, from every patch, and to itself.
    """
    rows, cols = grid
    distances = (2 * rows - 1) * (2 * cols - 1)
    coords = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")).flatten(1)  # (2, N)
    offsets = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (N, N, 2): row and column offset
    index = torch.zeros(rows * cols + 1, rows * cols + 1, dtype=torch.long)
    index[1:, 1:] = (offsets[..., 0] + rows - 1) * (2 * cols - 1) + offsets[..., 1] + cols - 1
    index[0, :] = distances
    index[:, 0] = distances + 1
    index[0, 0] = distances + 2
    return index


def relative_position_bias(table: Tensor, index: Tensor, num_tokens: int, grid: tuple[int, int]) -> Tensor:
    """The (1, heads, N + 1, N + 1) bias that a (distances, heads) table and its index give; BEiT's.

    The table is learned for one patch grid (the pretraining one) and a class token; other inputs
    are refused with what was expected.
    """
    n = index.shape[0]
    if num_tokens != n:
        raise ValueError(
            f"the relative position bias covers the class token and the {grid[0]}x{grid[1]} patch grid it was "
            f"built for ({n} tokens); got {num_tokens} tokens: feed images of that grid, or load the model with "
            "img_size= to resample the table"
        )
    return table[index.view(-1)].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
