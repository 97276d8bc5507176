"""Pooling the tokens into one feature: a learned query that attends over them (SigLIP's head).

timm's ``AttentionPoolLatent`` (``global_pool='map'``): a latent query vector, projected, attends
over the tokens' keys and values with its own heads; the result goes through a projection and a
residual MLP. Its attention, (B, H, 1, N), says where the pooled feature came from: for a model
without a class token it is the class row.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .attention import attend
from .mlp import Mlp
from .norm import make_norm


class AttentionPool(nn.Module):
    """One learned query over the tokens: ``forward(x, need_weights) -> (pooled (B, D), weights or None)``.

    ``relevance_rule`` as in :class:`~vitlens.layers.attention.Attention`."""

    relevance_rule: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]] | None = None

    def __init__(
        self,
        dim: int,
        num_heads: int,
        hidden_dim: int,
        *,
        act_layer: str = "gelu",
        norm_layer: str = "layernorm",
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by the pool's num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.norm = make_norm(norm_layer, dim, norm_eps)
        self.mlp = Mlp(dim, hidden_dim, act_layer=act_layer)

    def forward(self, x: Tensor, need_weights: bool = False, skip: int = 0) -> tuple[Tensor, Tensor | None]:
        """Pool ``x`` (B, N, D) but its first ``skip`` tokens; the weights, if asked, cover all N (0 on those)."""
        bias = None
        if skip and not need_weights:
            x = x[:, skip:]
        elif skip:  # the same numbers, over every token: the skipped ones masked out (in the graph, for gradients)
            bias = x.new_zeros(1, 1, 1, x.shape[1])
            bias[..., :skip] = float("-inf")
        B, N, D = x.shape
        q = self.q(self.latent).expand(B, -1, -1).reshape(B, 1, self.num_heads, self.head_dim).transpose(1, 2)
        # (B, N, 2D) -> (2, B, H, N, d)
        k, v = self.kv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.relevance_rule is not None:
            q, k, v = self.relevance_rule(q, k, v)
        y, weights = attend(q, k, v, self.scale, need_weights, self.attn_drop, bias)
        y = self.proj(y.transpose(1, 2).reshape(B, 1, D))
        y = y + self.mlp(self.norm(y))
        return y[:, 0], weights
