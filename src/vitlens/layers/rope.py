"""Rotary position embeddings (RoPE) on the patch grid: where a patch sits, as a rotation of q and k.

Each head's channels are split in pairs; pair j of a patch at grid coordinates (y, x) is rotated by
an angle that grows with the coordinate along one axis (half the pairs follow y, half x) at a
frequency of its own. The dot product q·k then depends on how far apart two patches are, not on
where they are. Prefix tokens (class, registers) are not rotated.

Three rules of timm's ``eva.py`` are here, each exact against it at any grid size:

* ``'axial'`` (EVA-02, Perception Encoder): integer coordinates (+ ``rope_grid_offset``), rescaled
  to ``rope_ref_grid`` when given; frequencies 1 / temperature^(j / n).
* ``'dinov3'``: coordinates centred on each patch and normalized to [-1, 1] (each axis by its own
  size, or by the grid's smaller or larger side); angle 2π · coordinate / period, periods
  temperature^(j / n) or spread between two given periods.
* ``'mixed'`` (RoPE-Mixed, Heo et al., 2024): integer coordinates; pair j of a head rotates by
  fx_j · x + fy_j · y, its two frequencies learned for each block and head (:class:`MixedRope`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..config import ViTConfig


def grid_coords(
    grid: tuple[int, int],
    indexing: str = "ij",
    offset: float = 0.0,
    ref: tuple[int, int] | None = None,
    device: torch.device | None = None,
) -> Tensor:
    """Integer patch coordinates plus ``offset``, rescaled onto a ``ref`` grid when given: (rows, cols, 2).

    The channels are (row, column), or (column, row) for ``indexing='xy'``; the layout stays row-major.
    """
    shape = list(grid)
    if indexing == "xy":
        shape, ref = shape[::-1], ref[::-1] if ref is not None else None
    axes = [torch.arange(s, dtype=torch.int64, device=device).to(torch.float32) + offset for s in shape]
    if ref is not None:  # EVA's rule for a grid other than the pretraining one
        axes = [t / s * r for t, s, r in zip(axes, shape, ref)]
    return torch.stack(torch.meshgrid(axes, indexing=indexing), dim=-1)


def rope_angles(config: ViTConfig, grid: tuple[int, int]) -> Tensor:
    """The rotation angle of every patch's every channel pair: (rows * cols, head_dim // 2), float32."""
    c = config
    bands = c.attn_head_dim // 4  # frequencies per axis
    # coordinate channels (x, y) instead of (y, x) for 'xy'; the layout stays row-major
    shape = list(grid)[::-1] if c.rope_grid_indexing == "xy" else list(grid)
    if c.rope == "axial":
        coords = grid_coords(grid, c.rope_grid_indexing, c.rope_grid_offset, c.rope_ref_grid)  # (rows, cols, 2)
        freqs = 1.0 / c.rope_temperature ** (torch.arange(bands, dtype=torch.int64).to(torch.float32) / bands)
        angles = coords.unsqueeze(-1) * freqs  # (rows, cols, 2, bands)
    elif c.rope == "dinov3":
        if c.rope_normalize == "separate":
            denominators = [float(s) for s in shape]
        else:
            side = float(min(shape) if c.rope_normalize == "min" else max(shape))
            denominators = [side] * len(shape)
        axes = [
            (torch.arange(0.5, s, dtype=torch.float32) + c.rope_grid_offset) / d for s, d in zip(shape, denominators)
        ]
        coords = 2.0 * torch.stack(torch.meshgrid(axes, indexing=c.rope_grid_indexing), dim=-1) - 1.0
        if c.rope_periods is not None:
            low, high = c.rope_periods
            periods = low * ((high / low) ** torch.linspace(0, 1, bands, dtype=torch.float32))
        else:
            periods = c.rope_temperature ** (2.0 * torch.arange(bands, dtype=torch.float32) / (c.attn_head_dim // 2))
        angles = 2 * math.pi * coords.unsqueeze(-1) / periods  # (rows, cols, 2, bands)
    else:
        raise ValueError(f"no rotary embedding for rope={c.rope!r}")
    return angles.flatten(-2).flatten(0, -2)


def rope_sin_cos(config: ViTConfig, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(sin, cos) of :func:`rope_angles`, each (rows * cols, head_dim), laid out as :func:`rotate` pairs channels."""
    angles = rope_angles(config, grid)
    sin, cos = angles.sin(), angles.cos()
    if config.rope_rotate_half:  # channel j pairs with j + head_dim / 2
        return torch.cat([sin, sin], dim=-1), torch.cat([cos, cos], dim=-1)
    return sin.repeat_interleave(2, -1), cos.repeat_interleave(2, -1)  # channel 2j pairs with 2j + 1


def rotate(x: Tensor, sin: Tensor, cos: Tensor, half: bool) -> Tensor:
    """Rotate each channel pair of ``x`` (..., N, head_dim) by its angle; the result in ``x``'s dtype."""
    if half:
        x1, x2 = x.chunk(2, dim=-1)
        turned = torch.cat([-x2, x1], dim=-1)
    else:
        turned = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape(x.shape)
    return (x * cos + turned * sin).to(x.dtype)


def mixed_freqs(head_dim: int, depth: int, num_heads: int, temperature: float = 10.0) -> Tensor:
    """RoPE-Mixed's starting frequencies, (2, depth, heads, head_dim // 2): (fx, fy) per channel pair.

    Half the pairs start along one direction and half along the perpendicular one, magnitudes
    1 / temperature^(4j / head_dim) as in axial RoPE; each block's each head turns its two directions
    by an angle of its own, drawn at random.
    """
    magnitude = 1.0 / temperature ** (torch.arange(0, head_dim, 4, dtype=torch.float32) / head_dim)
    turn = torch.rand(depth, num_heads, 1) * 2 * math.pi
    fx = torch.cat([magnitude * torch.cos(turn), magnitude * torch.cos(turn + math.pi / 2)], dim=-1)
    fy = torch.cat([magnitude * torch.sin(turn), magnitude * torch.sin(turn + math.pi / 2)], dim=-1)
    return torch.stack([fx, fy])


class MixedRope(nn.Module):
    """RoPE-Mixed: each block's each head rotates channel pair j of the patch at (x, y) by fx_j · x + fy_j · y.

    ``freqs`` (2, depth, heads, head_dim // 2) are learned (timm's ``rope.freqs``). x is the first
    channel of :func:`grid_coords` with the config's ``rope_grid_indexing`` (the column for ``'xy'``,
    RoPE-Mixed's own), y the second.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        c = config
        self.indexing = c.rope_grid_indexing
        self.freqs = nn.Parameter(mixed_freqs(c.attn_head_dim, c.depth, c.num_heads, c.rope_temperature))

    def sin_cos(self, grid: tuple[int, int], index: int) -> tuple[Tensor, Tensor]:
        """(sin, cos) of block ``index``'s angles for this grid, each (heads, rows * cols, head_dim), float32."""
        coords = grid_coords(grid, self.indexing, device=self.freqs.device).reshape(-1, 2)
        fx, fy = self.freqs[:, index].float()  # (heads, head_dim // 2) each
        angles = coords[:, 0, None] * fx[:, None] + coords[:, 1, None] * fy[:, None]  # (heads, N, head_dim // 2)
        return angles.sin().repeat_interleave(2, -1), angles.cos().repeat_interleave(2, -1)
