"""Raw attention read-outs: class-token maps per head, attention distance and entropy, upsampling.

Every function here works on attention tensors that are already computed, (B, H, N, N) per
layer (and an attention pool's (B, H, 1, N)), plus the model's :class:`~vitlens.model.TokenLayout`,
so one forward pass can feed all of them. Register and distillation tokens are never shown as
"patches": only ``layout.patch_slice`` is read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..model import TokenLayout, eval_mode


def check_attention(attn: Tensor, layout: TokenLayout, name: str = "attention") -> None:
    """``ValueError`` unless ``attn`` is one layer's (B, H, N, N) or an attention pool's (B, H, 1, N)."""
    n = layout.num_tokens
    queries = (n, 1) if layout.readout == "pool" else (n,)
    if attn.dim() != 4 or attn.shape[-1] != n or attn.shape[-2] not in queries:
        expected = f"(batch, heads, {n}, {n})" + (f" or an attention pool's (batch, heads, 1, {n})" if n != 1 else "")
        raise ValueError(
            f"{name} must have shape {expected} for a layout with {layout.num_prefix_tokens} "
            f"prefix token(s) and a {layout.grid[0]}x{layout.grid[1]} patch grid; got {tuple(attn.shape)}"
        )


# Row-chunked recomputation holds this many bytes of a layer's map rows at a time: 64 MiB when only the
# rows themselves live (rollout of the readout row), 16 MiB under autograd, whose backward holds about
# four tensors that size (scores, maps and both gradients; bounded GAE and gradient rollout)
CHUNK_BYTES = 64 * 2**20
GRADIENT_CHUNK_BYTES = 16 * 2**20


def row_chunk(batch: int, heads: int, tokens: int, budget: int = CHUNK_BYTES) -> int:
    """How many query rows of a layer's maps make about ``budget`` bytes."""
    return max(1, budget // (4 * batch * heads * tokens))


def readout_row(layout: TokenLayout, batch: int, device: torch.device) -> Tensor:
    """The (B, 1, N) row that reads a product out: the class token's, or the mean of the patch rows."""
    row = torch.zeros(batch, 1, layout.num_tokens, device=device)
    if layout.class_index is not None:
        row[:, 0, layout.class_index] = 1.0
    else:
        row[:, 0, layout.patch_slice] = 1.0 / layout.num_patches
    return row


def patch_scores(matrix: Tensor, layout: TokenLayout) -> Tensor:
    """Read a query-by-token matrix (..., Nq, N) as a score per patch, shaped (..., gh, gw).

    One query row (an attention pool's, or a product that ends in it): that row over the patch
    columns. Otherwise, with a class token: its row; without one (global average pooling): the
    mean of the patch rows, because the pooled feature is the mean of the patch tokens.
    """
    patches = layout.patch_slice
    if matrix.shape[-2] == 1:
        scores = matrix[..., 0, patches]
    elif layout.class_index is not None:
        scores = matrix[..., layout.class_index, patches]
    else:
        scores = matrix[..., patches, patches].mean(dim=-2)
    return scores.reshape(*scores.shape[:-1], *layout.grid)


def dino_mask(maps: Tensor, threshold: float) -> Tensor:
    """DINO's mass threshold: 1 on the smallest set of patches holding ``threshold`` of each map's mass.

    ``maps`` is (..., gh, gw) and non-negative; the result has the same shape, values 0.0 or 1.0.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold is a fraction of attention mass in (0, 1], got {threshold!r}")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError("the maps hold NaN or infinity (a NaN image, or NaN weights?): no mask can be drawn from them")
    flat = maps.flatten(-2)
    values, order = flat.sort(dim=-1, descending=True)
    total = values.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    # keep a patch while the mass of the larger patches before it is still below the threshold
    keep_sorted = (values.cumsum(dim=-1) - values) / total < threshold
    keep = torch.zeros_like(flat).scatter(-1, order, keep_sorted.to(flat.dtype))
    return keep.reshape(maps.shape)


def cls_attention_from(attn: Tensor, layout: TokenLayout, threshold: float | None = None) -> Tensor:
    """Per-head class-token maps (B, H, gh, gw) from one layer's (B, H, N, N) attention.

    Without a class token the map is the mean attention that patch queries pay to each patch.
    Given an attention pool's (B, H, 1, N) maps (``ViTOutput.pool_attention``), the pool query's
    map per head. With ``threshold`` (e.g. 0.6, as in DINO) the result is DINO's binary mask
    instead: the top patches that together hold that fraction of the head's attention over patches.
    """
    check_attention(attn, layout)
    maps = patch_scores(attn.float(), layout)
    return maps if threshold is None else dino_mask(maps, threshold)


def cls_attention(model: nn.Module, images: Tensor, layer: int | None = None, threshold: float | None = None) -> Tensor:
    """DINO-style per-head maps of the readout query over the patches: (B, H, gh, gw).

    ``layer=None``: the query the head reads out — the class token in the last layer, or, for a
    model with an attention pool, the pool's own query (SigLIP). An index: the class row of that
    layer (the mean of the patch rows without a class token). Only that layer computes explicit
    attention, and only the class token's row of it (``queries="cls"``); the rest of the forward
    uses the fused kernel. ``threshold``: see
    :func:`cls_attention_from`.
    """
    layout = model.token_layout(images)
    pool = layer is None and layout.readout == "pool"
    rows = layout.class_index is not None and not pool  # the class row alone: O(N) memory, not O(N²)
    with eval_mode(model), torch.no_grad():
        out = model(images, return_attention=[-1 if layer is None else layer], queries="cls" if rows else "all")
    if pool:
        return cls_attention_from(out.pool_attention, layout, threshold)
    attn = out.attentions[-1 if layer is None else layer]
    if not rows:
        return cls_attention_from(attn, layout, threshold)
    maps = attn[:, :, 0, layout.patch_slice].float().reshape(*attn.shape[:2], *layout.grid)
    return maps if threshold is None else dino_mask(maps, threshold)


def upsample(heat: Tensor, image_size: int | Sequence[int], mode: str = "bilinear") -> Tensor:
    """Resize patch-grid maps (B, gh, gw) — or one (gh, gw) map — to pixels: (B, H, W).

    ``mode`` is any ``F.interpolate`` mode; ``'nearest'`` keeps each patch a flat square.
    """
    if heat.dim() not in (2, 3):
        raise ValueError(f"upsample expects maps of shape (B, rows, cols) or (rows, cols), got {tuple(heat.shape)}")
    size = (int(image_size), int(image_size)) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    if len(size) != 2:
        raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
    x = heat.float()[None] if heat.dim() == 2 else heat.float()
    kwargs = {} if mode in ("nearest", "area", "nearest-exact") else {"align_corners": False}
    return F.interpolate(x[:, None], size=size, mode=mode, **kwargs)[:, 0]


def _patch_block(attn: Tensor, layout: TokenLayout, renormalize: bool) -> Tensor:
    """Attention from patch queries to patch keys (B, H, P, P), rows renormalized if asked."""
    check_attention(attn, layout)
    if attn.shape[-2] != layout.num_tokens:
        raise ValueError(f"distance and entropy read a layer's (B, H, N, N) maps, got {tuple(attn.shape)}")
    block = attn.float()[..., layout.patch_slice, layout.patch_slice]
    if renormalize:
        block = block / block.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return block


def patch_distances(grid: tuple[int, int], patch_size: float, device=None) -> Tensor:
    """Euclidean distance in pixels between the centres of every pair of patches: (P, P)."""
    rows, cols = torch.meshgrid(
        torch.arange(grid[0], device=device), torch.arange(grid[1], device=device), indexing="ij"
    )
    centres = torch.stack([rows.flatten(), cols.flatten()], dim=-1).float() * float(patch_size)
    return torch.cdist(centres, centres)


def _per_layer(attentions: Sequence[Tensor | None], fn) -> Tensor:
    """Apply ``fn`` (map -> (H,)) to each layer; NaN rows for layers given as None."""
    present = [a for a in attentions if a is not None]
    if not present:
        raise ValueError("no attention maps given (every layer is None): run the model with return_attention=True")
    heads, device = present[0].shape[1], present[0].device
    rows = [torch.full((heads,), math.nan, device=device) if a is None else fn(a) for a in attentions]
    return torch.stack(rows)


def attention_distance(
    attentions: Sequence[Tensor | None] | Tensor,
    layout: TokenLayout,
    patch_size: float | None = None,
    renormalize: bool = False,
) -> Tensor:
    """Mean attention distance in pixels per layer and head, (L, H) — the ViT paper's Fig. 7.

    For every patch query: Σ_k a_qk · ‖centre_q − centre_k‖ over patch keys, averaged over the
    queries and the batch. ``patch_size`` defaults to ``layout.patch_size`` (pass the size in
    input pixels if the images were resized). Prefix tokens (class, registers) have no place
    in the image: by default the attention they receive counts as distance 0; with
    ``renormalize=True`` each query's patch attention is rescaled to sum to 1 first, so the
    number is "how far it looks, when it looks at patches". Layers given as ``None`` give NaN rows.
    """
    attentions = [attentions] if isinstance(attentions, Tensor) and attentions.dim() == 4 else list(attentions)
    pixels = float(patch_size if patch_size is not None else layout.patch_size)

    def one(attn: Tensor) -> Tensor:
        dist = patch_distances(layout.grid, pixels, attn.device)
        return (_patch_block(attn, layout, renormalize) * dist).sum(-1).mean(dim=(0, 2))

    return _per_layer(attentions, one)


def attention_entropy(
    attentions: Sequence[Tensor | None] | Tensor, layout: TokenLayout, renormalize: bool = False
) -> Tensor:
    """Mean entropy (nats) of the patch queries' attention over patch keys, per layer and head: (L, H).

    Low entropy: a head that looks at few patches; log(P) is uniform over all P patches. As in
    :func:`attention_distance`, ``renormalize=True`` rescales each query's patch attention to
    sum to 1 (the attention spent on prefix tokens is otherwise simply left out of the sum).
    Layers given as ``None`` give NaN rows.
    """
    attentions = [attentions] if isinstance(attentions, Tensor) and attentions.dim() == 4 else list(attentions)

    def one(attn: Tensor) -> Tensor:
        p = _patch_block(attn, layout, renormalize)
        return -(p * p.clamp_min(1e-12).log()).sum(-1).mean(dim=(0, 2))

    return _per_layer(attentions, one)


@dataclass(frozen=True)
class TokenNorms:
    """Each layer's patch-token norms (B, L, gh, gw) and the outliers among them (same shape, bool)."""

    norms: Tensor
    high: Tensor
    ratio: float


def high_norm_tokens(model: nn.Module, images: Tensor, ratio: float = 3.0) -> TokenNorms:
    """Patch tokens whose output norm stands out: above ``ratio`` times the image's median patch norm
    at that layer (each block's output, before the final norm).

    Large ViTs trained without registers grow a few such tokens in low-information background
    patches, which take over the class token's attention (Darcet et al., "Vision Transformers Need
    Registers", ICLR 2024, who find their norms several times the others'); a model with registers
    has none. Flagged patches are artifacts to discount, not findings.
    """
    if not ratio > 1:
        raise ValueError(f"ratio must be above 1 (a multiple of the median norm), got {ratio}")
    layout = model.token_layout(images)
    norms = []
    with eval_mode(model), torch.no_grad():
        for step in model.iter_blocks(images):
            norms.append(step.tokens[:, layout.patch_slice].float().norm(dim=-1))
    norms = torch.stack(norms, dim=1)  # (B, L, patches)
    median = norms.median(dim=-1, keepdim=True).values
    high = norms > ratio * median
    return TokenNorms(norms.view(*norms.shape[:2], *layout.grid), high.view(*norms.shape[:2], *layout.grid), ratio)
