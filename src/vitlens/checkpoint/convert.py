"""Write a model in any of the four layouts; ``convert`` = ``load`` + ``export`` (the CLI's job).

Each layout carries the model's pre-processing in its own library's words, so that loading the
result (with vitlens, or with the library itself) prepares images as before: a Hugging Face
folder gets a ``preprocessor_config.json``, a timm folder a ``config.json`` with ``pretrained_cfg``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..atomic import write_json
from ..model import VisionTransformer
from . import preprocessing
from .files import write_tensors
from .hf_export import to_hf_config, to_hf_state_dict
from .loading import PREPROCESSOR_NAME, load
from .timm_format import timm_config, to_timm_state_dict
from .torchvision_format import to_torchvision_state_dict
from .vitlens_format import CONFIG_NAME, WEIGHTS_NAME, save_pretrained

FORMATS = ("vitlens", "timm", "hf", "torchvision")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def export(model: VisionTransformer, dst: str | os.PathLike, fmt: str = "vitlens", legacy_hf: bool = False) -> Path:
    """Write ``model`` to ``dst`` in format ``fmt``.

    'vitlens' and 'hf' write a folder (``config.json`` + ``model.safetensors``; 'hf' also a
    ``preprocessor_config.json``). 'timm' writes one weight file when ``dst`` ends in
    ``.safetensors``/``.pth``/``.pt``/``.bin`` (a pickle for the last three, weights only), else a
    folder in timm's Hub layout (``config.json`` + ``model.safetensors``). 'torchvision' writes one
    weight file. Everything is checked before the first file is written.
    """
    dst = Path(dst)
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {FORMATS}")
    if fmt == "vitlens":
        return save_pretrained(model, dst)
    if fmt == "hf":
        config, processor = to_hf_config(model.config), preprocessing.to_hf(model.config)
        tensors = to_hf_state_dict(model, legacy=legacy_hf)
        write_tensors(dst / WEIGHTS_NAME, tensors, metadata={"format": "pt"})
        write_json(dst / PREPROCESSOR_NAME, processor)
        write_json(dst / CONFIG_NAME, config)
        return dst
    if fmt == "timm" and (dst.is_dir() or not dst.suffix):
        config = timm_config(model.config)
        write_tensors(dst / WEIGHTS_NAME, to_timm_state_dict(model), metadata={"format": "pt"})
        write_json(dst / CONFIG_NAME, config)
        return dst
    if dst.suffix not in WEIGHT_SUFFIXES:
        folder = " or a folder (a timm Hub layout)" if fmt == "timm" else ""
        raise ValueError(f"{fmt} output is one weight file{folder}: give DST a .safetensors or .pth name, got {dst}")
    tensors = to_timm_state_dict(model) if fmt == "timm" else to_torchvision_state_dict(model)
    write_tensors(dst, tensors, metadata={"format": "pt"})
    return dst


def convert(
    src: str | os.PathLike, dst: str | os.PathLike, fmt: str = "vitlens", legacy_hf: bool = False, **load_kwargs: Any
) -> Path:
    """Read ``src`` with :func:`vitlens.load` (``load_kwargs`` go there) and write it as ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {FORMATS}")
    return export(load(src, **load_kwargs), dst, fmt, legacy_hf=legacy_hf)
