"""``vitlens demo``: train ``vit_digits`` on the bundled digits, evaluate it, and draw where it looks.

Everything lands in one folder (default ``runs/demo``), which the demo replaces on every run:
the checkpoint (``last/``, ``best/``), ``metrics.jsonl``, ``curves.png``, ``confusion.png``,
``eval.json``, attention pictures of a few test digits under ``attention/``, and ``report.html``,
the self-contained attention explorer for four of them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import explain
from ..checkpoint import load
from ..data.sources import build_dataset
from ..training import TrainConfig, TrainResult, train
from ..viz import head_grid, overlay
from ..viz.report import build

NUM_EXAMPLES = 6
REPORT_DIGITS = 4


def train_digits(out: Path, seed: int = 0, epochs: int | None = None) -> TrainResult:
    """The ``vit_digits`` recipe (the :class:`TrainConfig` defaults) on the digits, into ``out``.

    ``out`` is the demo's own folder: a previous demo run there is replaced.
    """
    config = TrainConfig(out=str(out), seed=seed, overwrite=True)
    if epochs is not None:
        config.epochs = epochs
    return train(config)


def first_test_digits(model, count: int) -> tuple[torch.Tensor, list[int]]:
    """The first test image of each digit 0..count-1, pre-processed for ``model``, and the digits."""
    test = build_dataset("digits", "test", model.config)
    picks = [next(i for i, label in enumerate(test.targets) if label == d) for d in range(count)]
    return torch.stack([test[i][0] for i in picks]), [int(test.targets[i]) for i in picks]


def attention_pictures(model_dir: Path, out: Path, count: int = NUM_EXAMPLES) -> list[Path]:
    """Per-head class-token maps of the last layer (and rollout, when available) for ``count`` test digits."""
    model = load(model_dir).eval()
    images, digits = first_test_digits(model, count)
    with torch.no_grad():
        result = model(images, return_attention=[-1])
    layout = model.token_layout(images)
    maps = result.attentions[-1][:, :, layout.class_index, layout.patch_slice].reshape(len(digits), -1, *layout.grid)
    predicted = result.logits.argmax(1).tolist()
    written = []
    for k, digit in enumerate(digits):
        title = f"digit {digit} (predicted {predicted[k]}): class-token attention, last layer"
        written.append(out / f"heads_digit{digit}.png")
        head_grid(maps[k], images[k], path=written[-1], title=title)
    return written + _rollout_pictures(model, images, digits, out)


def _rollout_pictures(model, images: torch.Tensor, labels: list[int], out: Path) -> list[Path]:
    """Attention rollout of each digit, drawn over it (one PNG per digit)."""
    heat = explain.rollout(model, images)
    written = []
    for image, label, digit_heat in zip(images, labels, heat):
        written.append(out / f"rollout_digit{label}.png")
        overlay(image, digit_heat, size=128).save(written[-1])
    return written


def explorer(model_dir: Path, path: Path, count: int = REPORT_DIGITS) -> Path:
    """The self-contained HTML attention explorer (every layer and head) for ``count`` test digits."""
    model = load(model_dir).eval()
    images, digits = first_test_digits(model, count)
    return build(model, images, path, names=[f"digit {d}" for d in digits])


def run_demo(out: Path, seed: int = 0, epochs: int | None = None) -> TrainResult:
    """Train, evaluate (curves, confusion matrix, eval.json) and draw attention, all into ``out``."""
    result = train_digits(out, seed, epochs)
    pictures = attention_pictures(out / "last", out / "attention")
    print(f"test accuracy {result.last.top1:.2%} (best epoch {result.best_top1:.2%}) after {result.seconds:.0f} s")
    print(f"wrote {out}: last/, best/, curves.png, confusion.png, eval.json and {len(pictures)} attention pictures")
    report = explorer(out / "last", out / "report.html")
    print(f"wrote {report}: open it in a browser to explore every layer and head")
    return result
