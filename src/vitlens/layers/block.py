"""One transformer layer: attention and MLP, each on a residual branch, normalized before or after,
or several branches of each side by side."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import ViTConfig
from .attention import Attention
from .diff_attention import DiffAttention
from .mlp import Mlp
from .norm import LayerScale, make_norm


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


def make_attention(config: ViTConfig, index: int) -> nn.Module:
    """The attention of block ``index``: softmax attention, or differential attention (whose λ_init
    depends on the block's depth)."""
    c = config
    common = dict(
        qkv_bias=c.qkv_bias,
        qk_norm=c.qk_norm,
        attn_norm=c.attn_norm,
        proj_bias=c.proj_bias,
        attn_drop=c.attn_drop_rate,
        proj_drop=c.proj_drop_rate,
        norm_layer=c.norm_layer,
        norm_eps=c.norm_eps,
    )
    if c.attn_layer == "diff":
        return DiffAttention(c.embed_dim, c.num_heads, depth=index, **common)
    return Attention(
        c.embed_dim,
        c.num_heads,
        head_dim=c.head_dim,
        num_kv_heads=c.kv_heads_per_block[index],
        k_bias=c.k_bias,
        num_prefix_tokens=c.num_prefix_tokens,
        rope_rotate_half=c.rope_rotate_half,
        rel_pos_grid=c.grid_size if c.rel_pos_bias else None,
        **common,
    )


def make_mlp(config: ViTConfig) -> Mlp:
    """The feed-forward layer of ``config``'s blocks."""
    c = config
    return Mlp(
        c.embed_dim,
        c.hidden_dim,
        act_layer=c.act_layer,
        layout=c.mlp_layer,
        norm=c.norm_layer if c.mlp_norm else None,
        norm_eps=c.norm_eps,
        bias=c.proj_bias,
        drop=c.proj_drop_rate,
    )


def make_block(config: ViTConfig, index: int, *, drop_path: float = 0.0) -> nn.Module:
    """Block ``index`` of ``config``'s transformer: a :class:`Block`, or a :class:`BranchesBlock` when
    ``num_parallel`` > 1."""
    kind = BranchesBlock if config.num_parallel > 1 else Block
    return kind(config, index, drop_path=drop_path)


class Block(nn.Module):
    """One layer of ``config``'s transformer.

    ``block_type='pre_norm'`` (ViT): x + attn(norm1(x)), then x + mlp(norm2(x)), each branch
    optionally layer-scaled. ``'post_norm'`` (timm's ``ResPostBlock``, Swin v2's): x + norm1(attn(x)),
    then x + norm2(mlp(x)). ``'parallel'`` (ViT-22B, timm's ``ParallelScalingBlock``): one norm,
    x + attn(norm1(x)) + mlp(norm1(x)). ``index`` is the block's place in the stack (its key/value head count
    may differ from the others'); ``rope`` in ``forward`` is the rotary embedding of this input size.
    """

    def __init__(self, config: ViTConfig, index: int = 0, *, drop_path: float = 0.0) -> None:
        super().__init__()
        c = config
        dim, norm = c.embed_dim, c.norm_layer
        self.post_norm = c.block_type == "post_norm"
        self.parallel = c.block_type == "parallel"  # attention and MLP both read norm1(x)
        self.norm1 = make_norm(norm, dim, c.norm_eps)
        self.attn = make_attention(c, index)
        scaled = c.init_values and not self.post_norm
        self.ls1 = LayerScale(dim, c.init_values) if scaled else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.Identity() if self.parallel else make_norm(norm, dim, c.norm_eps)
        if self.post_norm and c.init_values:  # timm's ResPostBlock starts its norms' scale small instead
            for norm_module in (self.norm1, self.norm2):
                nn.init.constant_(norm_module.weight, c.init_values)
        self.mlp = make_mlp(c)
        self.ls2 = LayerScale(dim, c.init_values) if scaled and not c.attn_only_layer_scale else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self,
        x: Tensor,
        need_weights: bool = False,
        rope: tuple[Tensor, Tensor] | None = None,
        queries: Tensor | None = None,
        rows: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """The block's output (B, N, D) and maps as :class:`Attention` gives them; with ``rows`` (token
        indices) the output of those tokens only, (B, R, D): every token is token-wise after attention."""
        residual = x if rows is None else x[:, rows]
        if self.parallel:
            h = self.norm1(x)
            y, weights = self.attn(h, need_weights, rope, queries, rows)
            mlp = self.mlp(h if rows is None else h[:, rows])
            return residual + self.drop_path1(self.ls1(y) + self.ls2(mlp)), weights
        if self.post_norm:
            y, weights = self.attn(x, need_weights, rope, queries, rows)
            x = residual + self.drop_path1(self.norm1(y))
            return x + self.drop_path2(self.norm2(self.mlp(x))), weights
        y, weights = self.attn(self.norm1(x), need_weights, rope, queries, rows)
        x = residual + self.drop_path1(self.ls1(y))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, weights


class AttentionBranch(nn.Module):
    """One attention branch of a :class:`BranchesBlock`: norm, attention, layer scale, drop path (timm's names)."""

    def __init__(self, config: ViTConfig, index: int, drop_path: float) -> None:
        super().__init__()
        c = config
        self.norm = make_norm(c.norm_layer, c.embed_dim, c.norm_eps)
        self.attn = make_attention(c, index)
        self.ls = LayerScale(c.embed_dim, c.init_values) if c.init_values else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self,
        x: Tensor,
        need_weights: bool,
        rope: tuple[Tensor, Tensor] | None,
        queries: Tensor | None,
        rows: Tensor | None,
    ) -> tuple[Tensor, Tensor | None]:
        y, weights = self.attn(self.norm(x), need_weights, rope, queries, rows)
        return self.drop_path(self.ls(y)), weights


class MlpBranch(nn.Module):
    """One MLP branch of a :class:`BranchesBlock`: norm, MLP, layer scale, drop path (timm's names)."""

    def __init__(self, config: ViTConfig, drop_path: float) -> None:
        super().__init__()
        c = config
        self.norm = make_norm(c.norm_layer, c.embed_dim, c.norm_eps)
        self.mlp = make_mlp(c)
        self.ls = LayerScale(c.embed_dim, c.init_values) if c.init_values else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.drop_path(self.ls(self.mlp(self.norm(x))))


class BranchesBlock(nn.Module):
    """``num_parallel`` attention branches, then as many MLP branches, each on its own norm of the input
    and summed: x + Σ attn_i(x), then x + Σ mlp_i(x) (Touvron et al., 2022, "Three things everyone should
    know about Vision Transformers"; timm's ``ParallelThingsBlock``).

    Its maps are the branches' heads side by side, (B, num_parallel · H, N, N), branch 0's first: each
    head adds its own share to the block's output, as the heads of one attention do.
    """

    def __init__(self, config: ViTConfig, index: int = 0, *, drop_path: float = 0.0) -> None:
        super().__init__()
        self.attns = nn.ModuleList(AttentionBranch(config, index, drop_path) for _ in range(config.num_parallel))
        self.ffns = nn.ModuleList(MlpBranch(config, drop_path) for _ in range(config.num_parallel))

    def forward(
        self,
        x: Tensor,
        need_weights: bool = False,
        rope: tuple[Tensor, Tensor] | None = None,
        queries: Tensor | None = None,
        rows: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """The block's output and maps as :meth:`Block.forward` gives them (``rows``: those tokens only)."""
        outs = [branch(x, need_weights, rope, queries, rows) for branch in self.attns]
        x = (x if rows is None else x[:, rows]) + torch.stack([y for y, _ in outs]).sum(dim=0)
        x = x + torch.stack([ffn(x) for ffn in self.ffns]).sum(dim=0)
        return x, torch.cat([w for _, w in outs], dim=1) if need_weights else None
