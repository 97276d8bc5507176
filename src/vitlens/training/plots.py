"""Pictures of a training run: learning curves from the metrics JSONL, and a confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..viz.plot import pyplot, save_figure


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_curves(metrics_path: str | Path, path: str | Path) -> Path:
    """Loss (per logged step and per epoch) and validation accuracy per epoch, side by side."""
    plt = pyplot()
    records = read_metrics(metrics_path)
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    if steps:
        ax_loss.plot(
            [r["epoch_float"] for r in steps], [r["loss"] for r in steps], lw=0.8, alpha=0.5, label="train loss (steps)"
        )
    if epochs:
        x = [r["epoch"] for r in epochs]
        ax_loss.plot(x, [r["train_loss"] for r in epochs], "o-", ms=3, label="train loss")
        ax_loss.plot(x, [r["val_loss"] for r in epochs], "o-", ms=3, label="val loss")
        ax_acc.plot(x, [100 * r["train_acc"] for r in epochs], "o-", ms=3, label="train")
        ax_acc.plot(x, [100 * r["val_top1"] for r in epochs], "o-", ms=3, label="val top-1")
        best = max(epochs, key=lambda r: r["val_top1"])
        ax_acc.set_title(f"best val top-1 {best['val_top1']:.2%} (epoch {best['epoch']})", fontsize=10)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=8)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion(confusion: torch.Tensor, classes: list[str], path: str | Path, title: str | None = None) -> Path:
    """Row-normalized confusion matrix (true class down, predicted across) with the counts written in."""
    plt = pyplot()
    counts = torch.as_tensor(confusion).double()
    rates = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    n = len(classes)
    size = min(14.0, max(4.0, 0.45 * n))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90 if n > 10 else 0, fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    color = "white" if rates[i, j] > 0.5 else "black"
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
