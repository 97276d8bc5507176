"""Normalization and residual scaling: LayerNorm, RMSNorm (or none at all), and layer scale."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import NORMS


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """``'layernorm'``, ``'rmsnorm'`` (x / rms(x) · weight: no mean, no bias), or ``'none'`` (the seed model)."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm layer {kind!r}; expected one of {NORMS}")


class LayerScale(nn.Module):
    """Per-channel learned scale on a residual branch (CaiT / DINOv2), initialised small."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma
