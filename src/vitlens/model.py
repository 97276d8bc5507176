"""VisionTransformer: image -> patch tokens -> transformer blocks -> logits, maps on request.

Read ``VisionTransformer.forward`` first: it is the whole model in a dozen lines. Asking for
attention (``return_attention=True`` or a list of layer indices) runs the explicit
softmax(q kᵀ/√d) only in the layers asked for; every other layer keeps the fused kernel.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, Union

import torch
from torch import Tensor, nn

from .config import ViTConfig
from .layers import (
    AttentionPool,
    MixedRope,
    PatchEmbed,
    make_block,
    make_norm,
    resample_pos_embed,
    rope_sin_cos,
    sincos_2d,
)

AttentionRequest = Union[bool, int, Sequence[int]]
QueryRequest = Union[str, int, Sequence[int], Tensor]  # "all" | "cls" | "prefix" | token indices


@dataclass
class ViTOutput:
    """What ``model(images, return_attention=...)`` returns.

    ``attentions`` holds one entry per layer: a (B, heads, N, N) tensor of post-softmax,
    pre-dropout attention probabilities for the layers asked for, ``None`` for the others
    (differential attention gives each head's A1 − λ·A2, the map that multiplies v; a block of
    parallel branches gives the branches' heads side by side).
    ``features`` are the final-norm tokens (B, N, D) that the head reads. ``pool_attention`` is,
    for a model that pools with an attention pool (``global_pool='map'``), where its query looked:
    (B, pool heads, 1, N) over all N tokens (0 for prefix tokens it does not read); else ``None``.
    ``pooled`` is what the head reads (B, D'): ``forward_head(features, pre_logits=True)``.
    """

    logits: Tensor
    attentions: tuple[Tensor | None, ...]
    features: Tensor
    pool_attention: Tensor | None = None
    pooled: Tensor | None = None


class TextTower(Protocol):
    """The text half of a CLIP-like model, kept by the loaders as ``model.text_tower``.

    ``encode(texts)`` returns one embedding per text (T, E), in the space of the image model's
    output, computed by the source library itself (OpenCLIP's ``encode_text``, transformers'
    ``get_text_features``); the image side never re-implements it.
    """

    def encode(self, texts: Sequence[str]) -> Tensor: ...


@dataclass(frozen=True)
class TokenLayout:
    """Where things sit in the token sequence for one input size.

    Tokens are ordered ``[class, distillation, registers..., patches]`` (absent ones skipped).
    ``grid`` is the patch grid (rows, cols); patch ``i`` sits at row ``i // cols``. ``readout``
    says which query the head's feature comes from, and so which row of an attention map explains
    it: ``'class'`` (the class token's), ``'pool'`` (an attention pool's own query, outside the
    token sequence: ``ViTOutput.pool_attention``), or ``'mean'`` (the mean of the patch rows, for
    average pooling without a class token).
    """

    num_prefix_tokens: int
    class_index: int | None
    dist_index: int | None
    register_indices: tuple[int, ...]
    grid: tuple[int, int]
    patch_size: int
    readout: str = "class"

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.num_patches

    @property
    def patch_slice(self) -> slice:
        return slice(self.num_prefix_tokens, self.num_tokens)


@dataclass
class BlockOutput:
    """What one block hands on during :meth:`VisionTransformer.iter_blocks`."""

    index: int
    tokens: Tensor  # (B, N, D), the block's output (before the final norm)
    attention: Tensor | None  # (B, H, N, N) when this layer's maps were asked for


class VisionTransformer(nn.Module):
    """A ViT (Dosovitskiy et al., 2021) whose every layer can hand back its attention maps.

    ``text_tower``: for a CLIP-like model read with its text half (OpenCLIP, transformers' CLIP
    and SigLIP), the source library's text encoder (:class:`TextTower`); ``None`` otherwise. It is
    no part of the module's state: saving writes the image model only.
    """

    text_tower: TextTower | None = None

    def __init__(self, config: ViTConfig | None = None, **overrides) -> None:
        super().__init__()
        config = (config or ViTConfig()).replace(**overrides) if overrides else (config or ViTConfig())
        self.config = c = config
        D = c.embed_dim
        self.num_prefix_tokens = c.num_prefix_tokens
        patch_norm = make_norm(c.norm_layer, D, c.norm_eps) if c.patch_norm else None
        self.patch_embed = PatchEmbed(
            c.patch_size, c.in_chans, D, bias=c.patch_bias, norm=patch_norm, own_size=c.img_hw
        )

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
        self.blocks = nn.ModuleList(make_block(c, i, drop_path=drop_path[i]) for i in range(c.depth))
        self.rope = MixedRope(c) if c.rope == "mixed" else None  # learned rotary frequencies (RoPE-Mixed)
        # timm's rule: the final norm sits after the pooling (fc_norm) or before it (norm), or nowhere
        self.norm = make_norm(c.norm_layer, D, c.norm_eps) if c.final_norm and not c.use_fc_norm else nn.Identity()
        self.fc_norm = make_norm(c.norm_layer, D, c.norm_eps) if c.final_norm and c.use_fc_norm else nn.Identity()
        self.attn_pool = None
        if c.global_pool == "map":
            pool_heads, pool_ratio = c.attn_pool_num_heads or c.num_heads, c.attn_pool_mlp_ratio or c.mlp_ratio
            self.attn_pool = AttentionPool(
                D, pool_heads, int(D * pool_ratio), act_layer=c.act_layer, norm_layer=c.norm_layer, norm_eps=c.norm_eps
            )
        self.head_drop = nn.Dropout(c.drop_rate)
        self.head = nn.Linear(c.head_in_dim, c.num_classes, bias=c.head_bias) if c.num_classes else nn.Identity()
        self.head_dist = nn.Linear(D, c.num_classes) if c.distilled and c.dist_head and c.num_classes else None
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
        readout = "pool" if self.attn_pool is not None else ("class" if cls_index is not None else "mean")
        return TokenLayout(self.num_prefix_tokens, cls_index, dist_index, regs, (h // p, w // p), p, readout)

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

    def iter_blocks(
        self, images: Tensor, return_attention: AttentionRequest = False, queries: QueryRequest = "all"
    ) -> Iterator[BlockOutput]:
        """Run the transformer one block at a time: what each block hands on, and its maps if asked.

        This is the model's forward up to the final norm, exposed as a loop, so that code which
        needs to act between layers (streamed rollout, per-layer probes) never re-writes it.
        ``return_attention`` and ``queries`` take the same values as in :meth:`forward`. A step's
        ``attention`` is released when the next block runs (keep the tensor itself to hold on to
        it), so a consumer that folds each layer's maps as they come holds one layer's at a time.
        """
        keep = self.layers_requested(return_attention) or (False,) * self.depth
        layout = self.token_layout(images)
        rows = self.query_indices(queries, layout)
        if rows is not None and rows.numel() == 0:
            keep = (False,) * self.depth  # no such query token in this model: no rows to give
        rows = None if rows is None else rows.to(images.device)
        x = self.embed(images)
        shared = self._rope_for(layout.grid) if self.rope is None else None  # RoPE-Mixed: each block its own
        for i, block in enumerate(self.blocks):
            rope = shared if self.rope is None else self._rope_for(layout.grid, i)
            x, weights = block(x, need_weights=keep[i], rope=rope, queries=rows)
            step = BlockOutput(i, x, weights)
            del weights
            yield step
            step.attention = None  # released before the next block runs: streamed maps never pile up

    def _rope_for(self, grid: tuple[int, int], index: int = 0) -> tuple[Tensor, Tensor] | None:
        """The rotary embedding's (sin, cos) for this patch grid, on the model's device and dtype; with
        RoPE-Mixed, block ``index``'s (one per head)."""
        if self.config.rope == "none":
            return None
        weight = self.patch_embed.proj.weight
        sin_cos = rope_sin_cos(self.config, grid) if self.rope is None else self.rope.sin_cos(grid, index)
        return tuple(t.to(weight.device, weight.dtype) for t in sin_cos)

    def forward_features(self, images: Tensor) -> Tensor:
        """Tokens after the last block and the final norm, (B, N, D), as in timm."""
        x = None
        for step in self.iter_blocks(images):
            x = step.tokens
        return self.norm(x)

    def forward_head(self, tokens: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool the tokens (class token, patch mean or attention pool), then the classifier, as in timm.

        ``pre_logits``: the pooled features. DeiT's distilled models read the class and the
        distillation token, each with its own head, and average the two (``pre_logits``: the
        average of the two tokens).
        """
        return self._head(tokens, pre_logits)[0]

    def pool_attention(self, features: Tensor) -> Tensor | None:
        """Where the attention pool's query looks for these final-norm tokens: (B, H, 1, N), or None.

        ``None`` for a model without an attention pool. Equals ``ViTOutput.pool_attention``; for code
        that runs the blocks itself (:meth:`iter_blocks`) and wants the readout's map at the end.
        """
        return self._head(features, need_weights=True)[1] if self.attn_pool is not None else None

    def _head(
        self, tokens: Tensor, pre_logits: bool = False, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """:meth:`forward_head`, the attention pool's maps over all tokens when asked for, and the pooled features."""
        c = self.config
        if c.distilled and c.dist_head:
            x, x_dist = self.head_drop(tokens[:, 0]), self.head_drop(tokens[:, 1])
            if pre_logits or self.head_dist is None:
                return (x + x_dist) / 2, None, (x + x_dist) / 2
            return (self.head(x) + self.head_dist(x_dist)) / 2, None, (x + x_dist) / 2
        start = 0 if c.pool_include_prefix else self.num_prefix_tokens
        weights = None
        if self.attn_pool is not None:
            pooled, weights = self.attn_pool(tokens, need_weights, skip=start)
        elif c.global_pool == "avg":
            pooled = tokens[:, start:].mean(dim=1)
        elif c.global_pool == "token_avg":  # DINOv2's classifier: the class token beside the patch mean
            pooled = torch.cat([tokens[:, 0], tokens[:, self.num_prefix_tokens :].mean(dim=1)], dim=-1)
        else:
            pooled = tokens[:, 0]
        pooled = self.head_drop(self.fc_norm(pooled))
        return (pooled if pre_logits else self.head(pooled)), weights, pooled

    def forward(
        self, images: Tensor, return_attention: AttentionRequest = False, queries: QueryRequest = "all"
    ) -> Tensor | ViTOutput:
        """Logits (B, classes); with ``return_attention`` a :class:`ViTOutput` with the maps.

        ``return_attention``: ``False`` (fused attention, nothing stored), ``True`` (every
        layer), or layer indices such as ``[-1]`` or ``[0, 5]`` (negative counts from the end):
        only those layers compute and keep maps; ``attentions`` has ``None`` elsewhere. An
        attention pool's maps come with any request (``pool_attention``).

        ``queries``: which rows of those maps, (B, H, Q, N): ``"all"`` (every token's, Q = N),
        ``"cls"`` (the class token's), ``"prefix"`` (class, distillation and register tokens) or
        token indices. With rows chosen, the layer's output still comes from the fused kernel and
        only softmax(q_rows kᵀ · scale) is formed: O(Q·N) memory instead of O(N²). A model without
        such tokens (``"cls"`` on SigLIP, whose readout is its pool: ``pool_attention``) returns
        ``None`` for every layer.
        """
        x, maps = None, []
        for step in self.iter_blocks(images, return_attention, queries):
            x = step.tokens
            maps.append(step.attention)
        wants_maps = self.layers_requested(return_attention) is not None
        out = self.readout(x, need_weights=wants_maps)
        if not wants_maps:
            return out.logits
        out.attentions = tuple(maps)
        return out

    def readout(self, tokens: Tensor, need_weights: bool = False) -> ViTOutput:
        """The final norm and the head on the last block's output: a :class:`ViTOutput` without layer
        maps (``attentions`` empty); the attention pool's with ``need_weights``."""
        tokens = self.norm(tokens)
        logits, pool_weights, pooled = self._head(tokens, need_weights=need_weights)
        return ViTOutput(logits, (), tokens, pool_attention=pool_weights, pooled=pooled)

    def run_block(
        self,
        index: int,
        tokens: Tensor,
        grid: tuple[int, int],
        need_weights: bool = False,
        rows: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Block ``index`` on its input ``tokens`` for a ``grid`` of patches, as :meth:`iter_blocks` runs it:
        for code that recomputes one layer (bounded-memory explanations). ``rows``: the output (and map
        rows) of those tokens only."""
        return self.blocks[index](tokens, need_weights=need_weights, rope=self._rope_for(grid, index), rows=rows)

    def forward_intermediates(
        self,
        images: Tensor,
        indices: int | Sequence[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list | tuple[Tensor, list]:
        """timm's ``forward_intermediates``: the tokens of chosen blocks, for dense prediction.

        ``indices``: None (every block), ``n`` (the last n blocks) or block indices (negative from
        the end). Each intermediate is the block's output (``norm=True``: through the final norm),
        patch tokens only, as (B, D, rows, cols) for ``output_fmt='NCHW'`` or (B, patches, D) for
        ``'NLC'``; ``return_prefix_tokens`` pairs each with its (B, prefix, D) prefix tokens.
        Returns ``(final tokens, intermediates)``, or only the list with ``intermediates_only``;
        ``stop_early`` skips the blocks after the last one asked for (the final tokens then come
        from there).
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take = self._block_indices(indices)
        layout = self.token_layout(images)
        n = layout.num_prefix_tokens
        x, intermediates = None, []
        for step in self.iter_blocks(images):
            x = step.tokens
            if step.index in take:
                y = self.norm(x) if norm else x
                patches = y[:, n:]
                if output_fmt == "NCHW":  # (B, rows*cols, D) -> (B, D, rows, cols)
                    patches = patches.reshape(len(y), *layout.grid, -1).permute(0, 3, 1, 2).contiguous()
                intermediates.append((patches, y[:, :n]) if return_prefix_tokens and n else patches)
            if stop_early and step.index == max(take):
                break
        return intermediates if intermediates_only else (self.norm(x), intermediates)

    def _block_indices(self, indices: int | Sequence[int] | None) -> list[int]:
        """timm's rule for ``indices``: None = all blocks, n = the last n, or those listed (negative from the end)."""
        depth = self.depth
        if indices is None:
            return list(range(depth))
        if isinstance(indices, int) and not isinstance(indices, bool):
            if not 0 < indices <= depth:
                raise ValueError(f"last-n ({indices}) is out of range for a {depth}-block model (1 to {depth})")
            return list(range(depth - indices, depth))
        taken = []
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, int) or not -depth <= i < depth:
                raise ValueError(f"block index {i!r} is out of range for a {depth}-block model ({-depth}..{depth - 1})")
            taken.append(i % depth)
        if not taken:
            raise ValueError("indices is empty: name at least one block")
        return taken

    def query_indices(self, queries: QueryRequest, layout: TokenLayout) -> Tensor | None:
        """``queries`` of :meth:`forward` as token indices (None: every row); ``ValueError`` for a bad one."""
        if isinstance(queries, str):
            if queries == "all":
                return None
            if queries == "cls":
                return torch.tensor([] if layout.class_index is None else [layout.class_index], dtype=torch.long)
            if queries == "prefix":
                return torch.arange(layout.num_prefix_tokens)
            raise ValueError(f"queries takes 'all', 'cls', 'prefix' or token indices; got {queries!r}")
        indices = torch.as_tensor(queries).long().flatten() if not isinstance(queries, int) else torch.tensor([queries])
        if isinstance(queries, Tensor) and (queries.is_floating_point() or queries.dtype == torch.bool):
            raise ValueError(f"queries must be token indices (integers), got a {queries.dtype} tensor")
        n = layout.num_tokens
        if indices.numel() == 0 or not bool(((indices >= 0) & (indices < n)).all()):
            raise ValueError(f"query token indices must lie in 0..{n - 1} for this input; got {indices.tolist()}")
        return indices

    def layers_requested(self, request: AttentionRequest) -> tuple[bool, ...] | None:
        """Turn a ``return_attention`` argument into one flag per layer (None: no maps)."""
        depth = self.depth
        if request is False or request is None:
            return None
        if request is True:
            return (True,) * depth
        if isinstance(request, int):
            indices = [request]
        elif isinstance(request, Sequence) and not isinstance(request, (str, bytes)):
            indices = list(request)
        else:
            raise ValueError(
                f"return_attention takes True, False, a layer index or a sequence of layer indices; got {request!r}"
            )
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

    @torch.no_grad()
    def find_non_finite(self, images: Tensor) -> str | None:
        """Where the numbers of a forward on ``images`` stop being finite: the first part that
        gives a NaN or an infinity (``'the input'``, ``'the embedding'``, ``'block 3'``, ``'the
        final norm'``, ``'the head'``), or ``None`` when everything is finite."""
        if not torch.isfinite(images).all():
            return "the input"
        x = None
        for step in self.iter_blocks(images):
            if x is None and not torch.isfinite(self.embed(images)).all():
                return "the embedding"
            x = step.tokens
            if not torch.isfinite(x).all():
                return f"block {step.index}"
        tokens = self.norm(x)
        if not torch.isfinite(tokens).all():
            return "the final norm"
        return None if torch.isfinite(self.forward_head(tokens)).all() else "the head"

    # --------------------------------------------------------------- utilities
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_image(self, image_size: tuple[int, int] | None = None) -> int:
        """Multiply-accumulates x 2 of one forward pass (matmuls only), for throughput reports."""
        c = self.config
        h, w = image_size or c.img_hw
        n_patch = (h // c.patch_size) * (w // c.patch_size)
        n = n_patch + self.num_prefix_tokens
        d, hid = c.embed_dim, c.hidden_dim
        fc1 = hid * (2 if c.mlp_layer == "swiglu" else 1)  # the unpacked gate has two first layers
        per_block = n * d * 3 * d + 2 * n * n * d + n * d * d + n * d * fc1 + n * c.gated_dim * d
        embed = n_patch * c.patch_size**2 * c.in_chans * d
        return 2 * (c.depth * per_block + embed + d * c.num_classes)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode (no dropout: maps are deterministic), then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
