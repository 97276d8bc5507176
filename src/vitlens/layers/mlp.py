"""The feed-forward half of a transformer layer, and the activations it can use."""

from __future__ import annotations

from torch import Tensor, nn

from ..config import ACTIVATIONS


def make_activation(kind: str) -> nn.Module:
    if kind == "gelu":
        return nn.GELU()
    if kind == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if kind == "relu":
        return nn.ReLU()
    if kind == "swiglu":
        return nn.SiLU()
    raise ValueError(f"unknown activation {kind!r}; expected one of {ACTIVATIONS}")


class Mlp(nn.Module):
    """The feed-forward part: Linear -> activation -> Linear, applied to each token alone.

    With ``act_layer='swiglu'`` the first layer is "packed": it outputs both halves of a gated
    unit (SiLU(a) * b), and the second layer takes half that width (DINOv2-giant's layout).
    """

    def __init__(self, dim: int, hidden_dim: int, *, act_layer: str = "gelu", drop: float = 0.0) -> None:
        super().__init__()
        self.gated = act_layer == "swiglu"
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = make_activation(act_layer)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim // 2 if self.gated else hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1(x)
        if self.gated:
            a, b = x.chunk(2, dim=-1)
            x = self.act(a) * b
        else:
            x = self.act(x)
        return self.drop2(self.fc2(self.drop1(x)))
