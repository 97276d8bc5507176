"""Gradient-weighted explanations: gradient rollout and Chefer et al.'s relevance (GAE).

Both weight each layer's attention A_l by the gradient of the target logit with respect to
*that same* A_l (the widely copied reference pairs layer l's map with another layer's gradient
because it zips a forward-ordered list with a backward-ordered one):

* :func:`gae` — Chefer, Gur & Wolf, "Generic Attention-model Explainability", ICCV 2021:
  Ā_l = mean_h (∇A_l ⊙ A_l)⁺ and R ← R + Ā_l R from R = I, layer by layer.
* :func:`grad_rollout` — rollout whose head fusion is the gradient-weighted mean:
  Ā_l = (mean_h ∇A_l ⊙ A_l)⁺, then I is added, rows renormalized and the layers multiplied
  as in :func:`~vitlens.explain.rollout.rollout`.

The class token's row of the result over the patches is the map (models without a class
token: the mean of the patch rows). With an attention pool (SigLIP), its query's (B, H, 1, N)
maps are the last factor, without the identity (the query is no token), and the product is
that query's row. The target is the predicted class unless given; every image in the batch
gets its own target and its own gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..layers.attention import Attention
from ..layers.diff_attention import DiffAttention
from ..model import TokenLayout, eval_mode
from .fold import ProductFold, product
from .maps import GRADIENT_CHUNK_BYTES, check_attention, patch_scores, readout_row, row_chunk
from .targets import Target, target_scores

Step = Callable[..., Tensor]  # (maps, their gradient[, rows]) -> the layer's factor


def _plus_identity(fused: Tensor, rows: Tensor | None = None) -> Tensor:
    """Add I for the residual path of a token-by-token factor (only its ``rows``, when the factor is those
    rows of it); an attention pool's row (B, 1, N) has none."""
    if rows is not None:
        fused[:, torch.arange(len(rows), device=fused.device), rows] += 1.0
        return fused
    if fused.shape[-2] != fused.shape[-1]:
        return fused
    return fused + torch.eye(fused.shape[-1], device=fused.device, dtype=fused.dtype)


def gae_step(attn: Tensor, grad: Tensor, rows: Tensor | None = None) -> Tensor:
    """Chefer's layer factor I + mean_h (∇A ⊙ A)⁺: (B, H, N, N) twice -> (B, N, N) (pool: (B, 1, N), no I).
    ``rows``: the maps are those query rows of the layer's; the factor's same rows come back."""
    return _plus_identity((grad.float() * attn.float()).clamp_min_(0).mean(dim=1), rows)  # one (B, H, N, N) temporary


def grad_rollout_step(attn: Tensor, grad: Tensor, rows: Tensor | None = None) -> Tensor:
    """Gradient rollout's layer factor: (mean_h ∇A ⊙ A)⁺ + I, each row renormalized to sum to 1."""
    step = _plus_identity((grad.float() * attn.float()).mean(dim=1).clamp_min(0), rows)
    return step / step.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def _fold(attentions: Sequence[Tensor], grads: Sequence[Tensor], layout: TokenLayout, step: Step) -> Tensor:
    """Multiply the layer factors, first layer rightmost, and read the patch map (B, gh, gw)."""
    if len(attentions) != len(grads) or not attentions:
        raise ValueError(f"need one gradient per attention map, got {len(attentions)} maps and {len(grads)} gradients")
    if layout.readout == "pool" and (attentions[-1] is None or attentions[-1].shape[-2] != 1):
        raise ValueError(
            "this model reads out with an attention pool: its (B, H, 1, N) maps and their gradient come last "
            "(as attention_gradients gives them)"
        )

    def factors():
        for i, (attn, grad) in enumerate(zip(attentions, grads)):
            if attn is None or grad is None:
                raise ValueError(f"layer {i} has no attention map or gradient: every layer is needed")
            check_attention(attn, layout, f"attentions[{i}]")
            if grad.shape != attn.shape:
                raise ValueError(f"grads[{i}] has shape {tuple(grad.shape)}, expected {tuple(attn.shape)} like its map")
            yield step(attn, grad)

    return patch_scores(product(factors()), layout)


def gae_from(attentions: Sequence[Tensor], grads: Sequence[Tensor], layout: TokenLayout) -> Tensor:
    """Chefer relevance (B, gh, gw) from per-layer maps and each map's own gradient."""
    return _fold(attentions, grads, layout, gae_step)


def grad_rollout_from(attentions: Sequence[Tensor], grads: Sequence[Tensor], layout: TokenLayout) -> Tensor:
    """Gradient rollout (B, gh, gw) from per-layer maps and each map's own gradient."""
    return _fold(attentions, grads, layout, grad_rollout_step)


def attention_gradients(
    model: nn.Module, images: Tensor, target: Target = None
) -> tuple[list[Tensor], list[Tensor], Tensor | None]:
    """One forward and one backward: every layer's maps, each map's own gradient, and the class per image.

    The gradients come from ``torch.autograd.grad(score, maps)``, which returns them in the
    order of ``maps`` — layer l's gradient next to layer l's map. A model with an attention pool
    has its pool's (B, H, 1, N) maps last: the readout that the folds end in. The classes are
    None for a callable target (see :mod:`vitlens.explain.targets`).
    """
    with eval_mode(model), torch.enable_grad():
        out = model(images, return_attention=True)
        scores, classes = target_scores(out, target)
        maps = list(out.attentions) + ([out.pool_attention] if out.pool_attention is not None else [])
        grads = torch.autograd.grad(scores.sum(), maps, allow_unused=True)
    grads = [torch.zeros_like(m) if g is None else g for m, g in zip(maps, grads)]  # a score blind to a layer
    return [m.detach() for m in maps], [g.detach() for g in grads], classes


def _streaming(model: nn.Module, images: Tensor, target, step: Step) -> Tensor:
    """Fold each layer into the product as the backward reaches it; no list of gradients is kept.

    The backward visits the last layer first, so the product grows on the right:
    P ← P · step_l, which gives the same step_L ··· step_1 as the forward-ordered fold.
    Autograd still saves every map for the backward itself; what is saved here is the
    L gradients and L fused factors the non-streaming path holds at once.
    """
    layout = model.token_layout(images)
    fold = ProductFold(backward=True)

    def hook_for(attn: Tensor) -> Callable[[Tensor], None]:
        def hook(grad: Tensor) -> None:  # returns nothing: the gradient itself is left as it is
            fold.add(step(attn.detach(), grad))

        return hook

    with eval_mode(model), torch.enable_grad():
        out = model(images, return_attention=True)
        scores, _ = target_scores(out, target)
        readout = [out.pool_attention] if out.pool_attention is not None else []
        for attn in [*out.attentions, *readout]:  # the backward reaches the readout first
            attn.register_hook(hook_for(attn))
        # asking for the first map's gradient walks back through every later layer's map too
        torch.autograd.grad(scores.sum(), out.attentions[0])
    return patch_scores(fold.result(), layout)


@contextmanager
def projections_once(block: nn.Module) -> Iterator[list[tuple[Tensor, Tensor]]]:
    """While open, each attention in ``block`` computes its q/k/v projection on its first call only.

    That call's output ``out`` (with its graph back to the block's input) is kept, and every call,
    the first too, is handed the same leaf ``out.detach().requires_grad_()``: a layer recomputed a
    few rows at a time then projects every token once, not once per chunk. Yields the
    ``(out, leaf)`` pairs, filled by the first call: the leaves' gradients, summed over the chunks,
    are carried back through ``out`` once.
    """
    pairs: list[tuple[Tensor, Tensor]] = []
    attentions = [m for m in block.modules() if isinstance(m, (Attention, DiffAttention))]

    def once(project: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        kept: list[Tensor] = []

        def projected(x: Tensor) -> Tensor:
            if not kept:
                out = project(x)
                kept.append(out.detach().requires_grad_())
                pairs.append((out, kept[0]))
            return kept[0]

        return projected

    for attention in attentions:
        attention.project = once(attention.project)  # an instance attribute over the method
    try:
        yield pairs
    finally:
        for attention in attentions:
            del attention.project  # the class's method again


def _bounded(model: nn.Module, images: Tensor, target: Target, step: Step, chunk: int | None = None) -> Tensor:
    """The same relevance in bounded memory: activation checkpointing, and a row instead of a product.

    The forward keeps only each block's input tokens. The backward then recomputes one block at a
    time, from the last, ``chunk`` query rows at a time (by default as many as make about
    ``GRADIENT_CHUNK_BYTES`` of maps), with those rows' maps in the graph: the gradient of the score with
    respect to them and to the block's input gives the rows of the layer's factor, and the readout's
    row (1 x N) is multiplied by them at once: rollout's readout row needs that row times each factor,
    never the N x N product. Every token's q, k and v are projected once per layer
    (:func:`projections_once`), and their gradient goes back through the projection once. The target
    score sees the output without layer maps.
    """
    layout = model.token_layout(images)
    grid, n = layout.grid, layout.num_tokens
    size = chunk or row_chunk(len(images), model.config.num_heads, n, GRADIENT_CHUNK_BYTES)
    with eval_mode(model):
        inputs = []
        with torch.no_grad():
            x = model.embed(images)
            for i in range(len(model.blocks)):
                inputs.append(x)
                x, _ = model.run_block(i, x, grid)
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            out = model.readout(x, need_weights=layout.readout == "pool")
            scores, _ = target_scores(out, target)
            wanted = [x] + ([out.pool_attention] if layout.readout == "pool" else [])
            grads = [
                g if g is not None else torch.zeros_like(w)
                for g, w in zip(torch.autograd.grad(scores.sum(), wanted, allow_unused=True), wanted)
            ]
            if layout.readout == "pool":
                row = step(out.pool_attention.detach(), grads[1])
            else:
                row = readout_row(layout, len(images), images.device)
            grad = grads[0]
            del out, scores, wanted, grads, x
            for i in reversed(range(len(model.blocks))):
                row, grad = _recompute_layer(model, i, inputs.pop().requires_grad_(), grid, row, grad, step, size)
    return patch_scores(row, layout)


def _recompute_layer(
    model: nn.Module,
    index: int,
    tokens: Tensor,
    grid: tuple[int, int],
    row: Tensor,
    grad: Tensor,
    step: Step,
    size: int,
) -> tuple[Tensor, Tensor]:
    """One block of :func:`_bounded`'s backward: ``row`` times the block's factor, and the gradient at its input.

    The block is recomputed ``size`` query rows at a time from its input ``tokens``, given ``grad``, the
    gradient at its output. q, k and v come from one projection per layer (:func:`projections_once`); the
    chunks' gradients of it are summed in place and go back through it once at the end, so the chunks'
    graphs are retained (a parallel block's norm feeds both the projection and the rows' MLP).
    """
    n = tokens.shape[1]
    next_row, next_grad = torch.zeros_like(row), torch.zeros_like(tokens)
    leaf_grads: list[Tensor] | None = None
    with projections_once(model.blocks[index]) as projections:
        for start in range(0, n, size):
            rows = torch.arange(start, min(n, start + size), device=tokens.device)
            y, attn = model.run_block(index, tokens, grid, need_weights=True, rows=rows)
            leaves = [leaf for _, leaf in projections]
            attn_grad, token_grad, *grads = torch.autograd.grad(
                y, [attn, tokens, *leaves], grad_outputs=grad[:, rows], allow_unused=True, retain_graph=True
            )
            attn_grad = torch.zeros_like(attn) if attn_grad is None else attn_grad
            next_row += row[:, :, rows] @ step(attn.detach(), attn_grad, rows)
            if token_grad is not None:
                next_grad += token_grad
            grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, leaves)]
            if leaf_grads is None:
                leaf_grads = grads
            else:  # in place: one gradient of q/k/v held besides the chunk's
                for total, g in zip(leaf_grads, grads):
                    total += g
            del y, attn, attn_grad, token_grad, grads
        if projections:
            outs = [out for out, _ in projections]
            next_grad += torch.autograd.grad(outs, tokens, grad_outputs=leaf_grads)[0]
    return next_row, next_grad


def gae(
    model: nn.Module, images: Tensor, target: Target = None, streaming: bool = False, bounded: bool | int = False
) -> Tensor:
    """Chefer, Gur & Wolf (ICCV 2021) relevance of ``target`` (default: predicted class): (B, gh, gw).

    ``target``: see :mod:`vitlens.explain.targets` (None, a class, one class per image, or a
    callable score). ``streaming=True`` folds each layer during the backward instead of
    collecting all gradients (same numbers). ``bounded=True`` recomputes each block during the
    backward, a few query rows at a time (an int: how many), so that only those rows of one
    layer's maps and gradients are alive (same numbers; for high resolutions; a callable target
    then sees no layer maps).
    """
    if bounded:
        return _bounded(model, images, target, gae_step, None if bounded is True else int(bounded))
    if streaming:
        return _streaming(model, images, target, gae_step)
    maps, grads, _ = attention_gradients(model, images, target)
    return gae_from(maps, grads, model.token_layout(images))


def grad_rollout(
    model: nn.Module, images: Tensor, target: Target = None, streaming: bool = False, bounded: bool | int = False
) -> Tensor:
    """Gradient-weighted attention rollout for ``target`` (default: predicted class): (B, gh, gw).

    Each layer's heads are fused as the positive part of mean_h(∇A ⊙ A) with the layer's own
    gradient. ``streaming`` and ``bounded`` as in :func:`gae`.
    """
    if bounded:
        return _bounded(model, images, target, grad_rollout_step, None if bounded is True else int(bounded))
    if streaming:
        return _streaming(model, images, target, grad_rollout_step)
    maps, grads, _ = attention_gradients(model, images, target)
    return grad_rollout_from(maps, grads, model.token_layout(images))
