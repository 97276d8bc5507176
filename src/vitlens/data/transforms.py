"""The one evaluation transform: a model's own pre-processing, built from its config.

Evaluation, ``vitlens eval``, ``explain`` and ``report`` all feed images through
:func:`transforms_for`; training adds its augmentation around the same geometry
(:func:`vitlens.data.augment.train_transform`). The config fields it reads are filled from each
source library's settings by :mod:`vitlens.checkpoint.preprocessing`.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ..config import ViTConfig


class MatchChannels:
    """Give an image the model's channel count: PIL modes are converted; tensors are repeated/averaged."""

    def __init__(self, channels: int) -> None:
        if channels not in (1, 3):
            raise ValueError(f"images can be converted to 1 or 3 channels, the model wants {channels}")
        self.channels = channels

    def __call__(self, image: Any) -> Any:
        if hasattr(image, "convert"):  # PIL: grey, palette, RGBA, CMYK ... -> L or RGB
            mode = "L" if self.channels == 1 else "RGB"
            return image if image.mode == mode else image.convert(mode)
        if not isinstance(image, Tensor) or image.dim() not in (3, 4):
            raise ValueError(f"expected a PIL image or a (C, H, W) / (B, C, H, W) tensor, got {type(image).__name__}")
        c = image.shape[-3]
        if c == self.channels:
            return image
        if c == 4:  # RGBA tensor: drop alpha first
            image, c = image[..., :3, :, :], 3
        if c == 1 and self.channels == 3:
            return image.expand(*image.shape[:-3], 3, *image.shape[-2:])
        if c == 3 and self.channels == 1:
            return image.float().mean(dim=-3, keepdim=True).to(image.dtype)
        return image


class ResizeKeepRatio:
    """Resize keeping the aspect ratio so that the image covers ``size`` (or, ``longest``, fits in it).

    timm's rule for non-square targets: the scale is the smaller (larger) of the two side ratios,
    and each side is rounded to the nearest pixel.
    """

    def __init__(self, size: tuple[int, int], interpolation, longest: bool = False) -> None:
        self.size, self.interpolation, self.longest = size, interpolation, longest

    def __call__(self, image: Any) -> Any:
        from torchvision.transforms.v2 import functional as F

        h, w = F.get_size(image)
        ratios = (h / self.size[0], w / self.size[1])
        ratio = max(ratios) if self.longest else min(ratios)
        return F.resize(image, [round(h / ratio), round(w / ratio)], self.interpolation, antialias=True)


class CenterCrop:
    """Cut ``size`` from the middle, padding with ``fill`` where the image is smaller.

    ``rounding='round'`` places an odd margin as torchvision does (round half to even);
    ``'floor'`` as Hugging Face's processors do (the extra pixel goes to the bottom/right).
    """

    def __init__(self, size: tuple[int, int], rounding: str = "round", fill: tuple[float, ...] = (0.0,)) -> None:
        self.size, self.rounding, self.fill = size, rounding, fill

    def __call__(self, image: Any) -> Any:
        from torchvision.transforms.v2 import functional as F

        (h, w), (ch, cw) = F.get_size(image), self.size
        if ch > h or cw > w:  # pad to at least the crop size, the image centred (timm's CenterCropOrPad)
            dh, dw = max(ch - h, 0), max(cw - w, 0)
            fill = self._fill(image)
            image = F.pad(image, [dw // 2, dh // 2, (dw + 1) // 2, (dh + 1) // 2], fill=fill)
            h, w = F.get_size(image)
        if self.rounding == "floor":
            top, left = (h - ch) // 2, (w - cw) // 2
        else:
            top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
        return F.crop(image, top, left, ch, cw)

    def _fill(self, image: Any) -> list[float]:
        """The pad colour in the image's own scale: 0-255 for PIL and integer tensors, 0-1 for floats."""
        eight_bit = not isinstance(image, Tensor) or not image.is_floating_point()
        return [round(255 * v) if eight_bit else round(255 * v) / 255 for v in self.fill]


def geometry(config: ViTConfig) -> list[Any]:
    """Resize and crop to ``img_size`` by ``crop_pct`` / ``crop_mode`` / ``crop_rounding`` (timm's rules).

    ``center``: short side to ``img_size / crop_pct``, centre crop; ``squash``: both sides to it,
    centre crop; ``border``: long side to it, centre crop padded with the mean colour.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    c = config
    h, w = c.img_hw
    scaled = (math.floor(h / c.crop_pct), math.floor(w / c.crop_pct))
    interp = InterpolationMode(c.interpolation)
    crop = CenterCrop((h, w), c.crop_rounding)
    if c.crop_mode == "squash":
        return [T.Resize(scaled, interpolation=interp, antialias=True), crop]
    if c.crop_mode == "border":
        fill = tuple(c.image_mean[: c.in_chans])
        return [ResizeKeepRatio(scaled, interp, longest=True), CenterCrop((h, w), c.crop_rounding, fill)]
    if scaled[0] == scaled[1]:  # the short side to the scaled size
        return [T.Resize(scaled[0], interpolation=interp, antialias=True), crop]
    return [ResizeKeepRatio(scaled, interp), crop]


def to_normalized_tensor(config: ViTConfig) -> list[Any]:
    """Image -> float tensor in [0, 1] -> normalized with the config's mean and std."""
    import torch
    from torchvision.transforms import v2 as T

    c = config
    mean, std = c.image_mean[: c.in_chans], c.image_std[: c.in_chans]
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]


def transforms_for(model_or_config: Any):
    """The torchvision transform that turns an image into the tensor this model was made for.

    Channels to the model's count (grey, palette, RGBA are converted), then :func:`geometry`
    (PIL images are resized by PIL before they become tensors, as timm and Hugging Face do, so
    the pixels match theirs), then [0, 1] floats normalized with ``image_mean``/``image_std``.
    Takes PIL images and (C, H, W) or (B, C, H, W) tensors (uint8, or floats in [0, 1]).
    """
    from torchvision.transforms import v2 as T

    config: ViTConfig = getattr(model_or_config, "config", model_or_config)
    return T.Compose([MatchChannels(config.in_chans), *geometry(config), *to_normalized_tensor(config)])
