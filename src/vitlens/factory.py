"""``create_model``: a preset by its timm-style name, with random weights or pretrained ones."""

from __future__ import annotations

from typing import Any

from .checkpoint import hub, load
from .config import get_config
from .model import VisionTransformer


def create_model(name: str, pretrained: bool = False, **overrides: Any) -> VisionTransformer:
    """Build a preset by its timm-style name, e.g. ``create_model('vit_small_patch16_224', num_classes=10)``.

    ``pretrained=True`` loads timm's public weights for the preset from the Hugging Face Hub (the
    default tag, or the one named: ``'vit_small_patch14_dinov2.lvd142m'``), with their class names
    and pre-processing; see :mod:`vitlens.checkpoint.hub`. A Hub name (``hf-hub:ORG/NAME``,
    ``timm/NAME.TAG``) is loaded as it is, as ``timm.create_model`` does; ``num_classes=`` other than
    the weights' keeps the backbone and starts a new head.
    """
    if pretrained:
        return load(name if hub.is_hub_name(name) else hub.pretrained_repo(name), **overrides)
    return VisionTransformer(get_config(name, **overrides))
