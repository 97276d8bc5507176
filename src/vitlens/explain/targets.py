"""What a gradient-based explanation explains: the score of a class per image, or any score.

``target`` is ``None`` (each image's predicted class), a class index for every image, one index
per image (a sequence or a (B,) tensor), or a callable ``score(out) -> Tensor (B,)`` on the
model's :class:`~vitlens.ViTOutput`. Images do not interact in a ViT, so the gradient of the
summed scores with respect to image b's maps is image b's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Union

import torch
from torch import Tensor

from ..model import ViTOutput

Target = Union[None, int, Sequence[int], Tensor, Callable[[ViTOutput], Tensor]]


def _class_indices(target: int | Sequence[int] | Tensor, batch: int, num_classes: int) -> Tensor:
    """``target`` as (B,) class indices; ``ValueError`` for anything that is not an integer class the model has."""
    if isinstance(target, bool) or (isinstance(target, Tensor) and target.dtype == torch.bool):
        raise ValueError(f"target must be a class index (int), not a bool: got {target!r}")
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex():
            raise ValueError(f"target class indices must be integers, got a {target.dtype} tensor")
        indices = target.long().flatten() if target.dim() else target.long().expand(batch)
    elif isinstance(target, int):
        indices = torch.full((batch,), target, dtype=torch.long)
    elif isinstance(target, Sequence) and not isinstance(target, (str, bytes)):
        bad = [t for t in target if isinstance(t, bool) or not isinstance(t, int)]
        if bad:
            raise ValueError(f"target class indices must be ints, got {bad[0]!r} in {list(target)!r}")
        indices = torch.tensor(list(target), dtype=torch.long)
    else:
        raise ValueError(
            "target must be None, a class index, one class index per image or a callable score(out) -> (B,); "
            f"got {target!r}"
        )
    if indices.shape != (batch,):
        raise ValueError(
            f"target gives {indices.numel()} class index(es) for a batch of {batch} image(s): "
            "pass one index per image, or one for all"
        )
    if num_classes == 0:
        raise ValueError("a class target needs a classifier, and this model has none (num_classes=0)")
    outside = [int(i) for i in indices if not 0 <= int(i) < num_classes]
    if outside:
        raise ValueError(
            f"target class {outside[0]} does not exist: the model has {num_classes} classes (0..{num_classes - 1})"
        )
    return indices


def check_target(target: Target, num_classes: int) -> None:
    """Fail early (before any work) on a class target the model cannot have; callables are checked when called."""
    if target is None or callable(target):
        return
    batch = 1 if isinstance(target, int) or (isinstance(target, Tensor) and target.dim() == 0) else len(target)
    _class_indices(target, batch, num_classes)


def target_scores(out: ViTOutput, target: Target) -> tuple[Tensor, Tensor | None]:
    """Each image's score (B,) to differentiate, and the class index per image (None for a callable target)."""
    logits = out.logits
    batch = logits.shape[0]
    if callable(target) and not isinstance(target, Tensor):
        scores = target(out)
        if not isinstance(scores, Tensor) or scores.shape != (batch,):
            shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ValueError(f"a target callable must return one score per image, shape ({batch},); got {shape}")
        return scores, None
    if target is None:
        if logits.shape[-1] == 0:
            raise ValueError("this model has no classifier (num_classes=0): give a callable target score(out)")
        indices = logits.argmax(dim=-1)
    else:
        indices = _class_indices(target, batch, logits.shape[-1]).to(logits.device)
    return logits.gather(1, indices[:, None])[:, 0], indices
