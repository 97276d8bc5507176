"""Hugging Face vision models: ViT, DeiT, DINOv2 (with registers), ViT-MAE, I-JEPA, CLIP, SigLIP,
BEiT / data2vec-vision and DINOv3 — key names and configs, read into vitlens.

transformers names the same parts of a ViT in several ways (across model types and across its
4.x and 5.x generations: ``encoder.layer.i.attention.attention.query`` / ``layers.i.attention.q_proj``
/ ``encoder.layers.i.self_attn.q_proj``; ``layernorm_before`` / ``norm1`` / ``layer_norm1``...).
One table of patterns reads them all; q, k and v, stored apart there, are concatenated into
vitlens's one ``qkv``. What each model type means beyond its tensors (heads, eps, activation,
pooling, the readout of CLIP and SigLIP) comes from its ``config.json``.

For CLIP and SigLIP the model's output is what transformers calls the image embedding:
``image_embeds`` (CLIP with its projection, which becomes vitlens's head) or ``pooler_output``.
Parts that are not the vision encoder are set aside by name with a warning: ``ViTModel``'s
pooler, ViT-MAE's decoder; mask tokens quietly. The text half of a full CLIP or SigLIP model is
kept by transformers itself, as ``model.text_tower`` (:mod:`.text_towers`).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn

from ..model import VisionTransformer
from . import labels, preprocessing
from .build import Reading, build
from .files import CheckpointError
from .text_towers import HfText

# model_type -> the transformers classes whose live models from_hf reads
MODEL_TYPES = {
    "vit": ("ViTModel", "ViTForImageClassification"),
    "deit": ("DeiTModel", "DeiTForImageClassification", "DeiTForImageClassificationWithTeacher"),
    "dinov2": ("Dinov2Model", "Dinov2ForImageClassification"),
    "dinov2_with_registers": ("Dinov2WithRegistersModel", "Dinov2WithRegistersForImageClassification"),
    "vit_mae": ("ViTMAEModel", "ViTMAEForPreTraining"),
    "ijepa": ("IJepaModel", "IJepaForImageClassification"),
    "clip_vision_model": ("CLIPVisionModel", "CLIPVisionModelWithProjection"),
    "clip": ("CLIPModel",),
    "siglip_vision_model": ("SiglipVisionModel",),
    "siglip": ("SiglipModel",),
    "beit": ("BeitModel", "BeitForImageClassification"),
    "data2vec-vision": ("Data2VecVisionModel", "Data2VecVisionForImageClassification"),
    "dinov3_vit": ("DINOv3ViTModel",),
}
TEXT_MODEL_TYPES = ("clip", "siglip")  # full models: their text half is kept as model.text_tower
_ACTS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "quick_gelu": "quick_gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
_PATCH = re.compile(r"^(.*?)embeddings\.patch_embeddings?(?:\.projection)?\.weight$")
_LAYER = re.compile(r"^(?:encoder\.layers?|layers|model\.layer|layer)\.(\d+)\.(.+)$")
_QKV = re.compile(
    r"^(?:attention\.attention\.(query|key|value)|attention\.([qkv])_proj|self_attn\.([qkv])_proj)\.(weight|bias)$"
)
# inside a layer: source pattern -> vitlens name ('' drops a buffer; {0} is weight or bias)
_IN_LAYER = [
    (r"(?:layernorm_before|norm1|layer_norm1)\.(weight|bias)", "norm1.{0}"),
    (r"(?:layernorm_after|norm2|layer_norm2)\.(weight|bias)", "norm2.{0}"),
    (r"(?:attention\.output\.dense|attention\.o_proj|self_attn\.out_proj)\.(weight|bias)", "attn.proj.{0}"),
    (r"(?:intermediate\.dense|mlp\.fc1|mlp\.weights_in)\.(weight|bias)", "mlp.fc1.{0}"),
    (r"(?:output\.dense|mlp\.fc2|mlp\.down_proj|mlp\.weights_out)\.(weight|bias)", "mlp.fc2.{0}"),
    (r"mlp\.gate_proj\.(weight|bias)", "mlp.fc1_g.{0}"),
    (r"mlp\.up_proj\.(weight|bias)", "mlp.UP.{0}"),  # fc1_x beside a gate, else fc1
    (r"(?:layer_scale1\.lambda1|lambda_1)", "ls1.gamma"),
    (r"(?:layer_scale2\.lambda1|lambda_2)", "ls2.gamma"),
    (
        r"attention\.(?:attention\.)?relative_position_bias\.relative_position_bias_table",
        "attn.relative_position_bias_table",
    ),
    (r"attention\.(?:attention\.)?relative_position_bias\.relative_position_index", ""),
]
# outside the layers (after the model's prefix)
_TOP = [
    (r"embeddings\.(?:cls_token|class_embedding)", "cls_token"),
    (r"embeddings\.distillation_token", "dist_token"),
    (r"embeddings\.register_tokens", "reg_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.position_embedding\.weight", "pos_embed"),
    (r"embeddings\.patch_embeddings?(?:\.projection)?\.(weight|bias)", "patch_embed.proj.{0}"),
    (r"pre_layrnorm\.(weight|bias)", "norm_pre.{0}"),
    (r"(?:layernorm|post_layernorm|norm)\.(weight|bias)", "FINAL.{0}"),  # norm or fc_norm, by model type
    (r"pooler\.layernorm\.(weight|bias)", "fc_norm.{0}"),
    (r"head\.probe", "attn_pool.latent"),
    (r"head\.attention\.out_proj\.(weight|bias)", "attn_pool.proj.{0}"),
    (r"head\.layernorm\.(weight|bias)", "attn_pool.norm.{0}"),
    (r"head\.mlp\.(fc1|fc2)\.(weight|bias)", "attn_pool.mlp.{0}.{1}"),
    (r"embeddings\.position_ids", ""),
]
# heads, named without the model's prefix
_HEADS = [
    (r"(?:classifier|cls_classifier)\.(weight|bias)", "head.{0}"),
    (r"distillation_classifier\.(weight|bias)", "head_dist.{0}"),
    (r"visual_projection\.weight", "head.weight"),
]
_TEXT_PARTS = r"(?:text_model\..*|text_projection\.weight|logit_scale|logit_bias)"
# parts that are not the vision encoder: set aside with a warning, or quietly ("") when no
# inference path ever reads them
_ASIDE = {
    r"(?:.*\.)?pooler\.dense\.(?:weight|bias)": "ViTModel's pooler (dense + tanh on the class token; no classifier)",
    r"(?:.*\.)?embeddings\.mask_token": "",  # masked-image pretraining replaces patches with it
    r"decoder\..*": "ViT-MAE's decoder (pretraining only; the encoder is the model)",
    _TEXT_PARTS: "the text tower",
}
POOLER_NOTE = "not part of the vision encoder vitlens reads"


def is_hf_state(state: dict[str, Tensor]) -> bool:
    return any(_PATCH.match(k) and not k.startswith("patch_embed.") for k in state)


def _prefix(state: dict[str, Tensor]) -> str:
    """The model's own prefix (``vit.``, ``vision_model.``...): whatever precedes its patch embedding."""
    for key in state:
        m = _PATCH.match(key)
        if m and "text" not in m.group(1):
            return m.group(1)
    raise CheckpointError("no patch embedding (…embeddings.patch_embeddings.projection.weight) found")


def hf_to_vitlens(
    state: dict[str, Tensor], final_norm: str = "norm"
) -> tuple[dict[str, Tensor], dict[str, str], list[str], list[str]]:
    """Rename a transformers vision model's tensors to vitlens's names.

    Returns the renamed tensors, a map vitlens key -> source key (for messages), the keys set aside
    and why (one line per kind). ``final_norm``: where the model's last norm goes (``'norm'`` on every
    token, ``'fc_norm'`` on the pooled one, as CLIP has it). Unknown keys keep their names, so the
    strict loader reports them.
    """
    prefix = _prefix(state)
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    aside: dict[str, str] = {}
    qkv: dict[tuple[str, str], dict[str, tuple[str, Tensor]]] = {}
    pool_in: dict[str, Tensor] = {}
    gated = {m.group(1) for k in state if (m := re.search(r"(\d+)\.mlp\.gate_proj\.weight$", k))}

    def put(new: str, value: Tensor, key: str) -> None:
        out[new], origin[new] = value, key

    for key, value in state.items():
        why = next((w for p, w in _ASIDE.items() if re.fullmatch(p, key)), None)
        if why is not None:
            if why:
                aside[key] = why
            continue
        head = next((t.format(*m.groups()) for p, t in _HEADS if (m := re.fullmatch(p, key))), None)
        if head is not None:
            put(head, value, key)
            continue
        if not key.startswith(prefix):
            put(key, value, key)
            continue
        body = key[len(prefix) :]
        if body.startswith("encoder.relative_position_bias."):
            raise CheckpointError(
                f"{key}: a relative position bias shared by all layers is not supported (one per layer is)"
            )
        if m := re.fullmatch(r"head\.attention\.in_proj_(weight|bias)", body):  # SigLIP's pool: q, then k and v
            pool_in[m.group(1)] = value
            origin[f"attn_pool.q.{m.group(1)}"] = origin[f"attn_pool.kv.{m.group(1)}"] = key
            continue
        if layer := _LAYER.match(body):
            index, rest = layer.groups()
            if q := _QKV.match(rest):
                part = (q.group(1) or q.group(2) or q.group(3))[0]
                qkv.setdefault((index, q.group(4)), {})[part] = (key, value)
                continue
            new = next((t.format(*m.groups()) for p, t in _IN_LAYER if (m := re.fullmatch(p, rest))), None)
            if new == "":
                continue  # a buffer vitlens computes itself
            if new is not None:
                new = new.replace("UP", "fc1_x" if index in gated else "fc1")
                put(f"blocks.{index}.{new}", value, key)
            else:
                put(key, value, key)
            continue
        new = next((t.format(*m.groups()) for p, t in _TOP if (m := re.fullmatch(p, body))), None)
        if new == "":
            continue
        if new is None:
            put(key, value, key)
            continue
        new = new.replace("FINAL", final_norm)
        if new == "cls_token" and value.dim() == 1:  # CLIP's class_embedding is a vector
            value = value.view(1, 1, -1)
        if new == "pos_embed" and value.dim() == 2:  # CLIP's and SigLIP's position_embedding is an nn.Embedding
            value = value[None]
        if new == "reg_token" and value.shape[1] == 0:
            continue  # DINOv3 without registers stores an empty tensor
        put(new, value, key)
    for kind, value in pool_in.items():
        dim = value.shape[0] // 3
        out[f"attn_pool.q.{kind}"], out[f"attn_pool.kv.{kind}"] = value[:dim], value[dim:]
    for (index, kind), parts in qkv.items():
        _join_qkv(out, origin, f"blocks.{index}.attn.", kind, parts)
    notes = []
    for why in sorted(set(aside.values())):
        keys = [k for k, w in aside.items() if w == why]
        more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
        notes.append(f"{why}: {', '.join(keys[:3])}{more}")
    return out, origin, list(aside), notes


def _join_qkv(out: dict, origin: dict, prefix: str, kind: str, parts: dict[str, tuple[str, Tensor]]) -> None:
    """q, k and v of one layer into ``qkv``; biases for q and v only (EVA-style) into ``q_bias`` / ``v_bias``."""
    names = {p: key for p, (key, _) in parts.items()}
    if kind == "bias" and set(parts) == {"q", "v"}:
        out[prefix + "q_bias"], out[prefix + "v_bias"] = parts["q"][1], parts["v"][1]
        origin[prefix + "q_bias"], origin[prefix + "v_bias"] = names["q"], names["v"]
        return
    missing = [p for p in "qkv" if p not in parts]
    if missing:
        have, tensor = next(iter(parts.values()))
        raise CheckpointError(
            f"missing key(s): the {'/'.join(missing)} projection {kind} of layer {prefix.split('.')[1]} "
            f"(found {have} {tuple(tensor.shape)} but not its partners)"
        )
    out[prefix + f"qkv.{kind}"] = torch.cat([parts[p][1] for p in "qkv"], dim=0)
    origin[prefix + f"qkv.{kind}"] = "{" + ",".join(names[p] for p in "qkv") + "}"


def _vision_config(cfg: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(model type, the vision encoder's config, the whole config): a full CLIP or SigLIP nests it."""
    kind = cfg.get("model_type", "vit")
    if kind in ("clip", "siglip"):
        return kind, cfg.get("vision_config") or {}, cfg
    return kind, cfg, cfg


def hints_from_hf_config(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """ViTConfig fields from a Hugging Face vision model's ``config.json`` (or ``model.config.to_dict()``)."""
    kind, vision, whole = _vision_config(cfg)
    if kind not in MODEL_TYPES:
        raise CheckpointError(
            f"{where}: model_type {kind!r} is not supported; vitlens reads {', '.join(sorted(MODEL_TYPES))}"
        )
    act = vision.get("hidden_act", "quick_gelu" if kind.startswith("clip") else "gelu")
    if act not in _ACTS:
        raise CheckpointError(f"{where}: hidden_act {act!r} is not supported; expected one of {sorted(_ACTS)}")
    eps_default = {"clip": 1e-5, "clip_vision_model": 1e-5, "dinov3_vit": 1e-5}.get(
        kind, 1e-6 if "dino" in kind or "siglip" in kind else 1e-12
    )
    hints: dict[str, Any] = dict(
        num_heads=int(vision.get("num_attention_heads", 12)),
        norm_eps=float(vision.get("layer_norm_eps", eps_default)),
        act_layer=_ACTS[act],
        global_pool="token",
        fc_norm=False,
        no_embed_class=False,
        pos_embed_interp="hf",
    )
    if kind == "dinov2_with_registers":  # its interpolate_pos_encoding resamples with antialias, as timm does
        hints["pos_embed_interp"] = "timm"
    if "image_size" in vision:
        size = vision["image_size"]
        hints["img_size"] = int(size) if isinstance(size, int) else tuple(int(s) for s in size)
    if kind in ("clip", "clip_vision_model"):  # the last norm reads the pooled class token only
        hints["fc_norm"] = True
    if kind in ("dinov2", "dinov2_with_registers", "dinov3_vit") and vision.get("layerscale_value"):
        hints["init_values"] = float(vision["layerscale_value"])
    if kind in ("dinov2", "dinov2_with_registers") and vision.get("use_swiglu_ffn"):
        hints["act_layer"] = "silu"
    if kind in ("beit", "data2vec-vision"):
        if vision.get("use_shared_relative_position_bias"):
            raise CheckpointError(f"{where}: a relative position bias shared by all layers is not supported")
        if vision.get("layer_scale_init_value"):
            hints["init_values"] = float(vision["layer_scale_init_value"])
        if vision.get("use_mean_pooling", True):
            hints.update(global_pool="avg", fc_norm=True)
    if kind == "dinov3_vit":
        hints.update(
            rope="dinov3",
            rope_temperature=float(vision.get("rope_theta", 100.0)),
            rope_rotate_half=True,
            pos_embed="none",
        )
    if kind in ("siglip", "siglip_vision_model", "ijepa"):
        hints["global_pool"] = "avg"  # without an attention pool; with one the weights say 'map'
    names = labels.from_hf(whole)
    if names is not None:
        hints["labels"] = names
    return hints


def _final_norm(kind: str) -> str:
    return "fc_norm" if kind in ("clip", "clip_vision_model") else "norm"


def read_state(
    state: dict[str, Tensor],
    config: dict[str, Any] | None,
    processor: dict[str, Any] | None,
    where: str,
    folder: str | None = None,
) -> Reading:
    """A Hugging Face vision model's state dict with its ``config.json`` and ``preprocessor_config.json``.

    Either file may be missing: without ``config.json`` the tensors are read as a ViT's with
    transformers' ViT defaults. ``folder`` names where those files were read, for messages.
    """
    at = f"{folder}/" if folder else f"{where}: "
    kind = _vision_config(config)[0] if config is not None else "vit"
    hints = hints_from_hf_config(config or {"model_type": "vit"}, f"{at}config.json")
    hints.update(preprocessing.from_hf(processor, f"{at}preprocessor_config.json"))
    try:
        renamed, origin, aside, notes = hf_to_vitlens(state, _final_norm(kind))
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from e
    if not any(k.startswith(("head.", "head_dist.")) for k in renamed):
        hints["num_classes"] = 0
    if "dist_token" in renamed and "head.weight" in renamed and "head_dist.weight" not in renamed:
        hints["dist_head"] = False  # DeiTForImageClassification reads the class token only
    _fold_register_positions(renamed)
    if "reg_token" in renamed:
        hints["no_embed_class"] = True
    keeps_text = (config or {}).get("model_type") in TEXT_MODEL_TYPES  # kept whole, as model.text_tower
    if keeps_text:
        aside = [k for k in aside if not re.fullmatch(_TEXT_PARTS, k)]
        notes = [n for n in notes if not n.startswith("the text tower")]
    reading = Reading(renamed, where, "Hugging Face", hints, origin=origin, ignored=aside, ignored_why="; ".join(notes))
    if keeps_text and folder is not None:
        reading.text_tower = HfText(folder=folder)
    return reading


def _fold_register_positions(state: dict[str, Tensor]) -> None:
    """DINOv2 with registers: positions for the class token and the patches, none for the registers.

    vitlens gives positions to all prefix tokens or to none of them, so the class token's position
    is added to the class token once here (the same sum transformers computes at every forward)
    and the positions left are the patches'.
    """
    if "reg_token" not in state or "pos_embed" not in state or "cls_token" not in state:
        return
    pos = state["pos_embed"]
    state["cls_token"] = state["cls_token"] + pos[:, :1]
    state["pos_embed"] = pos[:, 1:]


def from_hf(
    model: nn.Module, image_processor: Any = None, tokenizer: Any = None, **overrides: Any
) -> VisionTransformer:
    """A vitlens model with the weights of a transformers vision model (see :data:`MODEL_TYPES`).

    ``image_processor`` (the model's transformers image processor, or its config as a dict) gives
    the pre-processing; without it, transformers' ``ViTImageProcessor`` defaults apply. A full
    ``CLIPModel`` / ``SiglipModel`` keeps its text half as ``model.text_tower``; ``tokenizer`` is
    the one it encodes texts with.
    """
    kind = type(model).__name__
    known = {name for names in MODEL_TYPES.values() for name in names}
    if kind not in known:
        raise ValueError(f"from_hf reads {', '.join(sorted(known))}; got {kind}")
    where = f"Hugging Face {kind}"
    state = {k: v.detach() for k, v in model.state_dict().items()}
    processor = image_processor.to_dict() if hasattr(image_processor, "to_dict") else image_processor
    reading = read_state(state, model.config.to_dict(), processor, where)
    if model.config.model_type in TEXT_MODEL_TYPES:
        reading.text_tower = HfText(model=model, tokenizer=tokenizer)
    return build(reading, **overrides)
