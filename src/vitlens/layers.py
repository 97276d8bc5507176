"""The building blocks of a Vision Transformer, written to be read top to bottom.

``Attention`` is the multi-head self-attention the seed page tried to write. Its answer to the
page's question: the block outputs *updated tokens* (B, N, D). The attention weights
(B, H, N, N) are an intermediate — softmax(q kᵀ / √d) — which this module hands back only when
asked, because the fused kernel (``F.scaled_dot_product_attention``) never materializes them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """A LayerNorm, or nothing at all for ``kind='none'`` (the seed model has no norms)."""
    return nn.LayerNorm(dim, eps=eps) if kind == "layernorm" else nn.Identity()


def make_activation(kind: str) -> nn.Module:
    if kind == "gelu":
        return nn.GELU()
    if kind == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if kind == "relu":
        return nn.ReLU()
    if kind == "swiglu":
        return nn.SiLU()
    raise ValueError(f"unknown activation {kind!r}; expected 'gelu', 'gelu_tanh', 'relu' or 'swiglu'")


class PatchEmbed(nn.Module):
    """Cut the image into non-overlapping patches and project each to ``embed_dim``.

    A convolution with kernel = stride = patch size is exactly "flatten each patch, then a
    shared linear layer", done in one call. Output: (B, rows * cols, embed_dim), row-major.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)

    def check_input(self, x: Tensor) -> None:
        """Clear errors for the mistakes people make: rank, channels, size vs. patch size."""
        p = self.patch_size
        if x.dim() != 4:
            raise ValueError(
                f"expected images of shape (B, C, H, W), got a {x.dim()}-d tensor of shape {tuple(x.shape)}"
            )
        b, c, h, w = x.shape
        if c != self.in_chans:
            raise ValueError(f"expected {self.in_chans} input channel(s), got {c} (input shape {tuple(x.shape)})")
        if h < p or w < p:
            raise ValueError(f"image {h}x{w} is smaller than one {p}x{p} patch")
        if h % p or w % p:
            raise ValueError(
                f"image size {h}x{w} is not divisible by the patch size {p}: resize or crop to "
                f"{h // p * p}x{w // p * p}, or pad to {-(-h // p) * p}x{-(-w // p) * p}"
            )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


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


class Mlp(nn.Module):
    """The feed-forward part: Linear -> activation -> Linear, applied to each token alone.

    With ``act_layer='swiglu'`` the first layer is "packed": it outputs both halves of a gated
    unit (SiLU(a) * b), and the second layer takes half that width (DINOv2-giant's layout).
    """

    def __init__(self, dim: int, hidden_dim: int, act_layer: str = "gelu", drop: float = 0.0) -> None:
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


class LayerScale(nn.Module):
    """Per-channel learned scale on a residual branch (CaiT / DINOv2), initialised small."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample while training.

    Same rule as ``torchvision.ops.stochastic_depth(mode='row')``, written here so the core
    model needs nothing but torch.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """One pre-norm transformer layer: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        hidden_dim: int,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        init_values: float | None = None,
        act_layer: str = "gelu",
        norm_layer: str = "layernorm",
        norm_eps: float = 1e-6,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(norm_layer, dim, norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_norm, attn_drop, proj_drop, norm_layer, norm_eps)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = make_norm(norm_layer, dim, norm_eps)
        self.mlp = Mlp(dim, hidden_dim, act_layer, proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        y, weights = self.attn(self.norm1(x), need_weights)
        x = x + self.drop_path1(self.ls1(y))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, weights
