"""``TrainConfig``: every knob of one training run, with the help text ``vitlens train`` shows for it.

The command line is generated from these fields (``--batch-size`` is ``batch_size``), so a new
field is a new flag with its default and its help, and the two never disagree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..data.augment import AUGMENTS

AMP_MODES = ("auto", "bf16", "none")


def option(default: Any, help: str, **cli: Any) -> Any:
    """A field with its command-line help; ``cli`` may add ``choices``, ``flag``, ``metavar``."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"help": help, **cli})
    return field(default=default, metadata={"help": help, **cli})


@dataclass
class TrainConfig:
    """One training run. The defaults are the ``vit_digits`` recipe on the bundled digits (see the preset)."""

    model: str = option("vit_digits", "preset name (vitlens.list_models())")
    model_overrides: dict[str, Any] = option(
        {}, "override a model config field, e.g. --set depth=6 (repeatable)", flag="--set", metavar="NAME=VALUE"
    )
    data: str = option(
        "digits", "digits, cluttered-digits, imagefolder:PATH, cifar10, cifar100, mnist, fashion-mnist, fake"
    )
    data_root: str | None = option(
        None, "where torchvision data sets live (default: $VITLENS_DATA or ~/.cache/vitlens/datasets)"
    )
    strict: bool = option(False, "fail on unreadable image files instead of skipping them")
    out: str = option("runs/train", "run folder")
    epochs: int = option(45, "passes over the training set")
    batch_size: int = option(32, "global batch, split over the processes (results do not depend on their number)")
    lr: float = option(2e-3, "peak AdamW learning rate")
    min_lr: float = option(1e-5, "learning rate at the end of the cosine decay")
    weight_decay: float = option(0.05, "AdamW weight decay (not on biases, norms, tokens, positions)")
    warmup_epochs: float = option(2.0, "linear warm-up, at most a fifth of the run")
    clip_grad: float = option(1.0, "max gradient norm, 0 = off")
    label_smoothing: float = option(0.1, "label smoothing of the cross-entropy")
    augment: str = option("affine", "training augmentation", choices=AUGMENTS)
    mixup: float = option(0.0, "MixUp alpha, 0 = off")
    cutmix: float = option(0.0, "CutMix alpha, 0 = off")
    ema: float = option(0.0, "EMA decay per step (e.g. 0.999), 0 = off")
    amp: str = option("auto", "bf16 autocast; auto = on CUDA only", choices=AMP_MODES)
    compile: bool = option(False, "torch.compile the training forward (worth it on GPUs)")
    seed: int = option(0, "seed of the weights, the data order and the augmentation")
    workers: int = option(0, "data-loader worker processes")
    device: str = option("auto", "auto (CUDA when present), cpu, cuda, cuda:1 ...")
    log_every: int = option(10, "steps between metrics.jsonl loss lines")
    overwrite: bool = option(False, "replace a run already in --out")
    progress: bool | None = option(None, "progress bars (default: on a terminal only)")

    def validate(self) -> None:
        """``ValueError`` naming the field, what it takes and what came."""
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {self.augment!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema is a decay in [0, 1), got {self.ema}")
        if self.lr <= 0 or self.min_lr < 0:
            raise ValueError(f"lr must be > 0 and min_lr >= 0, got {self.lr} and {self.min_lr}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {unknown}")
        return cls(**d)
