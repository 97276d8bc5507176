"""Accuracy of a classifier on a data set: top-1/top-5, per class, confusion matrix (any world size)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..model import eval_mode
from . import distributed


@dataclass
class EvalResult:
    """Counts summed over every process, and the rates derived from them."""

    top1: float
    top5: float
    loss: float
    count: int
    confusion: torch.Tensor  # (classes, classes): row = true class, column = predicted
    classes: list[str]

    @property
    def per_class(self) -> dict[str, float]:
        """Recall of each class (correct / images of that class); NaN for a class with no images."""
        totals = self.confusion.sum(dim=1).double()
        correct = self.confusion.diagonal().double()
        return {name: float(c / t) if t else float("nan") for name, c, t in zip(self.classes, correct, totals)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "top1": self.top1,
            "top5": self.top5,
            "loss": self.loss,
            "count": self.count,
            "per_class": self.per_class,
            "confusion": self.confusion.tolist(),
            "classes": self.classes,
        }


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CPU or CUDA when asked, else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def shard(dataset: Dataset, world: distributed.World) -> Dataset:
    """This process's share (rank, rank + size, ...): every image is evaluated exactly once."""
    return dataset if world.size == 1 else Subset(dataset, range(world.rank, len(dataset), world.size))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device,
    classes: list[str] | None = None,
    bf16: bool = False,
) -> EvalResult:
    """Run ``model`` over ``loader`` (this process's shard) and sum the counts over all processes."""
    with eval_mode(model):
        confusion, stats = _counts(model, loader, num_classes, device, bf16)
    count = int(stats[2].item())
    if count == 0:
        raise ValueError("the evaluation set is empty")
    return EvalResult(
        top1=float(confusion.diagonal().sum().item() / count),
        top5=float(stats[1].item() / count),
        loss=float(stats[0].item() / count),
        count=count,
        confusion=confusion.cpu(),
        classes=classes or [str(i) for i in range(num_classes)],
    )


def _counts(
    model: nn.Module, loader: DataLoader, num_classes: int, device: torch.device, bf16: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The confusion counts and (loss sum, top-5 hits, count), summed over every process."""
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    stats = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, top-5 hits, count
    k = min(5, num_classes)
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast(device, bf16):
            logits = model(images)
        logits = logits.float()
        stats[0] += F.cross_entropy(logits, labels, reduction="sum").double()
        stats[1] += (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).sum()
        stats[2] += labels.numel()
        confusion += torch.bincount(labels * num_classes + logits.argmax(1), minlength=num_classes**2).view(
            num_classes, num_classes
        )
    distributed.all_reduce_sum(confusion)
    distributed.all_reduce_sum(stats)
    return confusion, stats


def evaluate_checkpoint(
    model_path: str | Path,
    data: str,
    out: str | Path | None = None,
    batch_size: int = 256,
    device: str = "auto",
    data_root: str | None = None,
    strict: bool = False,
    bf16: bool = False,
) -> EvalResult:
    """``vitlens eval``: load any checkpoint ``vitlens.load`` reads, evaluate it on ``data``'s held-out split.

    Writes ``eval.json`` (top-1/top-5, per-class accuracy, confusion counts) and ``confusion.png``
    into ``out`` (default: the checkpoint's folder, or the folder holding the checkpoint file).
    """
    from ..atomic import write_json
    from ..checkpoint import load
    from ..data.sources import build_dataset
    from .plots import plot_confusion

    world = distributed.setup(device)
    model = load(model_path).to(world.device)
    dataset = build_dataset(data, "val", model.config, root=data_root, strict=strict)
    classes = list(dataset.classes or [])
    num_classes = model.config.num_classes
    if classes and len(classes) != num_classes:
        raise ValueError(
            f"the model has {num_classes} output classes but {data!r} has {len(classes)} ({classes[:10]}...)"
        )
    labels = model.config.labels or classes or None
    loader = DataLoader(shard(dataset, world), batch_size=batch_size, shuffle=False)
    result = evaluate(model, loader, num_classes, world.device, classes=labels, bf16=bf16)
    if world.is_main:
        out_dir = (
            Path(out)
            if out is not None
            else (Path(model_path) if Path(model_path).is_dir() else Path(model_path).parent)
        )
        write_json(out_dir / "eval.json", {"model": str(model_path), "data": data, **result.to_dict()})
        title = f"{data}: top-1 {result.top1:.2%}"
        plot_confusion(result.confusion, result.classes, out_dir / "confusion.png", title=title)
    distributed.teardown()
    return result
