"""torchvision ``VisionTransformer`` (``vit_b_16`` and family): key names, both ways.

torchvision stores q, k, v stacked in ``self_attention.in_proj_weight`` — the same layout as
vitlens's ``qkv`` — so every tensor maps one to one. Older checkpoints name the MLP layers
``mlp.linear_1`` / ``mlp.linear_2`` instead of ``mlp.0`` / ``mlp.3``; both are read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..config import IMAGENET_MEAN, IMAGENET_STD, ViTConfig
from ..model import VisionTransformer
from . import labels
from .build import Reading, build
from .files import CheckpointError
from .infer import require_plain_vit

# torchvision's builders fix the head count, which the weights do not show.
HEADS_BY_NAME = {"vit_b_16": 12, "vit_b_32": 12, "vit_l_16": 16, "vit_l_32": 16, "vit_h_14": 16}

_LAYER = r"encoder\.layers\.encoder_layer_(\d+)\."
_RENAMES = [
    (r"conv_proj\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"class_token", "cls_token"),
    (r"encoder\.pos_embedding", "pos_embed"),
    (_LAYER + r"ln_1\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (_LAYER + r"ln_2\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (_LAYER + r"self_attention\.in_proj_(weight|bias)", r"blocks.\1.attn.qkv.\2"),
    (_LAYER + r"self_attention\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (_LAYER + r"mlp\.(?:0|linear_1)\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (_LAYER + r"mlp\.(?:3|linear_2)\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"encoder\.ln\.(weight|bias)", r"norm.\1"),
    (r"heads\.head\.(weight|bias)", r"head.\1"),
]


def is_torchvision_state(state: dict[str, Tensor]) -> bool:
    return "conv_proj.weight" in state or any(k.startswith("encoder.layers.encoder_layer_") for k in state)


def torchvision_to_vitlens(state: dict[str, Tensor], where: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Rename torchvision keys to vitlens keys; returns the tensors and a vitlens -> source key map."""
    if any(k.startswith("heads.pre_logits") for k in state):
        raise CheckpointError(f"{where}: torchvision representation_size (heads.pre_logits) is not supported")
    if any(k.startswith("conv_proj.conv_") for k in state):
        raise CheckpointError(f"{where}: torchvision conv_stem_configs (a convolutional stem) are not supported")
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        new = next((re.sub(p, r, key) for p, r in _RENAMES if re.fullmatch(p, key)), key)
        out[new] = value
        origin[new] = key
    return out, origin


def torchvision_hints() -> dict[str, Any]:
    """What every torchvision ViT shares and its weights do not say (its ImageNet-1k recipe and names)."""
    return dict(
        norm_eps=1e-6,
        act_layer="gelu",
        global_pool="token",
        fc_norm=False,
        no_embed_class=False,
        pos_embed_interp="torchvision",
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        interpolation="bilinear",
        crop_pct=0.875,
        crop_mode="center",
        crop_rounding="round",
        labels=labels.imagenet_labels(1000),
    )


def name_in_path(path: Path) -> str | None:
    """``vit_b_16`` and friends when the file or folder name spells one (``vit_b_16-c867db91.pth``)."""
    for part in (path.stem, path.parent.name):
        for name in HEADS_BY_NAME:
            if part == name or part.startswith(name + "-") or part.startswith(name + "_"):
                return name
    return None


def read_state(state: dict[str, Tensor], where: str, builder: str | None = None) -> Reading:
    """A torchvision ViT state dict; ``builder`` (``vit_b_16``...) gives the head count the weights cannot."""
    hints = torchvision_hints()
    if builder:
        hints["num_heads"] = HEADS_BY_NAME[builder]
    renamed, origin = torchvision_to_vitlens(state, where)
    return Reading(renamed, where, "torchvision", hints, origin=origin)


def from_torchvision(model: nn.Module, **overrides: Any) -> VisionTransformer:
    """A vitlens model with the weights of a torchvision ``VisionTransformer`` (bit-exact)."""
    if type(model).__name__ != "VisionTransformer" or not hasattr(model, "conv_proj"):
        raise ValueError(f"from_torchvision reads torchvision.models.VisionTransformer, got {type(model).__name__}")
    layer = model.encoder.layers[0]
    act = layer.mlp[1]
    if not isinstance(act, nn.GELU) or act.approximate != "none":
        raise ValueError(f"torchvision MLP activation {act!r} is not supported (exact GELU is)")
    state = {k: v.detach() for k, v in model.state_dict().items()}
    reading = read_state(state, "torchvision VisionTransformer")
    reading.hints.update(num_heads=int(layer.num_heads), norm_eps=float(model.encoder.ln.eps))
    reading.hints["img_size"] = int(model.image_size)
    return build(reading, **overrides)


def to_torchvision_state_dict(model: VisionTransformer) -> dict[str, Tensor]:
    """The weights under torchvision names, for ``torchvision.models.VisionTransformer(...)``.

    That model must be built with the same ``image_size``, ``patch_size``, ``num_layers``,
    ``num_heads``, ``hidden_dim`` (embed_dim), ``mlp_dim`` and ``num_classes``.
    """
    c: ViTConfig = model.config
    extra = (
        (f"activation {c.act_layer!r}", c.act_layer != "gelu"),
        ("no qkv bias", not c.qkv_bias),
        ("no classifier head", not c.num_classes),
        ("a non-square image size", c.img_hw[0] != c.img_hw[1]),
    )
    require_plain_vit(c, "torchvision VisionTransformer", extra)
    simple = {
        "patch_embed.proj": "conv_proj",
        "cls_token": "class_token",
        "pos_embed": "encoder.pos_embedding",
        "norm": "encoder.ln",
        "head": "heads.head",
    }
    in_block = {
        "norm1": "ln_1",
        "norm2": "ln_2",
        "attn.qkv": "self_attention.in_proj",
        "attn.proj": "self_attention.out_proj",
        "mlp.fc1": "mlp.0",
        "mlp.fc2": "mlp.3",
    }
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        value = value.detach().clone()
        if key in simple:
            out[simple[key]] = value
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias)", key)
        if m:
            i, module, kind = m.groups()
            name = in_block[module]
            sep = "_" if module == "attn.qkv" else "."
            out[f"encoder.layers.encoder_layer_{i}.{name}{sep}{kind}"] = value
            continue
        module, kind = key.rsplit(".", 1)
        out[f"{simple[module]}.{kind}"] = value
    return out
