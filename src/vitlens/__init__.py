"""vitlens: a PyTorch Vision Transformer whose attention you can see.

``import vitlens`` needs only torch. The layers above the core model (``checkpoint``,
``explain``, ``viz``, ``data``, ``training``, ``bench``, ``commands``) have heavier
dependencies and are imported the first time they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import PRESETS, ViTConfig, get_config, list_models
from .model import TokenLayout, VisionTransformer, ViTOutput

__version__ = "0.1.0"

# name -> module that defines it, imported on first access
_LAZY = {
    "create_model": "factory",
    "load": "checkpoint",
    "save_pretrained": "checkpoint",
    "from_timm": "checkpoint",
    "from_hf": "checkpoint",
    "from_open_clip": "checkpoint",
    "from_torchvision": "checkpoint",
    "transforms_for": "data",
    "tune_cpu_allocator": "allocator",
}
_SUBMODULES = ("allocator", "bench", "checkpoint", "data", "explain", "layers", "seed", "training", "viz")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'vitlens' has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "TokenLayout",
    "ViTConfig",
    "ViTOutput",
    "VisionTransformer",
    "get_config",
    "list_models",
    "__version__",
    *_LAZY,
]
