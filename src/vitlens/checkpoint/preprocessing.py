"""The one pre-processing rule: each library's image settings as ViTConfig fields, and back.

A model sees the pixels it was trained on only if it is fed through its own library's recipe.
That recipe lives in the config fields ``image_mean``, ``image_std``, ``interpolation``,
``crop_pct``, ``crop_mode`` and ``crop_rounding`` (see :class:`vitlens.ViTConfig`), and
:func:`vitlens.transforms_for` turns them into the transform. This module is the only place that
reads and writes other libraries' spellings of them:

* timm's ``pretrained_cfg`` (on a live model, or in a Hub ``config.json``): ``mean``, ``std``,
  ``interpolation``, ``crop_pct``, ``crop_mode``, with timm's defaults for what is missing;
* Hugging Face's ``preprocessor_config.json`` (or a live image processor): ``size`` and
  ``crop_size``, ``resample`` (a PIL code), ``image_mean``/``image_std``, ``do_normalize``,
  ConvNeXt's ``crop_pct``; its processors floor the centre crop's offset where torchvision
  rounds it, so a Hugging Face recipe gets ``crop_rounding='floor'``;
* OpenCLIP's ``preprocess_cfg``: ``mean``, ``std``, ``interpolation`` and ``resize_mode``
  (``shortest``: short side to the size and a centre crop; ``squash``: straight to the size).

vitlens's own ``config.json`` already holds the fields and needs no translation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

from ..config import IMAGENET_MEAN, IMAGENET_STD, ViTConfig

# The fields a recipe sets; none of them changes the network's numbers.
FIELDS = ("image_mean", "image_std", "interpolation", "crop_pct", "crop_mode", "crop_rounding")

# PIL resampling codes, as Hugging Face's ``resample`` stores them -> torchvision interpolation names.
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
RESAMPLE_CODE = {name: code for code, name in PIL_RESAMPLE.items()}

# timm's defaults (timm.data.resolve_data_config) for a pretrained_cfg that leaves a key out.
TIMM_DEFAULTS: dict[str, Any] = dict(
    image_mean=IMAGENET_MEAN,
    image_std=IMAGENET_STD,
    interpolation="bicubic",
    crop_pct=0.875,
    crop_mode="center",
    crop_rounding="round",
)

# What transformers' ViTImageProcessor does when a folder has no preprocessor_config.json:
# resize straight to the model's size, bilinear, mean = std = 0.5.
HF_VIT_DEFAULTS: dict[str, Any] = dict(
    image_mean=(0.5, 0.5, 0.5),
    image_std=(0.5, 0.5, 0.5),
    interpolation="bilinear",
    crop_pct=1.0,
    crop_mode="squash",
    crop_rounding="floor",
)


# ---------------------------------------------------------------------------------------------- timm
def from_timm(pretrained_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Config fields from timm's ``pretrained_cfg``: what ``timm.data.resolve_data_config`` would use."""
    cfg = pretrained_cfg or {}
    fields = dict(TIMM_DEFAULTS)
    if cfg.get("mean"):
        fields["image_mean"] = tuple(float(v) for v in cfg["mean"])
    if cfg.get("std"):
        fields["image_std"] = tuple(float(v) for v in cfg["std"])
    if cfg.get("interpolation"):
        fields["interpolation"] = str(cfg["interpolation"])
    if cfg.get("crop_pct"):
        fields["crop_pct"] = float(cfg["crop_pct"])
    if cfg.get("crop_mode"):
        fields["crop_mode"] = str(cfg["crop_mode"])
    return fields


def from_open_clip(preprocess_cfg: Mapping[str, Any], where: str = "OpenCLIP preprocess_cfg") -> dict[str, Any]:
    """Config fields from OpenCLIP's ``preprocess_cfg`` (``open_clip.get_model_preprocess_cfg``)."""
    cfg = dict(preprocess_cfg or {})
    mode = cfg.get("resize_mode", "shortest")
    if mode not in ("shortest", "squash"):
        raise ValueError(
            f"{where}: resize_mode={mode!r} pads with fill_color={cfg.get('fill_color', 0)}, which vitlens's "
            "pre-processing cannot say (its 'border' mode pads with the mean colour); 'shortest' and 'squash' are read"
        )
    fields: dict[str, Any] = dict(
        crop_pct=1.0, crop_mode="center" if mode == "shortest" else "squash", crop_rounding="round"
    )
    fields["interpolation"] = str(cfg.get("interpolation", "bicubic"))
    if cfg.get("mean"):
        fields["image_mean"] = tuple(float(v) for v in cfg["mean"])
    if cfg.get("std"):
        fields["image_std"] = tuple(float(v) for v in cfg["std"])
    return fields


def to_timm(config: ViTConfig) -> dict[str, Any]:
    """The ``pretrained_cfg`` entries that make timm's ``create_transform`` prepare images as ``config`` says."""
    c = config
    return {
        "input_size": [c.in_chans, *c.img_hw],
        "interpolation": c.interpolation,
        "crop_pct": c.crop_pct,
        "crop_mode": c.crop_mode,
        "mean": list(c.image_mean),
        "std": list(c.image_std),
    }


# ------------------------------------------------------------------------------------- Hugging Face
def _size(value: Any) -> dict[str, int]:
    """A processor's ``size`` / ``crop_size`` as a dict: an int means a square."""
    if isinstance(value, int):
        return {"height": value, "width": value}
    return {k: int(v) for k, v in (value or {}).items() if v is not None}


def _crop_pct(crop: int, resized: int) -> float:
    """``crop_pct`` such that ``floor(crop / crop_pct) == resized`` holds in floating point."""
    pct = crop / resized
    while math.floor(crop / pct) < resized:  # crop / (crop / resized) can land a hair below `resized`
        pct = math.nextafter(pct, 0.0)
    return pct


def from_hf(processor: Mapping[str, Any] | None, where: str = "preprocessor_config.json") -> dict[str, Any]:
    """Config fields from a Hugging Face image-processor config; ``input_size`` is the size it outputs.

    ``size={"height", "width"}`` resizes straight to that size (``crop_mode='squash'``), then
    ``crop_size`` is cut from the centre when ``do_center_crop``; ``size={"shortest_edge": s}``
    resizes the short side to ``s`` and crops (``crop_mode='center'``, ``crop_pct = crop / s``).
    ConvNeXt-style processors (``crop_pct`` beside ``shortest_edge``) resize the short side to
    ``shortest_edge / crop_pct`` and crop ``shortest_edge``. ``None``: transformers' ViT defaults.
    """
    fields = dict(HF_VIT_DEFAULTS)
    if not processor:
        return fields
    p = processor
    if p.get("image_mean"):
        fields["image_mean"] = tuple(float(v) for v in p["image_mean"])
    if p.get("image_std"):
        fields["image_std"] = tuple(float(v) for v in p["image_std"])
    if p.get("do_normalize") is False:
        fields["image_mean"], fields["image_std"] = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if p.get("resample") is not None:
        if p["resample"] not in PIL_RESAMPLE:
            raise ValueError(f"{where}: resample {p['resample']!r} is not a PIL resampling code {sorted(PIL_RESAMPLE)}")
        fields["interpolation"] = PIL_RESAMPLE[p["resample"]]
    size, crop = _size(p.get("size")), _size(p.get("crop_size"))
    do_crop = bool(p.get("do_center_crop")) and bool(crop)
    if p.get("do_resize") is False or not size:
        if do_crop:
            fields.update(crop_mode="center", crop_pct=1.0, input_size=(crop["height"], crop["width"]))
        return fields
    if "shortest_edge" in size and p.get("crop_pct") and not do_crop:  # ConvNeXt's rule
        s, pct = size["shortest_edge"], float(p["crop_pct"])
        if s < 384:
            fields.update(crop_mode="center", crop_pct=pct, input_size=(s, s))
        else:
            fields.update(crop_mode="squash", crop_pct=1.0, input_size=(s, s))
    elif "shortest_edge" in size:
        s = size["shortest_edge"]
        if do_crop:
            if crop["height"] != crop["width"]:
                raise ValueError(f"{where}: a centre crop {crop} after a shortest-edge resize must be square")
            fields.update(crop_mode="center", crop_pct=_crop_pct(crop["height"], s))
            fields["input_size"] = (crop["height"], crop["width"])
        else:  # the short side is s; with no crop the output is not square, which a ViT grid cannot take
            fields.update(crop_mode="center", crop_pct=1.0, input_size=(s, s))
            warnings.warn(
                f"{where}: a shortest-edge resize without a crop; vitlens crops the centre {s}x{s}", stacklevel=2
            )
    elif "height" in size and "width" in size:
        h, w = size["height"], size["width"]
        fields.update(crop_mode="squash", crop_pct=1.0, input_size=(h, w))
        if do_crop and (crop["height"], crop["width"]) != (h, w):
            ch, cw = crop["height"], crop["width"]
            pct = _crop_pct(ch, h)
            if math.floor(cw / pct) != w:
                raise ValueError(
                    f"{where}: resize to {h}x{w} then crop {ch}x{cw} keeps different fractions of the two sides, "
                    "which one crop_pct cannot say"
                )
            fields.update(crop_pct=pct, input_size=(ch, cw))
    else:
        raise ValueError(f"{where}: size {p.get('size')!r} has neither 'shortest_edge' nor 'height' and 'width'")
    return fields


def to_hf(config: ViTConfig) -> dict[str, Any]:
    """A ``preprocessor_config.json`` that transformers opens and :func:`from_hf` reads back to ``config``'s recipe.

    A resize straight to the size (``squash``) is transformers' ``ViTImageProcessor`` (with a
    centre crop, its ``DeiTImageProcessor``); a short-side resize and centre crop is its
    ``BitImageProcessor``. timm's ``border`` mode (pad to the aspect ratio) has no processor there.
    """
    c = config
    h, w = c.img_hw
    scaled = (math.floor(h / c.crop_pct), math.floor(w / c.crop_pct))
    common = {
        "do_resize": True,
        "resample": RESAMPLE_CODE.get(c.interpolation, 3),
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(c.image_mean),
        "image_std": list(c.image_std),
    }
    if c.crop_mode == "squash" and scaled == (h, w):
        return {"image_processor_type": "ViTImageProcessor", **common, "size": {"height": h, "width": w}}
    crop = {"do_center_crop": True, "crop_size": {"height": h, "width": w}}
    if c.crop_mode == "squash":
        size = {"height": scaled[0], "width": scaled[1]}
        return {"image_processor_type": "DeiTImageProcessor", **common, "size": size, **crop}
    if c.crop_mode == "center" and h == w:
        size = {"shortest_edge": scaled[0]}
        return {"image_processor_type": "BitImageProcessor", **common, "size": size, **crop, "do_convert_rgb": True}
    raise ValueError(
        f"crop_mode={c.crop_mode!r} at image size {h}x{w} has no Hugging Face image processor "
        "(they resize straight to a size, or the short side of a square crop)"
    )
