"""VisionTransformer: image -> patch tokens -> transformer blocks -> logits, maps on request.

Read ``VisionTransformer.forward`` first: it is the whole model in a dozen lines. Asking for
attention (``return_attention=True`` or a list of layer indices) runs the explicit
softmax(q kᵀ/√d) only in the layers asked for; every other layer keeps the fused kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ViTConfig, get_config
from .layers import Block, PatchEmbed, make_norm

AttentionRequest = Union[bool, int, Sequence[int]]


@dataclass
class ViTOutput:
    """What ``model(images, return_attention=...)`` returns.

    ``attentions`` holds one entry per layer: a (B, heads, N, N) tensor of post-softmax,
    pre-dropout attention probabilities for the layers asked for, ``None`` for the others.
    ``features`` are the final-norm tokens (B, N, D) that the head reads.
    """

    logits: Tensor
    attentions: tuple[Tensor | None, ...]
    features: Tensor


@dataclass(frozen=True)
class TokenLayout:
    """Where things sit in the token sequence for one input size.

    Tokens are ordered ``[class, distillation, registers..., patches]`` (absent ones skipped).
    ``grid`` is the patch grid (rows, cols); patch ``i`` sits at row ``i // cols``.
    """

    num_prefix_tokens: int
    class_index: int | None
    dist_index: int | None
    register_indices: tuple[int, ...]
    grid: tuple[int, int]
    patch_size: int

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.num_patches

    @property
    def patch_slice(self) -> slice:
        return slice(self.num_prefix_tokens, self.num_tokens)


def resample_pos_embed(
    pos: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], method: str = "timm"
) -> Tensor:
    """Resize a (1, rows*cols, D) grid of position embeddings to ``new_grid``.

    The three libraries whose checkpoints vitlens reads each resample differently, and the
    numbers differ, so ``method`` picks the rule of the library a checkpoint came from:
    ``'timm'`` bicubic with antialias; ``'hf'`` bicubic without antialias (Hugging Face
    ``interpolate_pos_encoding``); ``'torchvision'`` bicubic with ``align_corners=True``.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos
    dim = pos.shape[-1]
    grid = pos.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    if method == "timm":
        grid = F.interpolate(grid, size=new_grid, mode="bicubic", antialias=True, align_corners=False)
    elif method == "hf":
        grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    elif method == "torchvision":
        grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=True)
    else:
        raise ValueError(f"unknown position-embedding resampling {method!r}; expected 'timm', 'hf' or 'torchvision'")
    return grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos.dtype)


def sincos_2d(grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed 2-D sine-cosine position embeddings (MoCo v3 / MAE), shape (1, rows*cols, dim)."""
    if dim % 4:
        raise ValueError(f"pos_embed='sincos2d' needs embed_dim divisible by 4, got {dim}")
    ys, xs = torch.meshgrid(
        torch.arange(grid[0], dtype=torch.float32), torch.arange(grid[1], dtype=torch.float32), indexing="ij"
    )
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    ys = ys.flatten()[:, None] * omega[None]
    xs = xs.flatten()[:, None] * omega[None]
    return torch.cat([xs.sin(), xs.cos(), ys.sin(), ys.cos()], dim=1)[None]


class VisionTransformer(nn.Module):
    """A ViT (Dosovitskiy et al., 2021) whose every layer can hand back its attention maps."""

    def __init__(self, config: ViTConfig | None = None, **overrides) -> None:
        super().__init__()
        config = (config or ViTConfig()).replace(**overrides) if overrides else (config or ViTConfig())
        self.config = c = config
        D = c.embed_dim
        self.num_prefix_tokens = c.num_prefix_tokens
        self.patch_embed = PatchEmbed(c.patch_size, c.in_chans, D, bias=c.patch_bias)

        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if c.class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, D)) if c.distilled else None
        self.reg_token = nn.Parameter(torch.zeros(1, c.reg_tokens, D)) if c.reg_tokens else None
        gh, gw = c.grid_size
        if c.pos_embed == "learn":
            embed_len = gh * gw + (0 if c.no_embed_class else self.num_prefix_tokens)
            self.pos_embed = nn.Parameter(torch.zeros(1, embed_len, D))
        else:
            self.pos_embed = None
        self.pos_drop = nn.Dropout(c.drop_rate)
        self.norm_pre = make_norm(c.norm_layer, D, c.norm_eps) if c.pre_norm else nn.Identity()

        drop_path = torch.linspace(0, c.drop_path_rate, c.depth, device="cpu").tolist()  # also under meta
        self.blocks = nn.ModuleList(
            Block(
                D,
                c.num_heads,
                c.hidden_dim,
                c.qkv_bias,
                c.qk_norm,
                c.init_values,
                c.act_layer,
                c.norm_layer,
                c.norm_eps,
                c.attn_drop_rate,
                c.proj_drop_rate,
                drop_path[i],
            )
            for i in range(c.depth)
        )
        final = c.final_norm and not c.use_fc_norm
        self.norm = make_norm(c.norm_layer, D, c.norm_eps) if final else nn.Identity()
        self.fc_norm = make_norm(c.norm_layer, D, c.norm_eps) if c.use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(c.drop_rate)
        self.head = nn.Linear(D, c.num_classes) if c.num_classes else nn.Identity()
        self.head_dist = nn.Linear(D, c.num_classes) if c.distilled and c.num_classes else None
        self.reset_parameters()

    # --------------------------------------------------------------------- init
    def reset_parameters(self) -> None:
        """timm's ViT init: truncated normal (std .02) for linears and position embeddings."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for token in (self.cls_token, self.dist_token, self.reg_token):
            if token is not None:
                nn.init.normal_(token, std=1e-6)

    # ------------------------------------------------------------------- layout
    @property
    def depth(self) -> int:
        return len(self.blocks)

    def token_layout(self, images: Tensor | tuple[int, int]) -> TokenLayout:
        """Prefix tokens and patch grid for ``images`` (a (B, C, H, W) tensor or an (H, W) size)."""
        h, w = images if isinstance(images, tuple) else images.shape[-2:]
        p = self.config.patch_size
        i = 0
        cls_index = dist_index = None
        if self.cls_token is not None:
            cls_index, i = i, i + 1
        if self.dist_token is not None:
            dist_index, i = i, i + 1
        regs = tuple(range(i, i + self.config.reg_tokens))
        return TokenLayout(self.num_prefix_tokens, cls_index, dist_index, regs, (h // p, w // p), p)

    # ------------------------------------------------------------------ forward
    def embed(self, images: Tensor) -> Tensor:
        """Images (B, C, H, W) -> tokens (B, prefix + patches, D), position information added."""
        self.patch_embed.check_input(images)
        x = self.patch_embed(images)
        grid = (images.shape[-2] // self.config.patch_size, images.shape[-1] // self.config.patch_size)
        prefix = [
            t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.dist_token, self.reg_token) if t is not None
        ]
        pos = self._pos_embed_for(grid)
        if pos is None:
            x = torch.cat(prefix + [x], dim=1) if prefix else x
        elif self.config.no_embed_class or self.config.pos_embed == "sincos2d":
            x = torch.cat(prefix + [x + pos], dim=1) if prefix else x + pos
        else:  # the prefix tokens have their own learned positions
            x = torch.cat(prefix + [x], dim=1) + pos
        return self.norm_pre(self.pos_drop(x))

    def _pos_embed_for(self, grid: tuple[int, int]) -> Tensor | None:
        c = self.config
        if c.pos_embed == "none":
            return None
        if c.pos_embed == "sincos2d":
            return sincos_2d(grid, c.embed_dim).to(self.patch_embed.proj.weight)
        pos = self.pos_embed
        if grid == c.grid_size:
            return pos
        n = 0 if c.no_embed_class else self.num_prefix_tokens
        patches = resample_pos_embed(pos[:, n:], c.grid_size, grid, c.pos_embed_interp)
        return torch.cat([pos[:, :n], patches], dim=1) if n else patches

    def forward_features(self, images: Tensor, keep: Sequence[bool] | None = None) -> tuple[Tensor, tuple]:
        """Tokens after the last block and final norm, and the maps of the layers in ``keep``."""
        x = self.embed(images)
        maps = []
        for i, block in enumerate(self.blocks):
            x, weights = block(x, need_weights=bool(keep and keep[i]))
            maps.append(weights)
        return self.norm(x), tuple(maps)

    def forward_head(self, tokens: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool the tokens (class token or patch mean), then the classifier."""
        if self.config.global_pool == "avg":
            pooled = tokens[:, self.num_prefix_tokens :].mean(dim=1)
        else:
            pooled = tokens[:, 0]
        pooled = self.head_drop(self.fc_norm(pooled))
        if pre_logits:
            return pooled
        if self.head_dist is not None:  # DeiT distilled: average the class and distillation heads
            return (self.head(pooled) + self.head_dist(self.head_drop(tokens[:, 1]))) / 2
        return self.head(pooled)

    def forward(self, images: Tensor, return_attention: AttentionRequest = False) -> Tensor | ViTOutput:
        """Logits (B, classes); with ``return_attention`` a :class:`ViTOutput` with the maps.

        ``return_attention``: ``False`` (fused attention, nothing stored), ``True`` (every
        layer), or layer indices such as ``[-1]`` or ``[0, 5]`` (negative counts from the end):
        only those layers compute and keep maps; ``attentions`` has ``None`` elsewhere.
        """
        keep = self.layers_requested(return_attention)
        tokens, maps = self.forward_features(images, keep)
        logits = self.forward_head(tokens)
        if keep is None:
            return logits
        return ViTOutput(logits=logits, attentions=maps, features=tokens)

    def layers_requested(self, request: AttentionRequest) -> tuple[bool, ...] | None:
        """Turn a ``return_attention`` argument into one flag per layer (None: no maps)."""
        depth = self.depth
        if request is False or request is None:
            return None
        if request is True:
            return (True,) * depth
        indices = [request] if isinstance(request, int) else list(request)
        flags = [False] * depth
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, int):
                raise ValueError(f"return_attention takes True, False or layer indices (ints); got {i!r}")
            if not -depth <= i < depth:
                raise ValueError(
                    f"layer index {i} is out of range for a {depth}-layer model (valid: {-depth}..{depth - 1})"
                )
            flags[i] = True
        return tuple(flags)

    # --------------------------------------------------------------- utilities
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into ``directory``; ``vitlens.load`` reads it."""
        from .checkpoint import save_pretrained

        return save_pretrained(self, directory)

    def to_timm_state_dict(self) -> dict[str, Tensor]:
        """The weights under timm's names, for ``timm.create_model(...).load_state_dict``."""
        from .checkpoint import to_timm_state_dict

        return to_timm_state_dict(self)

    def to_hf_state_dict(self, legacy: bool = False) -> dict[str, Tensor]:
        """The weights under Hugging Face ``ViTForImageClassification`` names (4.x names if ``legacy``)."""
        from .checkpoint import to_hf_state_dict

        return to_hf_state_dict(self, legacy=legacy)

    def to_torchvision_state_dict(self) -> dict[str, Tensor]:
        """The weights under torchvision ``VisionTransformer`` names."""
        from .checkpoint import to_torchvision_state_dict

        return to_torchvision_state_dict(self)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_image(self, image_size: tuple[int, int] | None = None) -> int:
        """Multiply-accumulates x 2 of one forward pass (matmuls only), for throughput reports."""
        c = self.config
        h, w = image_size or c.img_hw
        n_patch = (h // c.patch_size) * (w // c.patch_size)
        n = n_patch + self.num_prefix_tokens
        d, hid = c.embed_dim, c.hidden_dim
        fc2_in = hid // 2 if c.act_layer == "swiglu" else hid
        per_block = n * d * 3 * d + 2 * n * n * d + n * d * d + n * d * hid + n * fc2_in * d
        embed = n_patch * c.patch_size**2 * c.in_chans * d
        return 2 * (c.depth * per_block + embed + d * c.num_classes)


def create_model(name: str, pretrained: bool = False, **overrides) -> VisionTransformer:
    """Build a preset by its timm-style name, e.g. ``create_model('vit_small_patch16_224', num_classes=10)``.

    ``pretrained=True`` loads timm's public weights for the preset from the Hugging Face Hub (the
    default tag, or the one named: ``'vit_small_patch14_dinov2.lvd142m'``), with their class names
    and pre-processing; see :mod:`vitlens.hub`.
    """
    if pretrained:
        from .hub import create_pretrained

        return create_pretrained(name, **overrides)
    return VisionTransformer(get_config(name, **overrides))
