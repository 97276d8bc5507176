"""Attention rollout (Abnar & Zuidema, 2020): follow attention through the residual stream.

Each layer's heads are fused into one (N, N) map, the identity is added for the residual
connection, each row is renormalized to sum to 1, and the layers are multiplied:
``R = Â_L ··· Â_start``. The class token's row of ``R`` over the patches is the map.
Models without a class token (global average pooling) read the mean of the patch rows. A model
with an attention pool (SigLIP) reads its pool's attention row r (heads fused) through the
layers, r · R: the pool's query is not one of the tokens, so no identity is added for it.

Two ways to run it: :func:`rollout_from_attentions` over maps already computed (reuse one
forward pass), or :func:`rollout` on a model, which with ``streaming=True`` folds each layer
into the running product during the forward and drops its maps at once, so memory holds one
(B, N, N) product and one layer's (B, H, N, N) maps instead of all L of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from ..model import TokenLayout, eval_mode
from .fold import ProductFold, product, running_products
from .maps import check_attention, patch_scores, readout_row, row_chunk

HEAD_FUSIONS = ("mean", "max", "min")


def fuse_heads(attn: Tensor, head_fusion: str = "mean") -> Tensor:
    """(B, H, N, N) -> (B, N, N) by the mean, max or min over heads."""
    if head_fusion == "mean":
        return attn.mean(dim=1)
    if head_fusion == "max":
        return attn.amax(dim=1)
    if head_fusion == "min":
        return attn.amin(dim=1)
    raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")


def discard_lowest(fused: Tensor, ratio: float) -> Tensor:
    """Zero the lowest ``ratio`` fraction of each item's (N, N) entries (the rollout paper's noise filter).

    The diagonal is kept, so every token keeps at least its own residual path.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {ratio!r}")
    count = int(fused.shape[-1] * fused.shape[-2] * ratio)
    if count == 0:
        return fused
    flat = fused.flatten(1)
    lowest = flat.topk(count, dim=-1, largest=False).indices
    drop = torch.zeros_like(flat, dtype=torch.bool).scatter(-1, lowest, True).view_as(fused)
    if fused.shape[-2] == fused.shape[-1]:  # a token's attention to itself is its residual path
        drop &= ~torch.eye(fused.shape[-1], dtype=torch.bool, device=fused.device)
    return fused.masked_fill(drop, 0.0)


def residual_step(attn: Tensor, head_fusion: str = "mean", discard_ratio: float = 0.0) -> Tensor:
    """One layer's rollout factor: fuse heads, drop the lowest entries, add I, renormalize rows.

    An attention pool's (B, H, 1, N) maps give its query's row (B, 1, N), without the identity:
    the query is not a token with a residual path.
    """
    step = discard_lowest(fuse_heads(attn.float(), head_fusion), discard_ratio)
    if step.shape[-2] == step.shape[-1]:
        step = step + torch.eye(step.shape[-1], device=step.device, dtype=step.dtype)
    return step / step.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def _check_start(start_layer: int, depth: int) -> int:
    if not -depth <= start_layer < depth:
        raise ValueError(f"start_layer {start_layer} is out of range for {depth} layers")
    return start_layer % depth


def layer_factors(
    attentions: Sequence[Tensor | None], layout: TokenLayout, head_fusion: str, discard_ratio: float, start: int
) -> Iterator[Tensor]:
    """Each layer's rollout factor (B, N, N) from ``start`` on; every such layer must have its maps."""
    for i in range(start, len(attentions)):
        attn = attentions[i]
        if attn is None:
            raise ValueError(
                f"rollout needs the maps of every layer from start_layer={start} on; layer {i} is None "
                "(run the model with return_attention=True)"
            )
        check_attention(attn, layout, f"attentions[{i}]")
        yield residual_step(attn, head_fusion, discard_ratio)


def _readout_factor(layout: TokenLayout, pool_attention: Tensor | None, head_fusion: str, discard_ratio: float):
    """The attention pool's row factor (B, 1, N) for a pooled model, else nothing; refused when it is missing."""
    if layout.readout != "pool":
        return []
    if pool_attention is None:
        raise ValueError("this model reads out with an attention pool: pass pool_attention=out.pool_attention")
    check_attention(pool_attention, layout, "pool_attention")
    return [residual_step(pool_attention, head_fusion, discard_ratio)]


def rollout_matrix(
    attentions: Sequence[Tensor | None],
    layout: TokenLayout,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    pool_attention: Tensor | None = None,
) -> Tensor:
    """The rolled-out token-to-token matrix (B, N, N); each row sums to 1.

    For a model with an attention pool (``pool_attention``, its (B, H, 1, N) maps), the pool
    query's rolled-out row (B, 1, N).
    """
    attentions = list(attentions)
    start = _check_start(start_layer, len(attentions))
    layers = layer_factors(attentions, layout, head_fusion, discard_ratio, start)
    return product([*layers, *_readout_factor(layout, pool_attention, head_fusion, discard_ratio)])


def rollout_from_attentions(
    attentions: Sequence[Tensor | None],
    layout: TokenLayout,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    pool_attention: Tensor | None = None,
) -> Tensor:
    """Rollout maps (B, gh, gw) from per-layer (B, H, N, N) attention (e.g. ``ViTOutput.attentions``).

    A model with an attention pool also needs ``pool_attention`` (``ViTOutput.pool_attention``).
    """
    matrix = rollout_matrix(attentions, layout, head_fusion, discard_ratio, start_layer, pool_attention)
    return patch_scores(matrix, layout)


def rollout_per_layer(
    attentions: Sequence[Tensor | None], layout: TokenLayout, head_fusion: str = "mean", discard_ratio: float = 0.0
) -> Tensor:
    """Rollout up to each layer: (B, L, gh, gw), entry l being the rollout of layers 0..l."""
    products = running_products(layer_factors(list(attentions), layout, head_fusion, discard_ratio, 0))
    return torch.stack([patch_scores(r, layout) for r in products], dim=1)


def _rows_rollout(model: nn.Module, images: Tensor, head_fusion: str, start: int) -> Tensor:
    """Rollout's readout row, folded from the last layer down: r ← r · Â_l, one chunk of Â_l's rows at a time.

    The forward keeps each block's input; each layer is then recomputed a few query rows at a time
    (their maps only), so neither the (B, N, N) product nor a layer's full maps is ever formed.
    """
    layout = model.token_layout(images)
    grid, n = layout.grid, layout.num_tokens
    size = row_chunk(len(images), model.config.num_heads, n)
    inputs = []
    x = model.embed(images)
    for i in range(model.depth):
        inputs.append(x)
        x, _ = model.run_block(i, x, grid)
    if layout.readout == "pool":
        row = residual_step(model.pool_attention(model.norm(x)), head_fusion)
    else:
        row = readout_row(layout, len(images), images.device)
    for i in reversed(range(start, model.depth)):
        tokens, folded = inputs.pop(), torch.zeros_like(row)
        for first in range(0, n, size):
            rows = torch.arange(first, min(n, first + size), device=images.device)
            _, attn = model.run_block(i, tokens, grid, need_weights=True, rows=rows)
            step = fuse_heads(attn.float(), head_fusion)
            step[:, torch.arange(len(rows), device=step.device), rows] += 1.0  # the residual path
            folded += row[:, :, rows] @ (step / step.sum(dim=-1, keepdim=True).clamp_min(1e-12))
            del attn, step
        row = folded
    return patch_scores(row, layout)


def rollout(
    model: nn.Module,
    images: Tensor,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    streaming: bool = False,
    rows: bool = False,
) -> Tensor:
    """Attention rollout of ``model`` on ``images``: (B, gh, gw) over the patch grid.

    Rows of every layer factor sum to 1, so the map of each image sums to 1 over all tokens
    (the part not on patches went to class/register tokens). Models without a class token:
    the mean of the patch rows is read (the head pools the mean of the patch tokens).
    ``streaming=True`` keeps one layer's maps at a time (see the module docstring); ``rows=True``
    folds the readout's row alone from the last layer down, recomputing each layer a few query rows
    at a time: no N x N product, a small multiple of plain memory, about twice plain time (mean,
    max or min fusion; the discard filter ranks a whole matrix and is refused). The numbers are
    the same.
    """
    layout = model.token_layout(images)
    with eval_mode(model), torch.no_grad():
        if rows:
            if discard_ratio:
                raise ValueError("rollout(rows=True) folds rows, and discard_ratio ranks a whole matrix: use one")
            if head_fusion not in HEAD_FUSIONS:
                raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
            return _rows_rollout(model, images, head_fusion, _check_start(start_layer, model.depth))
        if not streaming:
            out = model(images, return_attention=True)
            args = (head_fusion, discard_ratio, start_layer, out.pool_attention)
            return rollout_from_attentions(out.attentions, layout, *args)
        start = _check_start(start_layer, model.depth)
        fold, tokens = ProductFold(), None
        for step in model.iter_blocks(images, return_attention=list(range(start, model.depth))):
            tokens = step.tokens
            if step.index >= start:  # each block's maps are folded in and dropped before the next block runs
                fold.add(residual_step(step.attention, head_fusion, discard_ratio))
        for factor in _readout_factor(layout, model.pool_attention(model.norm(tokens)), head_fusion, discard_ratio):
            fold.add(factor)
        return patch_scores(fold.result(), layout)
