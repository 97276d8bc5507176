"""scikit-learn's bundled handwritten digits (1,797 grey 8x8 images) with a fixed stratified split."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits_tensors(split: str) -> tuple[Tensor, Tensor]:
    """Images (N, 1, 8, 8) in [0, 1] and labels (N,) of the fixed ``'train'`` or ``'test'`` split.

    The split is stratified by class and never changes (seed 0, 20% test: 1,437 / 360 images),
    so accuracies reported anywhere refer to the same 360 test digits.
    """
    if split not in ("train", "test"):
        raise ValueError(f"digits has the splits 'train' and 'test', got {split!r}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    index = torch.arange(len(labels)).numpy()
    train_idx, test_idx = train_test_split(
        index, test_size=TEST_FRACTION, stratify=bunch.target, random_state=SPLIT_SEED
    )
    chosen = torch.as_tensor(train_idx if split == "train" else test_idx)
    return images[chosen], labels[chosen]


class Digits(Dataset):
    """The digits split as a dataset of (image tensor (1, 8, 8) in [0, 1], label)."""

    classes = [str(i) for i in range(10)]
    in_memory = True  # small enough to pre-process once

    def __init__(self, split: str = "train") -> None:
        self.split = split
        self.images, self.labels = load_digits_tensors(split)
        self.targets = self.labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.labels[index])
