"""Other libraries' attribution methods on vitlens's token layout, each returning (B, gh, gw).

* :func:`gradcam` — Grad-CAM and the CAM methods users ask for (HiResCAM, Grad-CAM++, XGradCAM,
  LayerCAM, EigenCAM) through the ``grad-cam`` package: vitlens supplies the reshape transform from
  the model's :class:`~vitlens.TokenLayout` (any grid, any prefix tokens) and the target layer (the
  input norm of a block, as the package's ViT tutorial uses), so one call works on every layout.
  Maps are at the patch grid, each scaled to [0, 1] by the package.
* :func:`integrated_gradients` — Captum's Integrated Gradients, summed over each patch's pixels.
* :func:`occlusion` — Captum's feature ablation with one feature per patch: how much the score
  drops when that patch is replaced by the baseline.

Targets are those of the other gradient methods (a class, one per image, the prediction, or a
callable ``score(out)``). ``pip install 'vitlens[methods]'`` installs both libraries.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..model import TokenLayout, eval_mode
from .targets import Target, target_scores

CAM_METHODS = {
    "gradcam": "GradCAM",
    "hirescam": "HiResCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
}


def _needs(module: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        message = f"this method runs through {package}: pip install 'vitlens[methods]'"
        raise ModuleNotFoundError(message, name=module.split(".")[0]) from e


class _Scores(nn.Module):
    """images -> (B, K) scores, what the libraries differentiate: the logits, or a callable target's (B, 1)."""

    def __init__(self, model: nn.Module, score: Any = None) -> None:
        super().__init__()
        self.model, self.score = model, score

    def forward(self, images: Tensor) -> Tensor:
        if self.score is None:
            return self.model(images)
        return self.score(self.model(images, return_attention=[]))[:, None]


def _scores_and_classes(model: nn.Module, images: Tensor, target: Target) -> tuple[_Scores, list[int]]:
    """The module the libraries call and the output index each image's target reads."""
    if callable(target) and not isinstance(target, Tensor):
        return _Scores(model, target), [0] * len(images)
    with torch.no_grad():
        out = model(images, return_attention=[])
    _, classes = target_scores(out, target)
    return _Scores(model), [int(c) for c in classes]


def _tokens_to_grid(layout: TokenLayout):
    def reshape(tokens: Tensor) -> Tensor:  # (B, N, D) -> (B, D, gh, gw): the patches only
        patches = tokens[:, layout.patch_slice]
        return patches.reshape(len(tokens), *layout.grid, tokens.shape[-1]).permute(0, 3, 1, 2)

    return reshape


def gradcam(
    model: nn.Module, images: Tensor, target: Target = None, method: str = "gradcam", layer: int = -1
) -> Tensor:
    """A CAM method of the ``grad-cam`` package on the tokens entering block ``layer``: (B, gh, gw) in [0, 1]."""
    if method not in CAM_METHODS:
        raise ValueError(f"method must be one of {', '.join(CAM_METHODS)}, got {method!r}")
    cams = _needs("pytorch_grad_cam", "the grad-cam package")
    targets_module = _needs("pytorch_grad_cam.utils.model_targets", "the grad-cam package")
    layout = model.token_layout(images)
    rows, cols = layout.grid
    base = getattr(cams, CAM_METHODS[method])
    # the package resizes each map to the input; at the patch grid it keeps vitlens's (gh, gw)
    on_grid = type(f"PatchGrid{base.__name__}", (base,), {"get_target_width_height": lambda self, x: (cols, rows)})
    block = model.blocks[layer]
    with eval_mode(model):
        scores, classes = _scores_and_classes(model, images, target)
        with on_grid(
            model=scores, target_layers=[_entry_norm(block)], reshape_transform=_tokens_to_grid(layout)
        ) as cam:
            maps = cam(input_tensor=images, targets=[targets_module.ClassifierOutputTarget(c) for c in classes])
    return torch.as_tensor(maps, dtype=torch.float32).to(images.device)


def _entry_norm(block: nn.Module) -> nn.Module:
    """The norm the tokens entering ``block`` pass first: ``norm1``, or a parallel-branches block's first
    branch's (every branch reads the same tokens, each through a norm of its own)."""
    return block.attns[0].norm if hasattr(block, "attns") else block.norm1


def patch_sums(pixels: Tensor, layout: TokenLayout) -> Tensor:
    """Per-pixel attributions (B, C, H, W) summed over channels and each patch's pixels: (B, gh, gw)."""
    rows, cols = layout.grid
    p = layout.patch_size
    inside = pixels[..., : rows * p, : cols * p].sum(dim=1)
    return inside.reshape(len(pixels), rows, p, cols, p).sum(dim=(2, 4))


def integrated_gradients(
    model: nn.Module, images: Tensor, target: Target = None, steps: int = 32, baseline: float = 0.0
) -> Tensor:
    """Captum's Integrated Gradients from a constant ``baseline`` image, summed per patch: (B, gh, gw)."""
    attr = _needs("captum.attr", "Captum")
    layout = model.token_layout(images)
    with eval_mode(model):
        scores, classes = _scores_and_classes(model, images, target)
        pixels = attr.IntegratedGradients(scores).attribute(
            images,
            baselines=torch.full_like(images, baseline),
            target=classes,
            n_steps=steps,
            internal_batch_size=len(images),
        )
    return patch_sums(pixels.detach(), layout)


def occlusion(model: nn.Module, images: Tensor, target: Target = None, baseline: float = 0.0) -> Tensor:
    """Captum's feature ablation, one feature per patch: the score's drop when a patch is the baseline."""
    attr = _needs("captum.attr", "Captum")
    layout = model.token_layout(images)
    rows, cols = layout.grid
    p = layout.patch_size
    ids = torch.arange(rows * cols, device=images.device).view(rows, cols)
    mask = torch.full(images.shape[-2:], rows * cols, dtype=torch.long, device=images.device)  # beyond the grid
    mask[: rows * p, : cols * p] = ids.repeat_interleave(p, 0).repeat_interleave(p, 1)
    with eval_mode(model), torch.no_grad():
        scores, classes = _scores_and_classes(model, images, target)
        drops = attr.FeatureAblation(scores).attribute(
            images,
            baselines=baseline,
            target=classes,
            feature_mask=mask[None, None],
            perturbations_per_eval=max(1, 64 // len(images)),
        )
    return drops[:, 0, : rows * p : p, : cols * p : p].float()
