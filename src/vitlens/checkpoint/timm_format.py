"""timm: its ViT parameter names are vitlens's own, so only the hints need translating.

A timm state dict does not say how many heads the model has nor how it pools; those come from
a timm model name (a vitlens preset, or any name timm itself knows when timm is installed), a
timm ``config.json`` (Hub layout: ``architecture`` + ``pretrained_cfg``), or arguments.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import PRESETS, ViTConfig, get_config
from ..model import VisionTransformer

# Parts of a Hub cache path around a model name: models--timm--<name>.<tag>/snapshots/<hash>/file
_HUB_PREFIX = re.compile(r"^models--[^-]+(?:-[^-]+)*--")


# timm VisionTransformer arguments that mean the same as the ViTConfig field of the same name.
_TIMM_ARGS = (
    "img_size",
    "patch_size",
    "in_chans",
    "num_classes",
    "global_pool",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "qkv_bias",
    "qk_norm",
    "init_values",
    "class_token",
    "no_embed_class",
    "reg_tokens",
    "pre_norm",
    "final_norm",
    "fc_norm",
)


def _known_to_timm(name: str) -> bool:
    try:
        import timm
    except ImportError:
        return False
    return timm.is_model(name)


def name_in_path(path: Path) -> str | None:
    """A model name that ``path`` (file stem or one of its folders) spells, if any."""
    for part in [path.stem, path.name, *(p.name for p in path.parents)][:6]:
        candidate = _HUB_PREFIX.sub("", part).split(".", 1)[0]
        candidate = re.sub(r"-[0-9a-f]{6,}$", "", candidate)  # torchvision-style hash suffix
        if candidate in PRESETS or (candidate.startswith(("vit_", "deit")) and _known_to_timm(candidate)):
            return candidate
    return None


def hints_from_name(name: str) -> dict[str, Any]:
    """Config fields a model name implies: a vitlens preset, else timm's own definition (meta device)."""
    base = name.split(".", 1)[0]
    if base in PRESETS:
        return get_config(base).to_dict()
    if not _known_to_timm(base):
        raise ValueError(
            f"unknown model name {name!r}: not a vitlens preset (vitlens.list_models()) and not a timm model"
        )
    import timm

    with torch.device("meta"):
        model = timm.create_model(base, pretrained=False)
    return hints_from_timm_module(model)


def hints_from_timm_config(data: dict[str, Any]) -> dict[str, Any]:
    """Hints from a timm Hub ``config.json`` (``architecture``, ``num_classes``, ``pretrained_cfg``)."""
    hints = hints_from_name(data["architecture"]) if data.get("architecture") else {}
    model_args = {k: v for k, v in (data.get("model_args") or {}).items() if k in _TIMM_ARGS}
    if isinstance(model_args.get("img_size"), list):
        model_args["img_size"] = tuple(model_args["img_size"])
    hints.update(model_args)
    if data.get("global_pool"):
        hints["global_pool"] = data["global_pool"]
    hints.update(metadata_from_pretrained_cfg(data.get("pretrained_cfg") or {}))
    if data.get("label_names"):
        hints["labels"] = list(data["label_names"])
    return hints


def metadata_from_pretrained_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    """Pre-processing metadata from timm's ``pretrained_cfg`` (mean, std, crop, interpolation, labels)."""
    out: dict[str, Any] = {}
    if cfg.get("mean"):
        out["image_mean"] = tuple(cfg["mean"])
    if cfg.get("std"):
        out["image_std"] = tuple(cfg["std"])
    if cfg.get("crop_pct"):
        out["crop_pct"] = float(cfg["crop_pct"])
    if cfg.get("interpolation"):
        out["interpolation"] = str(cfg["interpolation"])
    if cfg.get("label_names"):
        out["labels"] = list(cfg["label_names"])
    return out


def hints_from_timm_module(model: nn.Module) -> dict[str, Any]:
    """What a live timm ViT says about itself beyond its weights; unsupported variants are refused."""
    kind = type(model).__name__
    if kind not in ("VisionTransformer", "VisionTransformerDistilled"):
        raise ValueError(f"from_timm reads timm VisionTransformer / VisionTransformerDistilled, got {kind}")
    if getattr(model, "attn_pool", None) is not None or model.global_pool not in ("token", "avg"):
        raise ValueError(f"timm global_pool={model.global_pool!r} is not supported; vitlens pools 'token' or 'avg'")
    if getattr(model, "pool_include_prefix", False):
        raise ValueError("timm pool_include_prefix=True is not supported (vitlens averages patch tokens only)")
    block = model.blocks[0]
    if type(block).__name__ != "Block":
        raise ValueError(f"timm block type {type(block).__name__} is not supported; vitlens has pre-norm Block only")
    if not isinstance(getattr(block.attn, "norm", nn.Identity()), nn.Identity):
        raise ValueError("timm scale_attn_norm is not supported")
    mlp_kind = type(block.mlp).__name__
    if mlp_kind not in ("Mlp", "GluMlp", "SwiGLUPacked"):
        raise ValueError(f"timm MLP type {mlp_kind} is not supported (Mlp and the packed SwiGLU are)")
    act = block.mlp.act
    if mlp_kind != "Mlp":  # timm's SwiGLUPacked: SiLU(first half) * second half, no inner norm
        packed_swiglu = isinstance(act, nn.SiLU) and not block.mlp.gate_last
        if not packed_swiglu or not isinstance(block.mlp.norm, nn.Identity):
            raise ValueError("timm GluMlp is supported only as SwiGLUPacked (SiLU, gate first, no norm)")
        act_layer = "swiglu"
    elif type(act).__name__ == "GELU":  # torch's, or timm's own exact GELU
        act_layer = "gelu_tanh" if getattr(act, "approximate", "none") == "tanh" else "gelu"
    elif type(act).__name__ in ("GELUTanh", "ReLU"):
        act_layer = {"GELUTanh": "gelu_tanh", "ReLU": "relu"}[type(act).__name__]
    else:
        raise ValueError(f"timm activation {type(act).__name__} is not supported (GELU, GELU-tanh, ReLU are)")
    if not isinstance(block.norm1, nn.LayerNorm):
        raise ValueError(f"timm norm layer {type(block.norm1).__name__} is not supported (LayerNorm is)")
    img = model.patch_embed.img_size
    hints: dict[str, Any] = dict(
        num_heads=int(block.attn.num_heads),
        norm_eps=float(block.norm1.eps),
        act_layer=act_layer,
        global_pool=model.global_pool,
        fc_norm=not isinstance(model.fc_norm, nn.Identity),
        no_embed_class=bool(model.no_embed_class),
        img_size=int(img[0]) if img[0] == img[1] else (int(img[0]), int(img[1])),
    )
    if not isinstance(block.ls1, nn.Identity):
        hints["init_values"] = 1e-5
    hints.update(metadata_from_pretrained_cfg(dict(getattr(model, "pretrained_cfg", None) or {})))
    return hints


def from_timm(model: nn.Module, **overrides: Any) -> VisionTransformer:
    """A vitlens model with the same weights as the timm ViT ``model`` (bit-exact)."""
    from .loading import build_model

    hints = hints_from_timm_module(model)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    return build_model(state, hints, overrides, where=f"timm {type(model).__name__}", source="timm")


def to_timm_state_dict(model: VisionTransformer) -> dict[str, Tensor]:
    """The weights under timm's names; ``timm.create_model(name).load_state_dict`` takes them as they are."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def timm_kwargs(config: ViTConfig) -> dict[str, Any]:
    """Keyword arguments for ``timm.models.vision_transformer.VisionTransformer`` with this config."""
    from functools import partial

    c = config
    if c.act_layer == "swiglu" or c.norm_layer != "layernorm" or c.pos_embed == "sincos2d":
        raise ValueError(
            "timm_kwargs covers GELU/ReLU MLPs, LayerNorm and learned or no position embeddings; "
            f"this config has act_layer={c.act_layer!r}, norm_layer={c.norm_layer!r}, pos_embed={c.pos_embed!r}"
        )
    if c.distilled or not c.patch_bias:
        raise ValueError("timm_kwargs builds a plain timm VisionTransformer: no distillation token, patch bias on")
    act = {"gelu": "gelu", "gelu_tanh": "gelu_tanh", "relu": "relu"}[c.act_layer]
    return dict(
        img_size=c.img_hw,
        patch_size=c.patch_size,
        in_chans=c.in_chans,
        num_classes=c.num_classes,
        global_pool=c.global_pool,
        embed_dim=c.embed_dim,
        depth=c.depth,
        num_heads=c.num_heads,
        mlp_ratio=c.hidden_dim / c.embed_dim,
        qkv_bias=c.qkv_bias,
        qk_norm=c.qk_norm,
        init_values=c.init_values,
        class_token=c.class_token,
        pos_embed=c.pos_embed,
        no_embed_class=c.no_embed_class,
        reg_tokens=c.reg_tokens,
        pre_norm=c.pre_norm,
        final_norm=c.final_norm,
        fc_norm=c.use_fc_norm,
        act_layer=act,
        norm_layer=partial(nn.LayerNorm, eps=c.norm_eps),
    )
