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
from . import labels, preprocessing
from .build import Reading, build

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
    """A model name (with its pretrained tag, when the path spells one timm knows) that ``path`` spells."""
    for part in [path.stem, path.name, *(p.name for p in path.parents)][:6]:
        full = re.sub(r"-[0-9a-f]{6,}$", "", _HUB_PREFIX.sub("", part))  # torchvision-style hash suffix
        base, _, tag = full.partition(".")
        if base in PRESETS or (base.startswith(("vit_", "deit")) and _known_to_timm(base)):
            return full if tag and _timm_pretrained_cfg(full) is not None else base
    return None


def _timm_pretrained_cfg(name: str) -> dict[str, Any] | None:
    """timm's ``pretrained_cfg`` for ``NAME.TAG``; None without timm or when timm has no such tag."""
    try:
        import timm
    except ImportError:
        return None
    try:
        return timm.models.get_pretrained_cfg(name).to_dict()
    except (RuntimeError, ValueError, KeyError, AttributeError):
        return None


def hints_from_name(name: str) -> dict[str, Any]:
    """Config fields a model name implies: a vitlens preset, else timm's own definition (meta device).

    A name with a pretrained tag (``vit_small_patch16_224.augreg_in1k``) takes that tag's
    pre-processing from timm when timm is installed (the presets hold the default tag's).
    """
    base = name.split(".", 1)[0]
    if base in PRESETS:
        hints = get_config(base).to_dict()
        tagged = _timm_pretrained_cfg(name) if "." in name else None
        if tagged is not None:
            hints.update(preprocessing.from_timm(tagged))
        hints["labels"] = labels.from_timm({"pretrained_cfg": tagged or {}}, hints["num_classes"])
        return hints
    if not _known_to_timm(base):
        raise ValueError(
            f"unknown model name {name!r}: not a vitlens preset (vitlens.list_models()) and not a timm model"
        )
    import timm

    with torch.device("meta"):
        model = timm.create_model(name if _timm_pretrained_cfg(name) is not None else base, pretrained=False)
    return hints_from_timm_module(model)


def hints_from_timm_config(data: dict[str, Any]) -> dict[str, Any]:
    """Hints from a timm Hub ``config.json`` (``architecture``, ``model_args``, ``pretrained_cfg``, label names)."""
    hints = hints_from_name(data["architecture"]) if data.get("architecture") else {}
    model_args = {k: v for k, v in (data.get("model_args") or {}).items() if k in _TIMM_ARGS}
    if isinstance(model_args.get("img_size"), list):
        model_args["img_size"] = tuple(model_args["img_size"])
    hints.update(model_args)
    act = (data.get("model_args") or {}).get("act_layer")
    if act is not None:
        if act not in ("gelu", "gelu_tanh", "relu"):
            raise ValueError(f"timm act_layer {act!r} in model_args is not supported (gelu, gelu_tanh, relu are)")
        hints["act_layer"] = act
    for key in ("global_pool", "num_classes"):
        if data.get(key) is not None:
            hints[key] = data[key]
    if data.get("pretrained_cfg"):
        hints.update(preprocessing.from_timm(data["pretrained_cfg"]))
    num_classes = int(hints.get("num_classes") or (data.get("pretrained_cfg") or {}).get("num_classes") or 0)
    hints["labels"] = labels.from_timm(data, num_classes)
    return hints


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
    pretrained_cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    hints.update(preprocessing.from_timm(pretrained_cfg))
    hints["labels"] = labels.from_timm({"pretrained_cfg": pretrained_cfg}, int(model.num_classes))
    return hints


def from_timm(model: nn.Module, **overrides: Any) -> VisionTransformer:
    """A vitlens model with the same weights as the timm ViT ``model`` (bit-exact)."""
    hints = hints_from_timm_module(model)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    return build(Reading(state, f"timm {type(model).__name__}", "timm", hints), **overrides)


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
    if c.distilled or c.patch_bias == c.pre_norm:
        raise ValueError(
            "timm_kwargs builds a plain timm VisionTransformer: no distillation token, and a patch bias "
            "exactly when there is no pre_norm (timm ties the two, as CLIP has them)"
        )
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


# timm entry points whose LayerNorm has the eps a config needs (the eps cannot be a JSON model argument).
_ARCHITECTURE_BY_EPS = {1e-6: "vit_base_patch16_224", 1e-5: "vit_base_patch16_clip_224"}


def timm_config(config: ViTConfig) -> dict[str, Any]:
    """A timm Hub ``config.json`` for this model: architecture, arguments, ``pretrained_cfg``, class names.

    ``timm.create_model(config["architecture"], **config["model_args"])`` builds the same network
    (the entry point is chosen for its LayerNorm eps; the arguments fix everything else); vitlens
    reads the folder back to the same config and pre-processing.
    """
    kwargs = timm_kwargs(config)
    architecture = _ARCHITECTURE_BY_EPS.get(config.norm_eps)
    if architecture is None:
        raise ValueError(
            f"a timm config.json cannot carry LayerNorm eps {config.norm_eps} (timm's ViT entry points use "
            f"{' or '.join(map(str, _ARCHITECTURE_BY_EPS))}); export a single weight file (DST ending in "
            ".safetensors) and pass the eps when building the timm model"
        )
    kwargs.pop("norm_layer")
    model_args = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items() if k != "num_classes"}
    return {
        "architecture": architecture,
        "num_classes": config.num_classes,
        "num_features": config.embed_dim,
        "global_pool": config.global_pool,
        "model_args": model_args,
        "pretrained_cfg": {**preprocessing.to_timm(config), "num_classes": config.num_classes},
        **({"label_names": list(config.labels)} if config.labels else {}),
    }
