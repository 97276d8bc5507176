"""Normalization and residual scaling: LayerNorm (or none at all), and layer scale."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """A LayerNorm, or nothing at all for ``kind='none'`` (the seed model has no norms)."""
    return nn.LayerNorm(dim, eps=eps) if kind == "layernorm" else nn.Identity()


class LayerScale(nn.Module):
    """Per-channel learned scale on a residual branch (CaiT / DINOv2), initialised small."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma
