"""What one forward pass tells a person: named top predictions, and the picture the model actually
saw (its pre-processed input with mean/std undone)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..model import VisionTransformer


def check_top_k(k: int) -> int:
    """``k`` for :func:`top_predictions`: a positive integer, checked before any work."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top-k must be a whole number >= 1 (how many predictions to list), got {k!r}")
    return k


def check_finite(model: VisionTransformer, images: Tensor, outputs: Any, name: str) -> None:
    """``ValueError`` naming the image and the first part of the model where the numbers stopped being
    finite, when ``outputs`` (tensors, or a nest of them) hold a NaN or an infinity."""
    leaves = [t for t in _tensors(outputs)]
    if all(bool(torch.isfinite(t).all()) for t in leaves):
        return
    where = model.find_non_finite(images) or "the explanation maps"
    raise ValueError(
        f"{name}: the numbers stopped being finite in {where} (NaN or infinity); nothing is written for it. "
        "Check the weights (a NaN in the checkpoint?) and the config (norm_eps, image_std)."
    )


def _tensors(value: Any):
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


def class_name(model: VisionTransformer, index: int) -> str:
    """The label from the model's config ("tabby cat"), or "class 281" when it has none."""
    labels = model.config.labels
    return str(labels[index]) if labels and index < len(labels) else f"class {index}"


def top_predictions(model: VisionTransformer, logits: Tensor, k: int) -> list[list[dict[str, Any]]]:
    """Per image, the ``k`` most probable classes as ``{'index', 'label', 'prob'}``."""
    if logits.shape[-1] == 0:
        return [[] for _ in range(len(logits))]
    probs = logits.detach().float().softmax(dim=-1)
    values, indices = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return [
        [{"index": int(i), "label": class_name(model, int(i)), "prob": round(float(p), 4)} for p, i in zip(ps, idx)]
        for ps, idx in zip(values.cpu(), indices.cpu())
    ]


def display_image(model: VisionTransformer, image: Tensor) -> np.ndarray:
    """A model-ready (C, H, W) tensor back to an (H, W, 3) uint8 picture, undoing mean/std."""
    c = model.config
    mean = torch.tensor(c.image_mean[: c.in_chans]).view(-1, 1, 1)
    std = torch.tensor(c.image_std[: c.in_chans]).view(-1, 1, 1)
    pixels = (image.detach().float().cpu() * std + mean).clamp(0, 1)
    if pixels.shape[0] == 1:
        pixels = pixels.expand(3, -1, -1)
    return (pixels[:3].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
