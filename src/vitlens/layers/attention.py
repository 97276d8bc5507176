"""Multi-head self-attention, the part of a ViT layer that mixes tokens.

``Attention`` is the multi-head self-attention the seed page tried to write. Its answer to the
page's question: the block outputs *updated tokens* (B, N, D). The attention weights
(B, H, N, N) are an intermediate — softmax(q kᵀ / √d) — which this module hands back only when
asked, because the fused kernel (``F.scaled_dot_product_attention``) never materializes them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .norm import make_norm


class Attention(nn.Module):
    """Multi-head self-attention with weights on request.

    q, k and v come from one (D -> 3D) projection of *all* channels, and only then are split
    into ``num_heads`` heads of ``D // num_heads`` channels — the order the seed page got wrong.

    ``forward(x, need_weights)`` returns ``(y, weights)``: ``y`` is (B, N, D); ``weights`` is the
    post-softmax, pre-dropout (B, H, N, N) probability tensor when ``need_weights`` is true, else
    ``None`` and the fused kernel runs without ever forming it.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: str = "layernorm",
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = make_norm(norm_layer, self.head_dim, norm_eps) if qk_norm else nn.Identity()
        self.k_norm = make_norm(norm_layer, self.head_dim, norm_eps) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        B, N, D = x.shape
        # (B, N, 3D) -> (3, B, H, N, d): project first, then split into heads.
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)

        weights = None
        if need_weights and _can_fill_in_place(q) and not (self.training and self.attn_drop.p > 0):
            x, weights = attention_with_weights_inplace(q, k, v, self.scale)
        elif need_weights:
            scores = (q * self.scale) @ k.transpose(-2, -1)  # (B, H, N, N)
            weights = scores.float().softmax(dim=-1).to(q.dtype)  # the map users want
            x = self.attn_drop(weights) @ v
        else:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, N, D)  # concatenate the heads again
        return self.proj_drop(self.proj(x)), weights


def _can_fill_in_place(q: Tensor) -> bool:
    """The in-place maps path needs no autograd graph, full precision and eager mode."""
    return (
        not torch.is_grad_enabled()
        and q.dtype in (torch.float32, torch.float64)
        and q.device.type == "cpu"
        and not torch.compiler.is_compiling()
    )


def attention_with_weights_inplace(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """softmax(scale · q kᵀ) v and the softmax, for (B, H, N, d) inputs, without autograd.

    The same numbers as the explicit path with fewer passes over memory: q, k and v are laid
    out once as (B·H, N, d) so that both products run as plain batched GEMMs (kᵀ is a free
    transposed view), the scale is folded into the first GEMM, and the scores are written
    straight into the returned weights tensor and softmaxed in place.
    """
    B, H, N, d = q.shape
    q, k, v = (t.reshape(B * H, N, t.shape[-1]) for t in (q, k, v))
    weights = q.new_empty(B * H, N, N)
    torch.baddbmm(weights, q, k.transpose(1, 2), beta=0.0, alpha=scale, out=weights)
    torch.softmax(weights, dim=-1, out=weights)
    out = torch.bmm(weights, v)
    return out.view(B, H, N, -1), weights.view(B, H, N, N)
