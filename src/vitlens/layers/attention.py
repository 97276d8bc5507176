"""Multi-head self-attention, the part of a ViT layer that mixes tokens.

``Attention`` is the multi-head self-attention the seed page tried to write. Its answer to the
page's question: the block outputs *updated tokens* (B, N, D). The attention weights
(B, H, N, N) are an intermediate — softmax(q kᵀ / √d) — which this module hands back only when
asked, because the fused kernel (``F.scaled_dot_product_attention``) never materializes them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .norm import make_norm
from .position import relative_position_bias, relative_position_index
from .rope import rotate


class Attention(nn.Module):
    """Multi-head self-attention with weights on request.

    q, k and v come from one projection of *all* channels, and only then are split into
    ``num_heads`` heads of ``head_dim`` channels (default ``D // num_heads``) — the order the seed
    page got wrong.

    ``forward(x, need_weights, rope)`` returns ``(y, weights)``: ``y`` is (B, N, D); ``weights`` is
    the post-softmax, pre-dropout (B, H, N, N) probability tensor when ``need_weights`` is true,
    else ``None`` and the fused kernel runs without ever forming it. ``rope``: (sin, cos) of the
    patch tokens' rotary embedding (see :mod:`.rope`), applied to q and k after the first
    ``num_prefix_tokens``. Options (timm's): ``qk_norm`` normalizes q and k per head,
    ``attn_norm`` the heads' concatenated output before the projection, ``proj_bias=False`` drops
    the projection's bias, ``k_bias=False`` keeps q and v biases only (EVA, BEiT: a key bias adds
    the same to every score of a query and changes nothing), ``num_kv_heads`` fewer key/value
    heads, each shared by ``num_heads // num_kv_heads`` query heads (grouped-query attention),
    ``rel_pos_grid`` BEiT's relative position bias for that patch grid (and a class token).

    ``relevance_rule``: unset, gradients are the plain ones. Relevance methods (AttnLRP) set it, for
    a while, to a function (q, k, v) -> (q, k, v) that keeps the values and gives the gradients
    their propagation rule (:mod:`vitlens.explain.lrp`).
    """

    relevance_rule: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]] | None = None

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        head_dim: int | None = None,
        num_kv_heads: int | None = None,
        qkv_bias: bool = True,
        k_bias: bool = True,
        qk_norm: bool = False,
        attn_norm: bool = False,
        proj_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: str = "layernorm",
        norm_eps: float = 1e-6,
        num_prefix_tokens: int = 0,
        rope_rotate_half: bool = False,
        rel_pos_grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if head_dim is None and dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        if num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        self.head_dim = head_dim or dim // num_heads
        self.scale = self.head_dim**-0.5
        self.num_prefix_tokens = num_prefix_tokens
        self.rope_rotate_half = rope_rotate_half
        inner, kv_inner = self.head_dim * num_heads, self.head_dim * self.num_kv_heads
        self.split = (inner, kv_inner, kv_inner)  # q, k, v widths in the one projection
        self.qkv = nn.Linear(dim, sum(self.split), bias=qkv_bias and k_bias)
        if qkv_bias and not k_bias:
            self.q_bias = nn.Parameter(torch.zeros(inner))
            self.v_bias = nn.Parameter(torch.zeros(kv_inner))
        else:
            self.q_bias = self.v_bias = None
        self.q_norm = make_norm(norm_layer, self.head_dim, norm_eps) if qk_norm else nn.Identity()
        self.k_norm = make_norm(norm_layer, self.head_dim, norm_eps) if qk_norm else nn.Identity()
        self.rel_pos_grid = tuple(rel_pos_grid) if rel_pos_grid is not None else None
        if rel_pos_grid is not None:  # BEiT: a learned bias per head and relative offset, added to the scores
            distances = (2 * rel_pos_grid[0] - 1) * (2 * rel_pos_grid[1] - 1) + 3
            self.relative_position_bias_table = nn.Parameter(torch.zeros(distances, num_heads))
            self.register_buffer("relative_position_index", relative_position_index(rel_pos_grid), persistent=False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.norm = make_norm(norm_layer, inner, norm_eps) if attn_norm else nn.Identity()
        self.proj = nn.Linear(inner, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def project(self, x: Tensor) -> Tensor:
        """The one q/k/v projection of every token, (B, N, q + k + v); a method of its own so that a
        layer recomputed a few rows at a time can compute it once (bounded-memory explanations)."""
        if self.q_bias is None:
            return self.qkv(x)
        bias = torch.cat([self.q_bias, self.q_bias.new_zeros(self.split[1]), self.v_bias])  # none for k
        return F.linear(x, self.qkv.weight, bias)

    def forward(
        self,
        x: Tensor,
        need_weights: bool = False,
        rope: tuple[Tensor, Tensor] | None = None,
        queries: Tensor | None = None,
        rows: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """The layer's output, and with ``need_weights`` its maps (B, H, N, N) — or, given ``queries``
        (token indices), only those rows (B, H, Q, N), the output then coming from the fused kernel.

        ``rows`` (token indices): the output of those tokens only (B, R, D), and their map rows; keys
        and values still come from every token. A layer recomputed a few rows at a time holds
        O(R·N) of maps (bounded-memory explanations).
        """
        B, N, D = x.shape
        qkv = self.project(x)
        # (B, N, q + k + v) -> three (B, heads, N, d): project first, then split into heads.
        heads = (self.num_heads, self.num_kv_heads, self.num_kv_heads)
        q, k, v = (t.reshape(B, N, h, self.head_dim).transpose(1, 2) for t, h in zip(qkv.split(self.split, -1), heads))
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:  # rotate the patch tokens only
            n = self.num_prefix_tokens
            q = torch.cat([q[:, :, :n], rotate(q[:, :, n:], *rope, self.rope_rotate_half)], dim=2)
            k = torch.cat([k[:, :, :n], rotate(k[:, :, n:], *rope, self.rope_rotate_half)], dim=2)
        if self.num_kv_heads != self.num_heads:  # each key/value head serves a group of query heads
            groups = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        bias = None
        if self.rel_pos_grid is not None:
            table, index = self.relative_position_bias_table, self.relative_position_index
            bias = relative_position_bias(table, index, N, self.rel_pos_grid)
        if rows is not None:
            q, bias = q[:, :, rows], None if bias is None else bias[..., rows, :]
        if self.relevance_rule is not None:
            q, k, v = self.relevance_rule(q, k, v)
        if need_weights and queries is not None:
            x, _ = attend(q, k, v, self.scale, False, self.attn_drop, bias)
            weights = query_rows(q[:, :, queries], k, self.scale, None if bias is None else bias[..., queries, :])
        else:
            x, weights = attend(q, k, v, self.scale, need_weights, self.attn_drop, bias)
        x = x.transpose(1, 2).reshape(B, q.shape[2], self.split[0])  # concatenate the heads again
        return self.proj_drop(self.proj(self.norm(x))), weights


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: float,
    need_weights: bool,
    attn_drop: nn.Dropout,
    bias: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """softmax(scale · q kᵀ + bias) v for (B, H, Nq, d) queries and (B, H, N, d) keys and values.

    Without ``need_weights`` the fused kernel runs and nothing (B, H, Nq, N) is formed. With it, the
    post-softmax, pre-dropout weights are returned too; without autograd (in eval mode, on CPU)
    they are written in place by :func:`attention_with_weights_inplace`. ``bias`` (broadcast to
    (B, H, Nq, N)) is added to the scores: BEiT's relative position bias.
    """
    training_drop = attn_drop.training and attn_drop.p > 0
    if not need_weights:
        mask = bias.to(q.dtype) if bias is not None else None
        drop = attn_drop.p if attn_drop.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop), None
    if _can_fill_in_place(q) and not training_drop:
        return attention_with_weights_inplace(q, k, v, scale, bias)
    scores = (q * scale) @ k.transpose(-2, -1)  # (B, H, Nq, N)
    if bias is not None:
        scores = scores + bias
    weights = scores.float().softmax(dim=-1).to(q.dtype)  # the map users want
    return attn_drop(weights) @ v, weights


def query_rows(q: Tensor, k: Tensor, scale: float, bias: Tensor | None = None) -> Tensor:
    """softmax(scale · q kᵀ + bias) for a few query rows (B, H, Q, d): the (B, H, Q, N) map rows alone."""
    scores = (q * scale) @ k.transpose(-2, -1)
    if bias is not None:
        scores = scores + bias
    return scores.float().softmax(dim=-1).to(q.dtype)


def _can_fill_in_place(q: Tensor) -> bool:
    """The in-place maps path needs no autograd graph, full precision and eager mode."""
    return (
        not torch.is_grad_enabled()
        and q.dtype in (torch.float32, torch.float64)
        and q.device.type == "cpu"
        and not torch.compiler.is_compiling()
    )


def attention_with_weights_inplace(
    q: Tensor, k: Tensor, v: Tensor, scale: float, bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """softmax(scale · q kᵀ + bias) v and the softmax, for (B, H, Nq, d) queries, without autograd.

    The explicit path's kernels (scaled q, two batched GEMMs, softmax) with fewer passes over
    memory: q is scaled as it is laid out as (B·H, Nq, d) (one pass, not two), k and v are laid
    out once so that both products run as plain batched GEMMs (kᵀ is a free transposed view),
    and the scores are written straight into the returned weights tensor (on top of the bias,
    when there is one) and softmaxed in place.
    """
    B, H, Nq, d = q.shape
    N, dv = k.shape[-2], v.shape[-1]
    scaled = torch.mul(q, scale, out=q.new_empty(B, H, Nq, d))
    q, k, v = scaled.view(B * H, Nq, d), k.reshape(B * H, N, d), v.reshape(B * H, N, dv)
    if bias is None:
        weights = torch.bmm(q, k.transpose(1, 2), out=q.new_empty(B * H, Nq, N))
    else:
        weights = bias.to(q.dtype).expand(B, H, Nq, N).reshape(B * H, Nq, N).clone()
        weights.baddbmm_(q, k.transpose(1, 2))
    torch.softmax(weights, dim=-1, out=weights)
    out = torch.bmm(weights, v)
    return out.view(B, H, Nq, dv), weights.view(B, H, Nq, N)
