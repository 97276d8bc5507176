"""``create_model``: a preset by its timm-style name, with random weights or pretrained ones."""

from __future__ import annotations

from typing import Any

from .checkpoint import hub, load
from .checkpoint.timm_format import config_from_timm_name, known_to_timm
from .config import PRESETS, get_config
from .model import VisionTransformer


def create_model(name: str, pretrained: bool = False, **overrides: Any) -> VisionTransformer:
    """Build a preset by its timm-style name, e.g. ``create_model('vit_small_patch16_224', num_classes=10)``.

    A name that is no preset but a ViT timm registers (``vit_so400m_patch14_siglip_224``,
    ``eva02_large_patch14_448``...) is built from timm's definition when timm is installed.

    ``pretrained=True`` loads timm's public weights for the preset from the Hugging Face Hub (the
    default tag, or the one named: ``'vit_small_patch14_dinov2.lvd142m'``), with their class names
    and pre-processing; see :mod:`vitlens.checkpoint.hub`. A Hub name (``hf-hub:ORG/NAME``,
    ``timm/NAME.TAG``) is loaded as it is, as ``timm.create_model`` does; ``num_classes=`` other than
    the weights' keeps the backbone and starts a new head.
    """
    if pretrained:
        return load(name if hub.is_hub_name(name) else hub.pretrained_repo(name), **overrides)
    base = name.split(".", 1)[0]
    if base not in PRESETS and known_to_timm(base):
        return VisionTransformer(config_from_timm_name(name, **overrides))
    return VisionTransformer(get_config(name, **overrides))  # an unknown name gets the presets' close names
