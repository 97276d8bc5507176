"""The pre-processing a model expects, read from its config (size, crop, interpolation, mean/std)."""

from __future__ import annotations

import math
from typing import Any

from ..config import ViTConfig


def transforms_for(model_or_config: Any, train: bool = False):
    """The torchvision transform that turns a PIL image into the tensor this model was made for.

    Evaluation (the default): resize the short side to ``img_size / crop_pct`` (``crop_mode='squash'``:
    both sides, ignoring the aspect ratio), centre-crop to ``img_size``, scale to [0, 1], normalize
    with the config's ``image_mean``/``image_std`` — timm's and Hugging Face's eval recipe. PIL images
    are resized by PIL before they become tensors, as timm and Hugging Face do, so the pixels match
    theirs. Grey and RGBA images are converted to the model's channel count.
    """
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    config: ViTConfig = getattr(model_or_config, "config", model_or_config)
    h, w = config.img_hw
    interp = InterpolationMode(config.interpolation)
    mode = "L" if config.in_chans == 1 else "RGB"
    to_image = T.ToImage()
    # PIL images stay PIL until cropped (PIL does the resizing); arrays become tensors first.
    steps: list[Any] = [T.Lambda(lambda im: im.convert(mode) if hasattr(im, "convert") else to_image(im))]
    if train:
        steps.append(T.RandomResizedCrop((h, w), interpolation=interp, antialias=True))
        steps.append(T.RandomHorizontalFlip())
    else:
        scale = (math.floor(h / config.crop_pct), math.floor(w / config.crop_pct))
        keep_ratio = h == w and config.crop_mode == "center"
        steps.append(T.Resize(scale[0] if keep_ratio else scale, interpolation=interp, antialias=True))
        steps.append(T.CenterCrop((h, w)))
    steps += [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(config.image_mean, config.image_std)]
    return T.Compose(steps)
