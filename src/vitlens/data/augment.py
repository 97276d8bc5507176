"""Training augmentation built from ``torchvision.transforms.v2``, and batch mixing.

The training pipeline is the evaluation transform's geometry and normalization with the
augmentation in between. Per-sample randomness can be made
a pure function of (seed, epoch, index) with :class:`SeededDataset`, which is what keeps a
resumed run and a multi-process run on the same numbers as an uninterrupted single process.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..config import ViTConfig
from .transforms import MatchChannels, geometry, to_normalized_tensor

AUGMENTS = ("none", "affine", "crop-flip", "randaugment", "trivialaugment")


def train_transform(config: ViTConfig, augment: str = "none"):
    """The training pipeline: the evaluation geometry, then ``augment``, then normalization.

    ``augment``: ``'crop-flip'`` padded random crop + horizontal flip (CIFAR recipe), ``'randaugment'``
    and ``'trivialaugment'`` (on uint8 pixels, then crop-flip), ``'none'``. ``'affine'`` is not applied
    here but to whole batches on the training device by :class:`BatchAffine`, which is far cheaper for
    small images. Without augmentation the pipeline is :func:`vitlens.transforms_for`'s.
    """
    from torchvision.transforms import v2 as T

    if augment not in AUGMENTS:
        raise ValueError(f"unknown augmentation {augment!r}; expected one of {AUGMENTS}")
    h, w = config.img_hw
    steps: list[Any] = [MatchChannels(config.in_chans), *geometry(config)]
    if augment in ("randaugment", "trivialaugment"):  # the policies operate on uint8 images
        steps += [T.ToImage(), T.ToDtype(torch.uint8, scale=True)]
        steps.append(T.RandAugment() if augment == "randaugment" else T.TrivialAugmentWide())
    if augment in ("crop-flip", "randaugment", "trivialaugment"):
        steps += [T.RandomCrop((h, w), padding=max(1, h // 8), padding_mode="reflect"), T.RandomHorizontalFlip()]
    return T.Compose(steps + to_normalized_tensor(config))


def batch_mixer(num_classes: int, mixup: float = 0.0, cutmix: float = 0.0):
    """MixUp and/or CutMix (v2) applied to a whole batch, or ``None`` when both are off."""
    from torchvision.transforms import v2 as T

    mixers = []
    if mixup > 0:
        mixers.append(T.MixUp(alpha=mixup, num_classes=num_classes))
    if cutmix > 0:
        mixers.append(T.CutMix(alpha=cutmix, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else T.RandomChoice(mixers)


def index_generators_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index``'s random draws in ``epoch``."""
    return (seed * 1_000_003 + epoch) * 10_000_019 + index


class BatchAffine:
    """Random rotation, shift and scale per image, applied to a whole batch with one ``grid_sample``.

    Each image's parameters are row ``index`` of a table drawn from (seed, epoch), like the
    per-sample transforms, so a batch is augmented the same whichever process or run step
    handles it. Pixels moved in from outside are filled with ``fill`` (the normalized background).
    """

    def __init__(
        self,
        num_samples: int,
        degrees: float = 10.0,
        translate: float = 0.1,
        scale: tuple[float, float] = (0.9, 1.1),
        fill: tuple[float, ...] = (0.0,),
        seed: int = 0,
    ) -> None:
        self.num_samples, self.degrees, self.translate, self.scale, self.seed = (
            num_samples,
            degrees,
            translate,
            scale,
            seed,
        )
        self.fill = torch.tensor(fill, dtype=torch.float32).view(1, -1, 1, 1)
        self._table: tuple[int, Tensor] | None = None

    def parameters(self, indices: Tensor, epoch: int) -> Tensor:
        """(B, 4) draws in [0, 1): angle, shift x, shift y, scale."""
        if self._table is None or self._table[0] != epoch:
            g = torch.Generator().manual_seed(index_generators_seed(self.seed, epoch, 0))
            self._table = (epoch, torch.rand(self.num_samples, 4, generator=g))
        return self._table[1][indices]

    def __call__(self, images: Tensor, indices: Tensor, epoch: int) -> Tensor:
        u = self.parameters(indices, epoch).to(images.device, torch.float32)
        angle = (u[:, 0] * 2 - 1) * self.degrees * torch.pi / 180
        shift = (u[:, 1:3] * 2 - 1) * self.translate * 2  # grid coordinates span [-1, 1]: 2 units = the image
        scale = self.scale[0] + u[:, 3] * (self.scale[1] - self.scale[0])
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, -shift[:, 0]], 1), torch.stack([sin, cos, -shift[:, 1]], 1)], 1)
        grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
        fill = self.fill.to(images.device, images.dtype)
        moved = torch.nn.functional.grid_sample(images - fill, grid.to(images.dtype), align_corners=False)
        return moved + fill


class SeededDataset(Dataset):
    """Apply ``transform`` with randomness drawn from (seed, epoch, index) only.

    The global RNG is left as it was, so the data a step sees does not depend on how many
    processes or loader workers there are, nor on whether the run was resumed.
    """

    def __init__(self, base: Dataset, transform, seed: int = 0) -> None:
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0
        self.classes = getattr(base, "classes", None)
        self.targets = getattr(base, "targets", None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.base[index]
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(index_generators_seed(self.seed, self.epoch, index))
            return self.transform(image), int(label)


class CachedDataset(Dataset):
    """A small in-memory data set passed once through a deterministic ``transform`` and kept."""

    def __init__(self, base: Dataset, transform) -> None:
        self.classes = getattr(base, "classes", None)
        items = [base[i] for i in range(len(base))]
        images = [image for image, _ in items]
        if all(isinstance(x, Tensor) for x in images) and len({tuple(x.shape) for x in images}) == 1:
            self.images = transform(torch.stack(images))  # one call for the whole set: same numbers, far faster
        else:
            self.images = torch.stack([transform(image) for image in images])
        self.labels = torch.tensor([int(label) for _, label in items])
        self.targets = self.labels.tolist()

    def set_epoch(self, epoch: int) -> None:
        """Nothing random here; present so that training treats every data set alike."""

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.labels[index])
