"""Hugging Face ``ViTModel`` / ``ViTForImageClassification``: key names and config, both ways.

Two generations of key names are read: transformers 4.x
(``vit.encoder.layer.i.attention.attention.query``, ``...intermediate.dense``) and 5.x
(``vit.layers.i.attention.q_proj``, ``...mlp.fc1``), with or without the ``vit.`` prefix and the
``classifier``. q, k and v are stored apart there and concatenated into vitlens's one ``qkv``.

``ViTModel``'s optional pooler (dense + tanh on the class token) feeds no classifier and is not
part of vitlens: its weights are set aside with a warning, and ``features`` match
``last_hidden_state``.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn

from ..config import ViTConfig
from ..model import VisionTransformer
from . import labels, preprocessing
from .build import Reading, build
from .files import CheckpointError
from .infer import require_plain_vit

# source-key regex (after the optional 'vit.' prefix) -> vitlens key; {i} is the layer index.
_RENAMES = [
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"(?:layers|encoder\.layer)\.(\d+)\.layernorm_before\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (r"(?:layers|encoder\.layer)\.(\d+)\.layernorm_after\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (r"layers\.(\d+)\.attention\.o_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"layers\.(\d+)\.mlp\.fc1\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (r"layers\.(\d+)\.mlp\.fc2\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
]
_QKV = [
    re.compile(r"layers\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)"),
    re.compile(r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)"),
]
_POOLER = re.compile(r"pooler\.dense\.(weight|bias)")
_ACTS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
POOLER_NOTE = (
    "Hugging Face ViTModel pooler: dense + tanh on the class token, not part of vitlens; "
    "features match last_hidden_state"
)
# What a ViT config.json leaves unsaid when there is none: transformers' ViTConfig defaults.
_NO_CONFIG = dict(
    norm_eps=1e-12, act_layer="gelu", global_pool="token", fc_norm=False, no_embed_class=False, pos_embed_interp="hf"
)


def is_hf_state(state: dict[str, Tensor]) -> bool:
    return any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in state)


def hf_to_vitlens(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str], list[str]]:
    """Rename HF keys to vitlens keys.

    Returns the renamed tensors, a map vitlens key -> source key (for error messages), and the
    pooler keys that were set aside. Keys that match nothing are kept under their own name, so
    the strict loader reports them as unexpected.
    """
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    pooler: list[str] = []
    qkv: dict[tuple[str, str], dict[str, tuple[str, Tensor]]] = {}
    for key, value in state.items():
        body = key[len("vit.") :] if key.startswith("vit.") else key
        if body.startswith("classifier."):
            new = "head." + body[len("classifier.") :]
        elif _POOLER.fullmatch(body):
            pooler.append(key)
            continue
        else:
            m = next((m for pattern in _QKV if (m := pattern.fullmatch(body))), None)
            if m:  # q / k / v of one layer, concatenated below
                qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)[0]] = (key, value)
                continue
            new = next((re.sub(p, r, body) for p, r in _RENAMES if re.fullmatch(p, body)), key)
        out[new] = value
        origin[new] = key
    for (layer, kind), parts in qkv.items():
        new = f"blocks.{layer}.attn.qkv.{kind}"
        missing = [p for p in "qkv" if p not in parts]
        if missing:
            have, tensor = next(iter(parts.values()))
            raise CheckpointError(
                f"missing key(s): the {'/'.join(missing)} projection {kind} of layer {layer} "
                f"(found {have} {tuple(tensor.shape)} but not its partners)"
            )
        out[new] = torch.cat([parts[p][1] for p in "qkv"], dim=0)
        origin[new] = parts["q"][0].replace(".q_proj", ".{q,k,v}_proj").replace(".query", ".{query,key,value}")
    return out, origin, pooler


def hints_from_hf_config(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """ViTConfig fields from a Hugging Face ViT ``config.json`` (or ``model.config.to_dict()``)."""
    if cfg.get("model_type", "vit") != "vit":
        raise CheckpointError(f"{where}: model_type {cfg.get('model_type')!r} is not supported; vitlens reads 'vit'")
    act = cfg.get("hidden_act", "gelu")
    if act not in _ACTS:
        raise CheckpointError(f"{where}: hidden_act {act!r} is not supported; expected one of {sorted(_ACTS)}")
    hints: dict[str, Any] = dict(
        _NO_CONFIG,
        num_heads=int(cfg.get("num_attention_heads", 12)),
        norm_eps=float(cfg.get("layer_norm_eps", 1e-12)),
        act_layer=_ACTS[act],
    )
    if "image_size" in cfg:
        size = cfg["image_size"]
        hints["img_size"] = int(size) if isinstance(size, int) else tuple(int(s) for s in size)
    names = labels.from_hf(cfg)
    if names is not None:
        hints["labels"] = names
    return hints


def read_state(
    state: dict[str, Tensor],
    config: dict[str, Any] | None,
    processor: dict[str, Any] | None,
    where: str,
    folder: str | None = None,
) -> Reading:
    """A Hugging Face ViT state dict with its ``config.json`` and ``preprocessor_config.json`` (either may be None).

    ``folder`` names where those files were read, for messages about them.
    """
    at = f"{folder}/" if folder else f"{where}: "
    hints = hints_from_hf_config(config, f"{at}config.json") if config is not None else dict(_NO_CONFIG)
    hints.update(preprocessing.from_hf(processor, f"{at}preprocessor_config.json"))
    if not any(k.startswith(("classifier.", "vit.classifier.")) for k in state):
        hints["num_classes"] = 0
    try:
        renamed, origin, pooler = hf_to_vitlens(state)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from e
    return Reading(renamed, where, "Hugging Face", hints, origin=origin, ignored=pooler, ignored_why=POOLER_NOTE)


def from_hf(model: nn.Module, image_processor: Any = None, **overrides: Any) -> VisionTransformer:
    """A vitlens model with the weights of a transformers ``ViTModel`` or ``ViTForImageClassification``.

    ``image_processor`` (the model's transformers image processor, or its config as a dict) gives
    the pre-processing; without it, transformers' ``ViTImageProcessor`` defaults apply.
    """
    kind = type(model).__name__
    if kind not in ("ViTModel", "ViTForImageClassification"):
        raise ValueError(f"from_hf reads ViTModel or ViTForImageClassification, got {kind}")
    where = f"Hugging Face {kind}"
    state = {k: v.detach() for k, v in model.state_dict().items()}
    processor = image_processor.to_dict() if hasattr(image_processor, "to_dict") else image_processor
    return build(read_state(state, model.config.to_dict(), processor, where), **overrides)


def _check_hf_compatible(config: ViTConfig) -> None:
    bad_act = config.act_layer not in ("gelu", "gelu_tanh", "relu")
    require_plain_vit(config, "Hugging Face ViT", ((f"activation {config.act_layer!r}", bad_act),))


def to_hf_config(config: ViTConfig) -> dict[str, Any]:
    """A Hugging Face ViT ``config.json`` for this model (``ViTForImageClassification`` or ``ViTModel``)."""
    _check_hf_compatible(config)
    c = config
    labels = c.labels if c.labels and len(c.labels) == c.num_classes else [f"LABEL_{i}" for i in range(c.num_classes)]
    hf_act = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}[c.act_layer]
    return {
        "model_type": "vit",
        "architectures": ["ViTForImageClassification" if c.num_classes else "ViTModel"],
        "hidden_size": c.embed_dim,
        "num_hidden_layers": c.depth,
        "num_attention_heads": c.num_heads,
        "intermediate_size": c.hidden_dim,
        "hidden_act": hf_act,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "layer_norm_eps": c.norm_eps,
        "image_size": c.img_hw[0] if c.img_hw[0] == c.img_hw[1] else list(c.img_hw),
        "patch_size": c.patch_size,
        "num_channels": c.in_chans,
        "qkv_bias": c.qkv_bias,
        "encoder_stride": c.patch_size,
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
    }


def to_hf_state_dict(model: VisionTransformer, legacy: bool = False, prefix: str | None = None) -> dict[str, Tensor]:
    """The weights under Hugging Face ViT names (5.x ``layers.i.attention.q_proj``; ``legacy``: 4.x names).

    ``prefix`` defaults to ``'vit.'`` (``ViTForImageClassification``, which also gets
    ``classifier``); pass ``''`` for a bare ``ViTModel``.
    """
    _check_hf_compatible(model.config)
    prefix = "vit." if prefix is None else prefix
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        value = value.detach().clone()
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if key.startswith("head."):
            out["classifier." + key[len("head.") :]] = value
            continue
        if not m:
            name = {
                "cls_token": "embeddings.cls_token",
                "pos_embed": "embeddings.position_embeddings",
                "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
                "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
                "norm.weight": "layernorm.weight",
                "norm.bias": "layernorm.bias",
            }[key]
            out[prefix + name] = value
            continue
        i, rest = m.groups()
        layer = f"{prefix}encoder.layer.{i}." if legacy else f"{prefix}layers.{i}."
        if rest.startswith("attn.qkv."):
            kind = rest.rsplit(".", 1)[1]
            names = ("attention.attention.query", "attention.attention.key", "attention.attention.value")
            if not legacy:
                names = ("attention.q_proj", "attention.k_proj", "attention.v_proj")
            for name, part in zip(names, value.chunk(3, dim=0)):
                out[f"{layer}{name}.{kind}"] = part.clone()
            continue
        table = {
            "norm1": "layernorm_before",
            "norm2": "layernorm_after",
            "attn.proj": "attention.output.dense" if legacy else "attention.o_proj",
            "mlp.fc1": "intermediate.dense" if legacy else "mlp.fc1",
            "mlp.fc2": "output.dense" if legacy else "mlp.fc2",
        }
        module, kind = rest.rsplit(".", 1)
        out[f"{layer}{table[module]}.{kind}"] = value
    return out
