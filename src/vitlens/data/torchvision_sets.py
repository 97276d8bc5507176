"""Standard image sets through torchvision: downloaded when a network is there, else a clear message."""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset

# name -> (torchvision class name, folder torchvision looks for under the root)
TORCHVISION_SETS = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
    "cifar100": ("CIFAR100", "cifar-100-python"),
    "mnist": ("MNIST", "MNIST/raw"),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw"),
}


def default_data_root() -> Path:
    """``$VITLENS_DATA``, else ``~/.cache/vitlens/datasets``."""
    return Path(os.environ.get("VITLENS_DATA", Path.home() / ".cache" / "vitlens" / "datasets"))


def torchvision_set(name: str, split: str, root: str | Path | None = None) -> Dataset:
    """The torchvision data set ``name`` (train or test split), from ``root`` or downloaded into it."""
    import torchvision.datasets as tvd

    if name not in TORCHVISION_SETS:
        raise ValueError(f"unknown torchvision data set {name!r}; expected one of {sorted(TORCHVISION_SETS)}")
    cls_name, folder = TORCHVISION_SETS[name]
    cls = getattr(tvd, cls_name)
    root = Path(root) if root is not None else default_data_root()
    train = split == "train"
    try:
        return cls(str(root), train=train, download=False)
    except RuntimeError:
        pass  # not there yet: try to download
    try:
        return cls(str(root), train=train, download=True)
    except Exception as e:
        raise RuntimeError(
            f"{name} is not in {root / folder} and could not be downloaded ({type(e).__name__}: {e}). "
            f"Put the files torchvision's {cls_name} expects into {root / folder} (download them on a "
            f'machine with a network, e.g. `python -c "import torchvision; torchvision.datasets.{cls_name}'
            f"('{root}', download=True)\"`), or point --data-root / $VITLENS_DATA at a folder that has them."
        ) from e


def fake_set(split: str, num_classes: int = 10, image_size: tuple[int, int, int] = (3, 32, 32)) -> Dataset:
    """torchvision's ``FakeData``: random images that are the same on every call (tests, smoke runs)."""
    import torchvision.datasets as tvd

    size, offset = (256, 0) if split == "train" else (64, 256)
    data = tvd.FakeData(size, image_size, num_classes, random_offset=offset)
    data.classes = [str(i) for i in range(num_classes)]
    return data
