"""Saving and loading ViT weights: vitlens's own format, and timm, Hugging Face and torchvision ones.

Only this package knows other libraries' key names and settings. ``load`` reads any of the four
from disk or the Hub; ``from_timm`` / ``from_hf`` / ``from_open_clip`` / ``from_torchvision`` take live models;
``to_*_state_dict`` and ``export`` go back. :mod:`.preprocessing` is the one rule that turns each
library's image settings into config fields.
"""

from __future__ import annotations

from .convert import FORMATS, convert, export
from .files import CheckpointError
from .hf_export import hf_model_type, to_hf_config, to_hf_state_dict
from .hf_format import from_hf
from .loading import load
from .open_clip_format import from_open_clip
from .timm_format import from_timm, timm_config, timm_kwargs, to_timm_state_dict
from .torchvision_format import from_torchvision, to_torchvision_state_dict
from .vitlens_format import CONFIG_NAME, WEIGHTS_NAME, save_pretrained

__all__ = [
    "CONFIG_NAME",
    "FORMATS",
    "WEIGHTS_NAME",
    "CheckpointError",
    "convert",
    "export",
    "from_hf",
    "from_open_clip",
    "from_timm",
    "from_torchvision",
    "hf_model_type",
    "load",
    "save_pretrained",
    "timm_config",
    "timm_kwargs",
    "to_hf_config",
    "to_hf_state_dict",
    "to_timm_state_dict",
    "to_torchvision_state_dict",
]
