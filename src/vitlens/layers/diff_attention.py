"""Differential attention (Ye et al., 2024, "Differential Transformer"), timm's ``DiffAttention``.

A head's map is the difference of two softmax maps, the second weighted by a learned λ, so that
what both maps attend to (noise common to the two) cancels. Each of the ``num_heads`` heads has
two query/key pairs of half the head width and one value of the full width. Its map, what
``need_weights`` returns, (B, H, N, N), is the matrix that multiplies v:

    A = softmax(s · q1 k1ᵀ) − λ · softmax(s · q2 k2ᵀ)

Its rows sum to 1 − λ and its entries may be negative: it is not a probability distribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import query_rows
from .norm import make_norm


class DiffAttention(nn.Module):
    """Differential multi-head attention with its maps on request.

    The one ``qkv`` projection is split as timm splits it: q and k into ``2 * num_heads`` heads of
    ``dim // num_heads // 2`` channels (head h's pair is 2h and 2h + 1), v into ``num_heads`` heads of
    twice that. λ = exp(λq1 · λk1) − exp(λq2 · λk2) + λ_init, where λ_init = 0.8 − 0.6 · exp(−0.3 ·
    depth) for the block at ``depth``. Each head's output is RMS-normalized (``sub_norm``) and scaled
    by 1 − λ_init before the heads are concatenated. ``forward`` takes and returns what
    :class:`~vitlens.layers.Attention`'s does; its maps are A above (the module's doc), pre-dropout
    (in training, dropout acts on the two softmax maps before they are combined, as in timm).
    ``relevance_rule`` as in :class:`~vitlens.layers.attention.Attention` (on the 2H query/key heads).
    """

    relevance_rule: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]] | None = None

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        depth: int = 0,
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
        if dim % (2 * num_heads):
            raise ValueError(f"dim ({dim}) must be divisible by 2 * num_heads ({2 * num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads // 2  # a query's or key's width; a value has twice as many channels
        self.scale = self.head_dim**-0.5
        self.lambda_init = 0.8 - 0.6 * math.exp(-0.3 * depth)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = make_norm(norm_layer, self.head_dim, norm_eps) if qk_norm else nn.Identity()
        self.k_norm = make_norm(norm_layer, self.head_dim, norm_eps) if qk_norm else nn.Identity()
        for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            setattr(self, name, nn.Parameter(torch.randn(self.head_dim) * 0.1))
        self.attn_drop = nn.Dropout(attn_drop)
        self.sub_norm = make_norm("rmsnorm", 2 * self.head_dim, 1e-5)
        self.norm = make_norm(norm_layer, dim, norm_eps) if attn_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def weight(self) -> Tensor:
        """λ, the weight of the second map (a float32 scalar)."""
        first = torch.exp((self.lambda_q1 * self.lambda_k1).sum(-1).float())
        second = torch.exp((self.lambda_q2 * self.lambda_k2).sum(-1).float())
        return first - second + self.lambda_init

    def project(self, x: Tensor) -> Tensor:
        """The one q/k/v projection of every token (B, N, 3·D), as :meth:`Attention.project`."""
        return self.qkv(x)

    def forward(
        self,
        x: Tensor,
        need_weights: bool = False,
        rope: tuple[Tensor, Tensor] | None = None,
        queries: Tensor | None = None,
        rows: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """The layer's output, and with ``need_weights`` its maps (B, H, N, N), or the rows ``queries``
        (B, H, Q, N) with the output from the fused kernel; ``rows``: those tokens' output only."""
        if rope is not None:
            raise ValueError("differential attention takes no rotary embedding")
        B, N, D = x.shape
        q, k, v = self.project(x).chunk(3, dim=-1)
        q = q.reshape(B, N, 2 * self.num_heads, self.head_dim).transpose(1, 2)
        k = k.reshape(B, N, 2 * self.num_heads, self.head_dim).transpose(1, 2)
        v = v.reshape(B, N, self.num_heads, 2 * self.head_dim).transpose(1, 2)
        q, k = self.q_norm(q), self.k_norm(k)
        if rows is not None:
            q = q[:, :, rows]
        if self.relevance_rule is not None:
            q, k, v = self.relevance_rule(q, k, v)
        lam = self.weight().type_as(q)
        if need_weights and queries is None:
            probs = query_rows(q, k, self.scale)  # (B, 2H, N, N): both maps of every head
            weights = combine(probs, lam)
            dropped = combine(self.attn_drop(probs), lam) if self.attn_drop.training else weights
            x = dropped @ v
        else:
            drop = self.attn_drop.p if self.attn_drop.training else 0.0
            first = F.scaled_dot_product_attention(q[:, 0::2], k[:, 0::2], v, dropout_p=drop)
            second = F.scaled_dot_product_attention(q[:, 1::2], k[:, 1::2], v, dropout_p=drop)
            x = first - lam * second
            weights = combine(query_rows(q[:, :, queries], k, self.scale), lam) if need_weights else None
        x = self.sub_norm(x) * (1 - self.lambda_init)
        x = x.transpose(1, 2).reshape(B, q.shape[2], D)  # concatenate the heads again
        return self.proj_drop(self.proj(self.norm(x))), weights


def combine(probs: Tensor, lam: Tensor) -> Tensor:
    """(B, 2H, Q, N) softmax maps, two per head, as each head's differential map A1 − λ·A2: (B, H, Q, N)."""
    pairs = probs.unflatten(1, (-1, 2))
    return pairs[:, :, 0] - lam * pairs[:, :, 1]
