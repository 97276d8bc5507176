"""Image folders (one sub-folder per class), checked up front: unreadable files are skipped and named."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from .files import read_image

SHOW_SKIPPED = 5


def _image_extensions() -> tuple[str, ...]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return tuple(IMG_EXTENSIONS)


def read_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image (decoded in full, so truncation is caught), or None.

    The rule every command reads images by (:func:`vitlens.data.files.read_image`): 16-bit and float
    images, whose scale is the user's to choose, are refused like broken files.
    """
    try:
        read_image(path).close()
    except ValueError as e:
        return str(e)
    return None


def held_out_flags(files: list[tuple[Path, int]], fraction: float) -> list[bool]:
    """Every ``round(1/fraction)``-th file of each class (in sorted order) goes to validation."""
    counts = Counter(label for _, label in files)
    seen: Counter = Counter()
    step = max(2, round(1 / fraction))
    flags = []
    for _, label in files:
        flags.append(counts[label] >= 2 and seen[label] % step == step - 1)
        seen[label] += 1
    return flags


def _class_dirs(root: Path, exclude: tuple[str, ...] = ()) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in exclude)


def _layout(root: Path, split: str) -> tuple[Path, tuple[str, ...]]:
    """The folder holding ``split``'s class folders, and folder names that are not classes.

    Two layouts: ``root/train/<class>`` + ``root/val/<class>``, or ``root/<class>`` with an
    optional ``root/val/<class>``.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist (expected {root}/<class name>/<images>)")
    if (root / "train").is_dir():
        return (root / "train" if split == "train" else root / "val"), ()
    return (root if split == "train" else root / "val"), ("val",)


class ImageFolderSource(Dataset):
    """Images under ``root/<class>/``; items are (PIL image, label).

    Files that do not decode (not an image, truncated, corrupt) are skipped with a warning that
    counts them and names the first few; ``strict=True`` raises instead. A class folder left with
    no readable image is an error. When no ``val/`` folder exists, a fixed 10% of each class is
    held out for validation (the same files every run).
    """

    def __init__(self, root: str | Path, split: str = "train", strict: bool = False, val_fraction: float = 0.1):
        if split not in ("train", "val"):
            raise ValueError(f"image folders have the splits 'train' and 'val', got {split!r}")
        root = Path(root)
        train_dir, not_classes = _layout(root, "train")
        self.classes = [d.name for d in _class_dirs(train_dir, not_classes)]
        if not self.classes:
            raise ValueError(f"{train_dir} holds no class sub-folders (expected {train_dir}/<class name>/<images>)")
        split_dir, _ = _layout(root, split)
        held_out = split == "val" and not split_dir.is_dir()
        if split == "val" and not held_out:
            extra = sorted({d.name for d in _class_dirs(split_dir)} - set(self.classes))
            if extra:
                raise ValueError(f"{split_dir} has classes that the training folder lacks: {extra}")
        source_dir = train_dir if held_out or split == "train" else split_dir
        has_val_dir = (split_dir if split == "val" else _layout(root, "val")[0]).is_dir()
        files, self.skipped = self._scan(source_dir, strict)
        if split == "train" and not has_val_dir:
            files = [f for f, out in zip(files, held_out_flags(files, val_fraction)) if not out]
        elif held_out:
            files = [f for f, out in zip(files, held_out_flags(files, val_fraction)) if out]
        self.samples: list[tuple[Path, int]] = files
        self.targets = [label for _, label in files]
        self.root, self.split = root, split

    def _scan(self, directory: Path, strict: bool) -> tuple[list[tuple[Path, int]], list[tuple[Path, str]]]:
        extensions = _image_extensions()
        files: list[tuple[Path, int]] = []
        skipped: list[tuple[Path, str]] = []
        empty: list[str] = []
        for label, name in enumerate(self.classes):
            class_dir = directory / name
            paths = (
                sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
                if (class_dir.is_dir())
                else []
            )
            good = 0
            for path in paths:
                problem = "not an image file" if path.suffix.lower() not in extensions else read_problem(path)
                if problem is None:
                    files.append((path, label))
                    good += 1
                else:
                    skipped.append((path, problem))
            if good == 0 and class_dir.is_dir():
                empty.append(name)
        if skipped and strict:
            first = "; ".join(f"{p} ({why})" for p, why in skipped[:SHOW_SKIPPED])
            raise ValueError(f"{len(skipped)} unreadable file(s) under {directory} (strict mode): {first}")
        if empty:
            raise ValueError(
                f"class folder(s) with no readable image under {directory}: {', '.join(empty)}; "
                "add images or remove the folder(s)"
            )
        if skipped:
            names = ", ".join(str(p.relative_to(directory)) for p, _ in skipped[:SHOW_SKIPPED])
            more = f" and {len(skipped) - SHOW_SKIPPED} more" if len(skipped) > SHOW_SKIPPED else ""
            warnings.warn(
                f"skipped {len(skipped)} unreadable file(s) under {directory}: {names}{more} (use strict to fail)",
                stacklevel=3,
            )
        return files, skipped

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        return read_image(path), label
