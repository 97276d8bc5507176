"""The seed page's two classes, with its exact argument names — now correct.

The page (a Q&A on whether ViT's multi-head attention "outputs attention-weight maps") gave
``MultiHeadAttention(d_model, num_heads)`` and ``VIT(img_dim, patch_dim, num_channels,
num_classes, d_model, num_heads, num_layers, hidden_dim, dropout)``. Both are rebuilt here on
vitlens's own layers, keeping the page's meaning: convolutional patchify, residual attention
and ReLU feed-forward layers of width ``hidden_dim``, mean pooling, a linear classifier.

The one deliberate difference: the page reshaped x into heads *before* the d_model x d_model
projections, which only runs with one head (``mat1 and mat2 shapes cannot be multiplied``).
Here q, k, v are projected from all channels first and split into heads after.

Also answered: the block outputs updated tokens (B, N, d_model), not attention maps. The maps
(B, heads, N, N) are an intermediate, returned with ``return_attention=True``.

The page's model has no LayerNorm and no position information. ``VIT`` keeps that by default
so it means what the page wrote; ``layer_norm=True`` adds pre-norm LayerNorms (and a final
one) and ``pos_embed='learn'`` (or ``'sincos2d'``) adds position embeddings — both recommended
for training anything real.
"""

from __future__ import annotations

from torch import Tensor, nn

from .config import ViTConfig
from .layers import Attention
from .model import VisionTransformer, ViTOutput


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention over (batch, seq_len, d_model) tokens.

    ``forward(x)`` returns the updated tokens, same shape as ``x``;
    ``forward(x, return_attention=True)`` returns ``(tokens, weights)`` with weights
    (batch, num_heads, seq_len, seq_len), each row a probability distribution.
    """

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.attention = Attention(d_model, num_heads, qkv_bias=True)

    def forward(self, x: Tensor, return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"expected tokens of shape (batch, seq_len, {self.d_model}), got {tuple(x.shape)}")
        y, weights = self.attention(x, need_weights=return_attention)
        return (y, weights) if return_attention else y


def seed_config(
    img_dim: int,
    patch_dim: int,
    num_channels: int,
    num_classes: int,
    d_model: int,
    num_heads: int,
    num_layers: int,
    hidden_dim: int,
    dropout: float,
    layer_norm: bool = False,
    pos_embed: str = "none",
) -> ViTConfig:
    """The page's architecture as a :class:`ViTConfig` (no class token, mean pooling, ReLU MLP)."""
    if img_dim % patch_dim:
        raise ValueError(f"img_dim ({img_dim}) must be divisible by patch_dim ({patch_dim})")
    return ViTConfig(
        img_size=img_dim,
        patch_size=patch_dim,
        in_chans=num_channels,
        num_classes=num_classes,
        embed_dim=d_model,
        num_heads=num_heads,
        depth=num_layers,
        mlp_dim=hidden_dim,
        act_layer="relu",
        class_token=False,
        global_pool="avg",
        pos_embed=pos_embed,
        norm_layer="layernorm" if layer_norm else "none",
        fc_norm=False,
        final_norm=layer_norm,
        proj_drop_rate=dropout,
    )


class VIT(VisionTransformer):
    """The page's ViT with its argument names; ``forward(x, return_attention=True)`` adds maps.

    Returns logits (B, num_classes), or a :class:`vitlens.ViTOutput` (``.logits``,
    ``.attentions``: one (B, num_heads, N, N) tensor per layer) when maps are asked for.
    """

    def __init__(
        self,
        img_dim: int,
        patch_dim: int,
        num_channels: int,
        num_classes: int,
        d_model: int,
        num_heads: int,
        num_layers: int,
        hidden_dim: int,
        dropout: float,
        *,
        layer_norm: bool = False,
        pos_embed: str = "none",
    ) -> None:
        super().__init__(
            seed_config(
                img_dim,
                patch_dim,
                num_channels,
                num_classes,
                d_model,
                num_heads,
                num_layers,
                hidden_dim,
                dropout,
                layer_norm,
                pos_embed,
            )
        )


__all__ = ["MultiHeadAttention", "VIT", "ViTOutput", "seed_config"]
