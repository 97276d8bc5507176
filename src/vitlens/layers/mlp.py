"""The feed-forward half of a transformer layer, each token on its own, and its activations.

Three layouts, by timm's names: ``Mlp`` (fc1 -> act -> fc2), the packed gated unit
(``swiglu_packed``: fc1 outputs both halves, act(a) * b) and the unpacked one (``swiglu``:
``fc1_g`` and ``fc1_x``, act(g) * x). Each may normalize its hidden units before fc2.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..config import ACTIVATIONS, MLP_LAYERS
from .norm import make_norm


class QuickGELU(nn.Module):
    """x · sigmoid(1.702 x): the GELU approximation of OpenAI's original CLIP."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_activation(kind: str) -> nn.Module:
    if kind == "gelu":
        return nn.GELU()
    if kind == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if kind == "quick_gelu":
        return QuickGELU()
    if kind == "relu":
        return nn.ReLU()
    if kind == "silu":
        return nn.SiLU()
    raise ValueError(f"unknown activation {kind!r}; expected one of {ACTIVATIONS}")


class Mlp(nn.Module):
    """Linear -> activation -> (norm) -> Linear, applied to each token alone.

    ``layout='swiglu_packed'``: the first layer is "packed", it outputs both halves of a gated
    unit act(a) * b, and the second takes half its width (DINOv2-giant). ``layout='swiglu'``: the
    two halves come from separate layers ``fc1_g`` and ``fc1_x`` of ``hidden_dim`` each.
    ``norm`` (a norm kind) normalizes the hidden units; ``bias=False`` drops every bias.
    ``gate_rule``: unset, a gated unit multiplies act(a) and b; relevance methods set it, for a
    while, to a function (act(a), b) -> product of the same value with their gradient rule.
    """

    gate_rule: Callable[[Tensor, Tensor], Tensor] | None = None

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        *,
        act_layer: str = "gelu",
        layout: str = "mlp",
        norm: str | None = None,
        norm_eps: float = 1e-6,
        bias: bool = True,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        if layout not in MLP_LAYERS:
            raise ValueError(f"unknown MLP layout {layout!r}; expected one of {MLP_LAYERS}")
        self.layout = layout
        inner = hidden_dim // 2 if layout == "swiglu_packed" else hidden_dim
        if layout == "swiglu":
            self.fc1_g = nn.Linear(dim, hidden_dim, bias=bias)
            self.fc1_x = nn.Linear(dim, hidden_dim, bias=bias)
        else:
            self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = make_activation(act_layer)
        self.drop1 = nn.Dropout(drop)
        self.norm = make_norm(norm, inner, norm_eps) if norm else nn.Identity()
        self.fc2 = nn.Linear(inner, dim, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        if self.layout != "mlp":
            a, b = (self.fc1_g(x), self.fc1_x(x)) if self.layout == "swiglu" else self.fc1(x).chunk(2, dim=-1)
            x = self.act(a) * b if self.gate_rule is None else self.gate_rule(self.act(a), b)
        else:
            x = self.act(self.fc1(x))
        return self.drop2(self.fc2(self.norm(self.drop1(x))))
