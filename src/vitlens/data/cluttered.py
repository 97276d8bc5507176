"""Cluttered digits: scikit-learn's handwritten digits on a larger canvas, among fragments of others.

A localization task with known answers: each image holds one whole digit (the label) at a
random position, plus small fragments cut from other digits as clutter, placed so that they do
not touch the digit's box. The box (x0, y0, x1, y1), half-open in pixels, is the digit's ink.
Train and test use disjoint source digits (a fixed 75/25 split of the 1,797 in ``load_digits``),
so a test image never shows a digit seen in training.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

SPLITS = ("train", "test")
_SPLIT_SEED = 1234  # fixed: the train/test partition of the source digits never changes


class ClutteredBatch(NamedTuple):
    images: Tensor  # (n, 1, S, S) float32 in [0, 1]
    labels: Tensor  # (n,) int64
    boxes: Tensor  # (n, 4) int64, (x0, y0, x1, y1), half-open pixels


def source_digits(split: str, digit_size: int = 16) -> tuple[Tensor, Tensor]:
    """The split's sklearn digits upsampled to ``digit_size`` pixels: (n, size, size) in [0, 1], labels (n,)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(digits.target))
    cut = int(0.75 * len(order))
    index = order[:cut] if split == "train" else order[cut:]
    small = torch.as_tensor(digits.images[index], dtype=torch.float32)[:, None] / 16.0
    big = torch.nn.functional.interpolate(small, size=(digit_size, digit_size), mode="bilinear", align_corners=False)
    return big[:, 0].clamp(0, 1), torch.as_tensor(digits.target[index], dtype=torch.long)


def make_cluttered_digits(
    n: int,
    canvas_size: int = 32,
    seed: int = 0,
    split: str = "train",
    digit_size: int = 16,
    num_fragments: int = 4,
    fragment_size: int = 6,
) -> ClutteredBatch:
    """``n`` cluttered-digit images of ``canvas_size`` pixels with their labels and ground-truth boxes.

    Each image: one digit of ``split`` (upsampled to ``digit_size``) at a uniform random position,
    and ``num_fragments`` random ``fragment_size`` squares cut from other digits of the same split,
    each placed where it does not overlap the digit's box. Deterministic for a given ``seed``; the
    digits and their places do not depend on ``num_fragments`` (the clutter has its own random stream).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < fragment_size <= digit_size < canvas_size:
        raise ValueError(
            f"need 0 < fragment_size <= digit_size < canvas_size, got {fragment_size}, {digit_size}, {canvas_size}"
        )
    digits, labels = source_digits(split, digit_size)
    rng, clutter_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    pool = digits.numpy()  # numpy: thousands of small copies run several times faster than with tensors
    images = np.zeros((n, canvas_size, canvas_size), dtype=np.float32)
    boxes = np.zeros((n, 4), dtype=np.int64)
    picks = rng.integers(0, len(pool), size=n)
    for i, pick in enumerate(picks):
        y, x = rng.integers(0, canvas_size - digit_size + 1, size=2)
        images[i, y : y + digit_size, x : x + digit_size] = pool[pick]
        bx0, by0, bx1, by1 = _ink_box(pool[pick])
        boxes[i] = box = (x + bx0, y + by0, x + bx1, y + by1)
        for _ in range(num_fragments):
            _place_fragment(images[i], pool, box, clutter_rng, fragment_size, avoid=int(pick))
    return ClutteredBatch(torch.from_numpy(images)[:, None], labels[picks], torch.from_numpy(boxes))


def _ink_box(digit, level: float = 0.1) -> tuple[int, int, int, int]:
    """Half-open bounding box (x0, y0, x1, y1) of the pixels above ``level`` in a (size, size) array."""
    ys, xs = (digit > level).nonzero()
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _place_fragment(canvas, pool, box: tuple, rng, size: int, avoid: int, tries: int = 50) -> None:
    """Paste a ``size`` square cut from another digit where it misses ``box`` (skipped if no room)."""
    s, d = canvas.shape[-1], pool.shape[-1]
    for _ in range(tries):
        fy, fx = rng.integers(0, s - size + 1, size=2)
        if fx < box[2] and fx + size > box[0] and fy < box[3] and fy + size > box[1]:
            continue
        other = int(rng.integers(0, len(pool)))
        if other == avoid:
            continue
        cy, cx = rng.integers(0, d - size + 1, size=2)
        region = canvas[fy : fy + size, fx : fx + size]
        np.maximum(region, pool[other, cy : cy + size, cx : cx + size], out=region)
        return


class ClutteredDigits(Dataset):
    """Cluttered digits as a torch ``Dataset`` of (image (1, S, S) float in [0, 1], label); ``.boxes`` is (n, 4).

    ``split='train'`` and ``'test'`` draw on disjoint source digits; ``seed`` picks the placements.
    ``transform``, when given, is applied to each image tensor (e.g. normalization).
    """

    def __init__(
        self,
        split: str = "train",
        n: int = 10000,
        canvas_size: int = 32,
        seed: int = 0,
        transform=None,
        **kwargs,
    ) -> None:
        data = make_cluttered_digits(n, canvas_size=canvas_size, seed=seed, split=split, **kwargs)
        self.images, self.labels, self.boxes = data.images, data.labels, data.boxes
        self.split, self.transform = split, transform
        self.classes = [str(i) for i in range(10)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])
