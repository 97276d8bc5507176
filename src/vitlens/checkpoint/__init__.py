"""Saving and loading ViT weights: vitlens's own format, and timm, Hugging Face and torchvision ones.

Only this package knows other libraries' key names. ``load`` reads any of the four from disk;
``from_timm`` / ``from_hf`` / ``from_torchvision`` take live models; ``to_*_state_dict`` go back.
"""

from __future__ import annotations

from .convert import convert, export
from .files import CheckpointError
from .hf_format import from_hf, to_hf_config, to_hf_state_dict
from .loading import load
from .timm_format import from_timm, timm_kwargs, to_timm_state_dict
from .torchvision_format import from_torchvision, to_torchvision_state_dict
from .vitlens_format import CONFIG_NAME, WEIGHTS_NAME, save_pretrained

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CheckpointError",
    "convert",
    "export",
    "from_hf",
    "from_timm",
    "from_torchvision",
    "load",
    "save_pretrained",
    "timm_kwargs",
    "to_hf_config",
    "to_hf_state_dict",
    "to_timm_state_dict",
    "to_torchvision_state_dict",
]
