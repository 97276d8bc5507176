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
token: the mean of the patch rows). The target is the predicted class unless given; every
image in the batch gets its own target and its own gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..model import TokenLayout
from .maps import check_attention, eval_mode, patch_scores

Step = Callable[[Tensor, Tensor], Tensor]


def gae_step(attn: Tensor, grad: Tensor) -> Tensor:
    """Chefer's layer factor I + mean_h (∇A ⊙ A)⁺: (B, H, N, N) twice -> (B, N, N)."""
    fused = (grad.float() * attn.float()).clamp_min(0).mean(dim=1)
    return fused + torch.eye(fused.shape[-1], device=fused.device, dtype=fused.dtype)


def grad_rollout_step(attn: Tensor, grad: Tensor) -> Tensor:
    """Gradient rollout's layer factor: (mean_h ∇A ⊙ A)⁺ + I, each row renormalized to sum to 1."""
    fused = (grad.float() * attn.float()).mean(dim=1).clamp_min(0)
    step = fused + torch.eye(fused.shape[-1], device=fused.device, dtype=fused.dtype)
    return step / step.sum(dim=-1, keepdim=True)


def _fold(attentions: Sequence[Tensor], grads: Sequence[Tensor], layout: TokenLayout, step: Step) -> Tensor:
    """Multiply the layer factors, first layer rightmost, and read the patch map (B, gh, gw)."""
    if len(attentions) != len(grads) or not attentions:
        raise ValueError(f"need one gradient per attention map, got {len(attentions)} maps and {len(grads)} gradients")
    result = None
    for i, (attn, grad) in enumerate(zip(attentions, grads)):
        if attn is None or grad is None:
            raise ValueError(f"layer {i} has no attention map or gradient: every layer is needed")
        check_attention(attn, layout, f"attentions[{i}]")
        if grad.shape != attn.shape:
            raise ValueError(f"grads[{i}] has shape {tuple(grad.shape)}, expected {tuple(attn.shape)} like its map")
        factor = step(attn, grad)
        result = factor if result is None else factor @ result
    return patch_scores(result, layout)


def gae_from(attentions: Sequence[Tensor], grads: Sequence[Tensor], layout: TokenLayout) -> Tensor:
    """Chefer relevance (B, gh, gw) from per-layer maps and each map's own gradient."""
    return _fold(attentions, grads, layout, gae_step)


def grad_rollout_from(attentions: Sequence[Tensor], grads: Sequence[Tensor], layout: TokenLayout) -> Tensor:
    """Gradient rollout (B, gh, gw) from per-layer maps and each map's own gradient."""
    return _fold(attentions, grads, layout, grad_rollout_step)


def _target_score(logits: Tensor, target: int | Sequence[int] | Tensor | None) -> tuple[Tensor, Tensor]:
    """The sum over the batch of each image's target logit, and the targets (B,)."""
    if target is None:
        target = logits.argmax(dim=-1)
    target = torch.as_tensor(target, device=logits.device, dtype=torch.long)
    if target.dim() == 0:
        target = target.expand(logits.shape[0])
    if target.shape != (logits.shape[0],):
        raise ValueError(f"target must be None, a class index or one index per image ({logits.shape[0]}), got {target}")
    if bool((target < 0).any()) or bool((target >= logits.shape[1]).any()):
        raise ValueError(f"target classes must be in 0..{logits.shape[1] - 1}, got {target.tolist()}")
    # images do not interact in a ViT, so d(sum)/dA_b is image b's own gradient
    return logits.gather(1, target[:, None]).sum(), target


def attention_gradients(
    model: nn.Module, images: Tensor, target: int | Sequence[int] | Tensor | None = None
) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """One forward and one backward: every layer's maps, each map's own gradient, and the targets.

    The gradients come from ``torch.autograd.grad(score, maps)``, which returns them in the
    order of ``maps`` — layer l's gradient next to layer l's map.
    """
    with eval_mode(model), torch.enable_grad():
        out = model(images, return_attention=True)
        score, target = _target_score(out.logits, target)
        maps = list(out.attentions)
        grads = torch.autograd.grad(score, maps)
    return [m.detach() for m in maps], [g.detach() for g in grads], target


def _streaming(model: nn.Module, images: Tensor, target, step: Step) -> Tensor:
    """Fold each layer into the product as the backward reaches it; no list of gradients is kept.

    The backward visits the last layer first, so the product grows on the right:
    P ← P · step_l, which gives the same step_L ··· step_1 as the forward-ordered fold.
    Autograd still saves every map for the backward itself; what is saved here is the
    L gradients and L fused factors the non-streaming path holds at once.
    """
    layout = model.token_layout(images)
    product: list[Tensor] = []

    def fold(attn: Tensor) -> Callable[[Tensor], None]:
        def hook(grad: Tensor) -> None:
            factor = step(attn.detach(), grad)
            product[:] = [factor if not product else product[0] @ factor]

        return hook

    with eval_mode(model), torch.enable_grad():
        out = model(images, return_attention=True)
        score, _ = _target_score(out.logits, target)
        for attn in out.attentions:
            attn.register_hook(fold(attn))
        # asking for the first map's gradient walks back through every later layer's map too
        torch.autograd.grad(score, out.attentions[0])
    return patch_scores(product[0], layout)


def gae(
    model: nn.Module, images: Tensor, target: int | Sequence[int] | Tensor | None = None, streaming: bool = False
) -> Tensor:
    """Chefer, Gur & Wolf (ICCV 2021) relevance of ``target`` (default: predicted class): (B, gh, gw).

    ``target``: None, one class for all images, or one class per image. ``streaming=True``
    folds each layer during the backward instead of collecting all gradients (same numbers).
    """
    if streaming:
        return _streaming(model, images, target, gae_step)
    maps, grads, _ = attention_gradients(model, images, target)
    return gae_from(maps, grads, model.token_layout(images))


def grad_rollout(
    model: nn.Module, images: Tensor, target: int | Sequence[int] | Tensor | None = None, streaming: bool = False
) -> Tensor:
    """Gradient-weighted attention rollout for ``target`` (default: predicted class): (B, gh, gw).

    Each layer's heads are fused as the positive part of mean_h(∇A ⊙ A) with the layer's own
    gradient. ``streaming`` as in :func:`gae`.
    """
    if streaming:
        return _streaming(model, images, target, grad_rollout_step)
    maps, grads, _ = attention_gradients(model, images, target)
    return grad_rollout_from(maps, grads, model.token_layout(images))
