"""Layer-wise relevance propagation on the model's own forward: AttnLRP, CP-LRP, and Chefer et al. 2021.

* :func:`attnlrp` — AttnLRP (Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance
  Propagation for Transformers", ICML 2024): how much each patch token contributes to the score.
* ``rule="cp"`` — CP-LRP (Ali et al., "XAI for Transformers: Better Explanations through
  Conservative Propagation", ICML 2022): the attention maps (and an MLP's gate) are held constant,
  so relevance flows through the values only.
* :func:`transformer_attribution` — Chefer, Gur & Wolf, "Transformer Interpretability Beyond
  Attention Visualization", CVPR 2021: each map's relevance times its gradient, rolled out.

How: in the gradient x input form of LRP (Arras et al., 2025), the ε-rule (ε → 0) of every linear
step — the projections, the patch embedding, sums, layer scale, rotary embedding — is the plain
gradient, and a token's relevance is Σ_d x_d ∂score/∂x_d. Only the nonlinear steps get another
gradient; their values stay exactly the same, so the forward is the model's normal one:

* LayerNorm, RMSNorm (and the cosine targets' normalization): identity rule on the division by the
  standard deviation — a constant to the gradient;
* activations (GELU, QuickGELU, SiLU, ReLU): identity rule, gradient f(x)/x;
* the products of attention (q kᵀ and A v) and a gated unit's act(a)·b: uniform rule, half the
  relevance to each factor (q and k get a quarter of their gradient, v half);
* softmax: its plain gradient, which is the paper's rule R_x = x ⊙ (R_s − s Σ R_s) in this form.

What is not conserved: biases, position embeddings and the prefix tokens keep relevance of their
own, and the softmax rule absorbs some (a uniform map passes none to its scores); CP-LRP loses
nothing in the attention. LRP is a patented technology; as the authors' ``lxt`` project states it,
its use is free of charge for personal and scientific purposes (docs/methods.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.autograd import Function

from ..layers.attention import Attention
from ..layers.block import AttentionBranch, Block, BranchesBlock, DropPath, MlpBranch
from ..layers.diff_attention import DiffAttention
from ..layers.mlp import Mlp, QuickGELU
from ..layers.norm import LayerScale
from ..layers.patch import PatchEmbed
from ..layers.pool import AttentionPool
from ..model import TokenLayout, VisionTransformer, eval_mode
from .relevance import attention_gradients, gae_from
from .scores import norms_as_constants
from .targets import Target, target_scores

RULES = ("attnlrp", "cp")
_ACTIVATIONS = (nn.GELU, QuickGELU, nn.SiLU, nn.ReLU)
_NORMS = (nn.LayerNorm, nn.RMSNorm)
# modules whose every step is linear (or a container of modules with rules): the plain gradient is their ε-rule
_LINEAR = (nn.Linear, nn.Conv2d, nn.Identity, nn.Dropout, nn.ModuleList, nn.Sequential, DropPath, LayerScale)
_CONTAINERS = (
    VisionTransformer, Block, BranchesBlock, AttentionBranch, MlpBranch, PatchEmbed, Attention, DiffAttention,
    AttentionPool, Mlp,
)  # fmt: skip
_ATTENTIONS = (Attention, DiffAttention, AttentionPool)


class _ScaledGradient(Function):
    """The same tensor, its gradient multiplied by ``factor`` (the uniform rule's share)."""

    @staticmethod
    def forward(ctx, x: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None


class _IdentityRule(Function):
    """An activation's output, with gradient f(x)/x: the relevance of its output passes to its input unchanged."""

    @staticmethod
    def forward(ctx, x: Tensor, out: Tensor) -> Tensor:
        ctx.save_for_backward(torch.where(x == 0, torch.zeros_like(out), out / x))
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None


class _NormRule(Function):
    """A norm's output, with the gradient it has when its standard deviation (RMS) is a constant."""

    @staticmethod
    def forward(ctx, x: Tensor, out: Tensor, weight: Tensor | None, eps: float, centred: bool) -> Tensor:
        xf = _wide(x)
        centre = xf - xf.mean(dim=-1, keepdim=True) if centred else xf
        ctx.save_for_backward((centre.square().mean(dim=-1, keepdim=True) + eps).rsqrt(), weight)
        ctx.centred = centred
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None, None]:
        inverse_std, weight = ctx.saved_tensors
        g = _wide(grad) if weight is None else _wide(grad) * weight
        if ctx.centred:
            g = g - g.mean(dim=-1, keepdim=True)
        return (g * inverse_std).to(grad.dtype), None, None, None, None


def scale_gradient(x: Tensor, factor: float) -> Tensor:
    return _ScaledGradient.apply(x, factor)


def _attnlrp_attention(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    # softmax(q kᵀ) v: half of the output's relevance to A (then half of that to q and to k), half to v
    return scale_gradient(q, 0.25), scale_gradient(k, 0.25), scale_gradient(v, 0.5)


def _cp_attention(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return q.detach(), k.detach(), v


def _attnlrp_gate(gate: Tensor, value: Tensor) -> Tensor:
    return scale_gradient(gate * value, 0.5)


def _cp_gate(gate: Tensor, value: Tensor) -> Tensor:
    return gate.detach() * value


def _activation_hook(module: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> Tensor:
    return _IdentityRule.apply(inputs[0], out.detach())


def _norm_hook(module: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> Tensor:
    x = inputs[0]
    eps = module.eps if module.eps is not None else torch.finfo(x.dtype).eps
    return _NormRule.apply(x, out.detach(), module.weight, eps, isinstance(module, nn.LayerNorm))


def check_rules(model: nn.Module) -> None:
    """``ValueError`` naming the first module that relevance propagation has no rule for."""
    known = _ACTIVATIONS + _NORMS + _LINEAR + _CONTAINERS
    for name, module in model.named_modules():
        if type(module) not in known:
            raise ValueError(
                f"relevance propagation has no rule for {type(module).__name__} ({name or 'the model'}); "
                "it covers vitlens's own layers (linear maps, LayerNorm, RMSNorm, GELU, QuickGELU, SiLU, ReLU, "
                "attention, differential attention, attention pools, gated MLPs, parallel branches)"
            )


@contextmanager
def relevance_rules(model: nn.Module, rule: str = "attnlrp") -> Iterator[nn.Module]:
    """Within: ``model``'s gradients are those of the LRP ``rule`` (``'attnlrp'`` or ``'cp'``); the values
    are unchanged. Gradient x input of any tensor is then its relevance."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    check_rules(model)
    attention_rule = _attnlrp_attention if rule == "attnlrp" else _cp_attention
    gate_rule = _attnlrp_gate if rule == "attnlrp" else _cp_gate
    with ExitStack() as stack:
        for module in model.modules():
            if isinstance(module, _ATTENTIONS):
                module.relevance_rule = attention_rule
                stack.callback(delattr, module, "relevance_rule")
            elif isinstance(module, Mlp):
                module.gate_rule = gate_rule
                stack.callback(delattr, module, "gate_rule")
            elif isinstance(module, _ACTIVATIONS):
                stack.callback(module.register_forward_hook(_activation_hook).remove)
            elif isinstance(module, _NORMS):
                stack.callback(module.register_forward_hook(_norm_hook).remove)
        stack.enter_context(norms_as_constants())
        yield model


@dataclass
class Relevance:
    """What :func:`lrp` finds: the relevance of every token entering each block, and of each attention map.

    ``tokens`` (B, L + 1, N): entry 0 the input tokens (patches embedded, positions added, prefix
    tokens), entry l the output of block l. ``maps`` (with ``maps=True``): each layer's relevance of
    its attention map (B, H, N, N), an attention pool's (B, H, 1, N) last. ``scores`` (B,): what is explained.
    """

    tokens: Tensor
    scores: Tensor
    layout: TokenLayout
    maps: tuple[Tensor, ...] = ()

    def patches(self, layer: int = 0) -> Tensor:
        """The patch tokens' relevance at ``layer`` (0: the input) on the grid: (B, gh, gw)."""
        tokens = self.tokens[:, layer, self.layout.patch_slice]
        return tokens.reshape(len(tokens), *self.layout.grid)


def lrp(
    model: VisionTransformer, images: Tensor, target: Target = None, rule: str = "attnlrp", maps: bool = False
) -> Relevance:
    """One forward and one backward under the ``rule``'s gradients: the relevance of every token at every layer.

    ``target``: what is explained (see :mod:`vitlens.explain.targets`); its score is the relevance
    that enters the model's output. ``maps=True`` also gives each attention map's relevance, A ⊙ half
    the gradient of A (the share the uniform rule gives A in A v).
    """
    layout = model.token_layout(images)
    grid = layout.grid
    with eval_mode(model), torch.enable_grad(), relevance_rules(model, rule):
        x = model.embed(images.to(next(model.parameters()).device))
        if not x.requires_grad:  # frozen weights: the tokens still carry the gradient
            x.requires_grad_()
        tokens, weights = [x], []
        for i in range(len(model.blocks)):
            x, w = model.run_block(i, x, grid, need_weights=maps)
            tokens.append(x)
            weights.append(w)
        out = model.readout(x, need_weights=maps and layout.readout == "pool")
        if out.pool_attention is not None:
            weights.append(out.pool_attention)
        scores, _ = target_scores(out, target)
        wanted = tokens + (weights if maps else [])
        grads = torch.autograd.grad(scores.sum(), wanted, allow_unused=True)
    grads = [torch.zeros_like(w) if g is None else g for w, g in zip(wanted, grads)]
    relevance = torch.stack([_wide(t.detach() * g).sum(dim=-1) for t, g in zip(tokens, grads)], dim=1)
    map_relevance = tuple(_wide(w.detach() * g * 0.5) for w, g in zip(weights, grads[len(tokens) :]))
    return Relevance(relevance, _wide(scores.detach()), layout, map_relevance)


def _wide(x: Tensor) -> Tensor:
    """At least float32 (bf16 and fp16 models), float64 kept."""
    return x if x.dtype == torch.float64 else x.float()


def attnlrp(model: VisionTransformer, images: Tensor, target: Target = None, rule: str = "attnlrp") -> Tensor:
    """AttnLRP relevance of each patch token for ``target`` (default: the predicted class): (B, gh, gw).

    Positive: the patch speaks for the target; negative: against it. ``rule='cp'``: CP-LRP.
    The relevance of every token at every layer: :func:`lrp`.
    """
    return lrp(model, images, target, rule).patches()


def cp_lrp(model: VisionTransformer, images: Tensor, target: Target = None) -> Tensor:
    """CP-LRP: :func:`attnlrp` with the attention maps held constant (relevance through the values only)."""
    return attnlrp(model, images, target, rule="cp")


def transformer_attribution(
    model: VisionTransformer, images: Tensor, target: Target = None, rule: str = "attnlrp"
) -> Tensor:
    """Chefer, Gur & Wolf (CVPR 2021): Ā_l = I + mean_h (∇A_l ⊙ R_{A_l})⁺, rolled out, readout row: (B, gh, gw).

    R_{A_l} is layer l's map relevance by LRP (here the ``rule``'s, AttnLRP by default, where the paper
    used its own choice of rules), started as the paper starts it: relevance 1 for the target
    (the LRP relevance divided by the score's magnitude). ∇A_l is the plain gradient of the score.
    """
    maps, grads, _ = attention_gradients(model, images, target)
    relevance = lrp(model, images, target, rule, maps=True)
    unit = relevance.scores.abs().clamp_min(1e-6)[:, None, None, None]
    return gae_from([r / unit for r in relevance.maps], grads, relevance.layout)
