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
    ``None`` and the fused kernel runs without ever forming it. Options (timm's): ``qk_norm``
    normalizes q and k per head, ``attn_norm`` the heads' concatenated output before the
    projection, ``proj_bias=False`` drops the projection's bias.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        attn_norm: bool = False,
        proj_bias: bool = True,
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
        self.norm = make_norm(norm_layer, dim, norm_eps) if attn_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        B, N, D = x.shape
        # (B, N, 3D) -> (3, B, H, N, d): project first, then split into heads.
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x, weights = attend(q, k, v, self.scale, need_weights, self.attn_drop)
        x = x.transpose(1, 2).reshape(B, N, D)  # concatenate the heads again
        return self.proj_drop(self.proj(self.norm(x))), weights


def attend(
    q: Tensor, k: Tensor, v: Tensor, scale: float, need_weights: bool, attn_drop: nn.Dropout
) -> tuple[Tensor, Tensor | None]:
    """softmax(scale · q kᵀ) v for (B, H, Nq, d) queries and (B, H, N, d) keys and values.

    Without ``need_weights`` the fused kernel runs and nothing (B, H, Nq, N) is formed. With it, the
    post-softmax, pre-dropout weights are returned too; without autograd (in eval mode, on CPU)
    they are written in place by :func:`attention_with_weights_inplace`.
    """
    training_drop = attn_drop.training and attn_drop.p > 0
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=attn_drop.p if attn_drop.training else 0.0), None
    if _can_fill_in_place(q) and not training_drop:
        return attention_with_weights_inplace(q, k, v, scale)
    scores = (q * scale) @ k.transpose(-2, -1)  # (B, H, Nq, N)
    weights = scores.float().softmax(dim=-1).to(q.dtype)  # the map users want
    return attn_drop(weights) @ v, weights


def _can_fill_in_place(q: Tensor) -> bool:
    """The in-place maps path needs no autograd graph, full precision and eager mode."""
    return (
        not torch.is_grad_enabled()
        and q.dtype in (torch.float32, torch.float64)
        and q.device.type == "cpu"
        and not torch.compiler.is_compiling()
    )


def attention_with_weights_inplace(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """softmax(scale · q kᵀ) v and the softmax, for (B, H, Nq, d) queries, without autograd.

    The same numbers as the explicit path with fewer passes over memory: q, k and v are laid
    out once as (B·H, N, d) so that both products run as plain batched GEMMs (kᵀ is a free
    transposed view), the scale is folded into the first GEMM, and the scores are written
    straight into the returned weights tensor and softmaxed in place.
    """
    B, H, Nq, d = q.shape
    N = k.shape[-2]
    q, k, v = q.reshape(B * H, Nq, d), k.reshape(B * H, N, d), v.reshape(B * H, N, v.shape[-1])
    weights = q.new_empty(B * H, Nq, N)
    torch.baddbmm(weights, q, k.transpose(1, 2), beta=0.0, alpha=scale, out=weights)
    torch.softmax(weights, dim=-1, out=weights)
    out = torch.bmm(weights, v)
    return out.view(B, H, Nq, -1), weights.view(B, H, Nq, N)
