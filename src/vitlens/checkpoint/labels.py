"""Class names of pretrained heads, as each library stores them, turned into readable labels.

Pictures want "tabby, tabby cat", not ``n02123045`` or ``LABEL_281``: timm names ImageNet classes
by WordNet synset (or not at all) and transformers fills ``id2label`` with ``LABEL_i``
placeholders, so synsets become names, a bare ImageNet head gets ImageNet's names, and
placeholders mean "no names".
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

# ImageNet variants timm recognises by their class count (its ``ImageNetInfo`` subsets).
_IMAGENET_SUBSETS = {
    11221: "imagenet-21k-miil",
    11821: "imagenet-12k",
    21841: "imagenet-22k",
    21842: "imagenet-22k-ms",
    21843: "imagenet-21k-goog",
}


@lru_cache(maxsize=1)
def imagenet1k_labels() -> tuple[tuple[str, str], ...]:
    """The 1000 ImageNet-1k classes in classifier order, as (WordNet synset, names) pairs."""
    text = (Path(__file__).parent / "imagenet1k_labels.txt").read_text(encoding="utf-8")
    return tuple(tuple(line.split("\t", 1)) for line in text.splitlines() if line)  # type: ignore[misc]


def imagenet_labels(num_classes: int) -> list[str] | None:
    """Class names for timm's ImageNet heads: 1k from the shipped file, 12k/21k/22k from timm when installed."""
    if num_classes == 1000:
        return [names for _, names in imagenet1k_labels()]
    if num_classes in _IMAGENET_SUBSETS:
        try:
            from timm.data import ImageNetInfo
        except ImportError:
            return None
        return list(ImageNetInfo(_IMAGENET_SUBSETS[num_classes]).label_descriptions())
    return None


def from_timm(config: Mapping[str, Any], num_classes: int) -> list[str] | None:
    """Names for a timm head of ``num_classes`` from a Hub ``config.json`` or a ``pretrained_cfg``.

    ``label_names`` (synsets or names; a list, or a dict by index) are described through
    ``label_descriptions`` or the ImageNet-1k synsets; without names an ImageNet-sized head gets
    ImageNet's. ``None`` when nothing names the classes.
    """
    if not num_classes:
        return None
    cfg = config.get("pretrained_cfg") or {}
    names = config.get("label_names") or cfg.get("label_names")
    if not names:
        return imagenet_labels(num_classes)
    if isinstance(names, Mapping):
        names = [names.get(str(i), names.get(i, str(i))) for i in range(num_classes)]
    described = config.get("label_descriptions") or cfg.get("label_descriptions") or {}
    synsets = dict(imagenet1k_labels())
    labels = [str(described.get(n) or synsets.get(n) or n) for n in names]
    return labels if len(labels) == num_classes else None


def from_hf(config: Mapping[str, Any]) -> list[str] | None:
    """Names from a transformers ``id2label`` (keys "0".."n-1"); ``None`` for ``LABEL_i`` placeholders or none."""
    id2label = config.get("id2label") or {}
    try:
        indices = sorted(int(i) for i in id2label)
    except (TypeError, ValueError):
        return None
    if not id2label or indices != list(range(len(id2label))):
        return None
    labels = [str(id2label[str(i)] if str(i) in id2label else id2label[i]) for i in range(len(id2label))]
    return None if labels == [f"LABEL_{i}" for i in range(len(labels))] else labels
