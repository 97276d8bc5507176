"""Write a model in any of the four layouts; ``convert`` = ``load`` + ``export`` (the CLI's job)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..model import VisionTransformer
from .files import write_json, write_tensors
from .hf_format import to_hf_config, to_hf_state_dict
from .loading import load
from .timm_format import to_timm_state_dict
from .torchvision_format import to_torchvision_state_dict
from .vitlens_format import CONFIG_NAME, WEIGHTS_NAME, save_pretrained

FORMATS = ("vitlens", "timm", "hf", "torchvision")
_PIL_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


def export(model: VisionTransformer, dst: str | os.PathLike, fmt: str = "vitlens", legacy_hf: bool = False) -> Path:
    """Write ``model`` to ``dst`` in format ``fmt``.

    'vitlens' and 'hf' write a directory (``config.json`` + ``model.safetensors``; 'hf' also a
    ``preprocessor_config.json``); 'timm' and 'torchvision' write one weight file — safetensors,
    or a weights-only pickle when ``dst`` ends in ``.pth``/``.pt``/``.bin``.
    """
    dst = Path(dst)
    if fmt == "vitlens":
        return save_pretrained(model, dst)
    if fmt == "hf":
        c = model.config
        hf_config = to_hf_config(c)
        prefix = "vit." if c.num_classes else ""
        write_tensors(
            dst / WEIGHTS_NAME, to_hf_state_dict(model, legacy=legacy_hf, prefix=prefix), metadata={"format": "pt"}
        )
        write_json(dst / CONFIG_NAME, hf_config)
        write_json(
            dst / "preprocessor_config.json",
            {
                "image_processor_type": "ViTImageProcessor",
                "do_resize": True,
                "size": {"height": c.img_hw[0], "width": c.img_hw[1]},
                "resample": _PIL_RESAMPLE.get(c.interpolation, 3),
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": list(c.image_mean),
                "image_std": list(c.image_std),
            },
        )
        return dst
    if fmt in ("timm", "torchvision"):
        if dst.suffix not in (".safetensors", ".pth", ".pt", ".bin"):
            raise ValueError(f"{fmt} output is one weight file: give DST a .safetensors or .pth name, got {dst}")
        tensors = to_timm_state_dict(model) if fmt == "timm" else to_torchvision_state_dict(model)
        write_tensors(dst, tensors, metadata={"format": "pt"})
        return dst
    raise ValueError(f"unknown output format {fmt!r}; expected one of {FORMATS}")


def convert(
    src: str | os.PathLike, dst: str | os.PathLike, fmt: str = "vitlens", legacy_hf: bool = False, **load_kwargs: Any
) -> Path:
    """Read ``src`` with :func:`vitlens.load` (``load_kwargs`` go there) and write it as ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {FORMATS}")
    return export(load(src, **load_kwargs), dst, fmt, legacy_hf=legacy_hf)
