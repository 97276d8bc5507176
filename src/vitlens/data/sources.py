"""The data-source registry: ``build_dataset('digits' | 'imagefolder:PATH' | 'cifar10' | ..., split, config)``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from torch.utils.data import Dataset

from ..config import ViTConfig
from .augment import CachedDataset, SeededDataset, train_transform
from .torchvision_sets import TORCHVISION_SETS
from .transforms import transforms_for

BUILTIN_SOURCES = ("digits", "cluttered-digits", "imagefolder:PATH", *TORCHVISION_SETS, "fake")


def _evaluation_split(split: str) -> bool:
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    return split != "train"


def open_source(name: str, split: str, root: str | Path | None = None, strict: bool = False) -> Dataset:
    """The raw data set (items: PIL image or image tensor, label) with a ``classes`` list.

    ``split``: ``'train'``, or ``'val'``/``'test'`` (the same held-out part: each source has one).
    """
    held_out = _evaluation_split(split)
    if name == "digits":
        from .digits import Digits

        return Digits("test" if held_out else "train")
    if name == "cluttered-digits":
        if importlib.util.find_spec("vitlens.data.cluttered") is None:
            raise ValueError("the 'cluttered-digits' source needs vitlens.data.cluttered, which this install lacks")
        from .cluttered import ClutteredDigits

        data = ClutteredDigits("test" if held_out else "train", n=2000 if held_out else 10000)
        data.in_memory = True  # tensors generated up front
        return data
    if name.startswith("imagefolder:"):
        from .folders import ImageFolderSource

        return ImageFolderSource(name.split(":", 1)[1], "val" if held_out else "train", strict=strict)
    if name in TORCHVISION_SETS:
        from .torchvision_sets import torchvision_set

        return torchvision_set(name, "test" if held_out else "train", root)
    if name == "fake":
        from .torchvision_sets import fake_set

        return fake_set("val" if held_out else "train")
    raise ValueError(f"unknown data source {name!r}; expected one of {', '.join(BUILTIN_SOURCES)}")


def build_dataset(
    name: str,
    split: str,
    config: ViTConfig,
    augment: str = "none",
    seed: int = 0,
    root: str | Path | None = None,
    strict: bool = False,
) -> SeededDataset | CachedDataset:
    """``name``'s ``split`` as model-ready (normalized tensor, label) pairs for ``config``.

    Held-out splits go through the model's own evaluation transform (:func:`vitlens.transforms_for`);
    training splits get ``augment`` around it (see :func:`vitlens.data.augment.train_transform`), drawn
    from (seed, epoch, index) so that the data does not depend on process count or resumption.
    Small in-memory sources (digits) whose pipeline has nothing random are transformed once and cached.
    """
    held_out = _evaluation_split(split)
    augment = "none" if held_out else augment
    base = open_source(name, split, root=root, strict=strict)
    transform = transforms_for(config) if held_out else train_transform(config, augment)
    if getattr(base, "in_memory", False) and augment in ("none", "affine"):
        return CachedDataset(base, transform)
    return SeededDataset(base, transform, seed=seed)
