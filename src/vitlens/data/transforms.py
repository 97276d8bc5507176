"""The pre-processing a model expects, read from its config (size, crop, interpolation, mean/std)."""

from __future__ import annotations

import math
from typing import Any

from ..config import ViTConfig


def transforms_for(model_or_config: Any, train: bool = False):
    """The torchvision transform that turns a PIL image into the tensor this model was made for.

    Evaluation (the default): resize the short side to ``img_size / crop_pct``, centre-crop to
    ``img_size``, scale to [0, 1], normalize with the config's ``image_mean``/``image_std`` —
    timm's and Hugging Face's eval recipe. Grey and RGBA images are converted to the model's
    channel count.
    """
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    config: ViTConfig = getattr(model_or_config, "config", model_or_config)
    h, w = config.img_hw
    interp = InterpolationMode(config.interpolation)
    mode = "L" if config.in_chans == 1 else "RGB"
    steps: list[Any] = [T.Lambda(lambda im: im.convert(mode) if hasattr(im, "convert") else im), T.ToImage()]
    if train:
        steps.append(T.RandomResizedCrop((h, w), interpolation=interp, antialias=True))
        steps.append(T.RandomHorizontalFlip())
    else:
        scale = (math.floor(h / config.crop_pct), math.floor(w / config.crop_pct))
        steps.append(T.Resize(scale if h != w else scale[0], interpolation=interp, antialias=True))
        steps.append(T.CenterCrop((h, w)))
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(config.image_mean, config.image_std)]
    return T.Compose(steps)
