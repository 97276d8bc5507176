"""A vitlens model as a Hugging Face folder: ViT, DeiT, or DINOv2 (with or without registers).

The model type is the plainest one that holds the model (:func:`hf_model_type`): a distillation
token makes it ``deit``; layer scale, a SwiGLU MLP or DINOv2's class-token-and-patch-mean
classifier make it ``dinov2``; register tokens ``dinov2_with_registers``. Anything none of them
holds (RoPE, an attention pool, QuickGELU...) is refused before a file is written, naming it.

Two sums are unfolded on the way out, exactly: prefix tokens without positions
(``no_embed_class``, as timm stores DINOv2 with registers) get zero positions, and a model without
layer scale written as DINOv2 gets scales of one. At input sizes other than the model's,
transformers resamples the positions with its own rule for the type (bicubic; with antialias for
``dinov2_with_registers``), whatever ``pos_embed_interp`` says.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from ..config import ViTConfig
from ..model import VisionTransformer
from .infer import require_plain_vit

_ACTS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu", "silu": "silu"}
# what each type holds beyond the original ViT (plain_vit_problems' names)
_ALLOWED = {
    "vit": frozenset({"no_embed_class"}),
    "deit": frozenset({"distilled", "no_embed_class"}),
    "dinov2": frozenset({"init_values", "mlp_layer", "global_pool", "no_embed_class"}),
    "dinov2_with_registers": frozenset({"init_values", "mlp_layer", "global_pool", "no_embed_class", "reg_tokens"}),
}


def hf_model_type(config: ViTConfig) -> str:
    """The transformers ``model_type`` that :func:`to_hf_config` writes for ``config``."""
    c = config
    if c.reg_tokens:
        return "dinov2_with_registers"
    if c.init_values is not None or c.mlp_layer != "mlp" or c.global_pool == "token_avg":
        return "dinov2"
    return "deit" if c.distilled else "vit"


def _architecture(c: ViTConfig, kind: str) -> str:
    if kind == "vit":
        return "ViTForImageClassification" if c.num_classes else "ViTModel"
    if kind == "deit":
        if not c.num_classes:
            return "DeiTModel"
        return "DeiTForImageClassificationWithTeacher" if c.dist_head else "DeiTForImageClassification"
    base = "Dinov2WithRegisters" if kind == "dinov2_with_registers" else "Dinov2"
    return f"{base}ForImageClassification" if c.num_classes else f"{base}Model"


def _check(config: ViTConfig) -> str:
    """The model type, once everything ``config`` has is known to fit it; else ``ValueError``."""
    c, kind = config, hf_model_type(config)
    dinov2 = kind.startswith("dinov2")
    extra = (
        (f"activation {c.act_layer!r}", c.act_layer not in _ACTS or (c.act_layer == "silu" and not dinov2)),
        ("a gated MLP whose activation is not SiLU", c.mlp_layer != "mlp" and c.act_layer != "silu"),
        ("layer scale on the attention only", c.attn_only_layer_scale),
        ("register tokens with positions", bool(c.reg_tokens) and not c.no_embed_class),
        ("a distillation token beside DINOv2's parts", c.distilled and dinov2),
        (
            f"a head on global_pool={c.global_pool!r} (DINOv2's classifier reads the class token and the patch mean)",
            dinov2 and bool(c.num_classes) and c.global_pool != "token_avg",
        ),
        (
            "global_pool='token_avg' with fc_norm",
            c.global_pool == "token_avg" and c.use_fc_norm,
        ),
    )
    require_plain_vit(c, f"Hugging Face {kind} model", extra, allow=_ALLOWED[kind])
    if dinov2:
        _dinov2_mlp_ratio(c)
    return kind


def _dinov2_mlp_ratio(c: ViTConfig) -> int:
    """The whole ``mlp_ratio`` (transformers types it ``int``) from which DINOv2 rebuilds this MLP's width."""
    D, width = c.embed_dim, c.gated_dim

    def width_for(ratio: int) -> int:  # SwiGLU keeps two thirds, rounded up to a multiple of 8
        return (int(D * ratio * 2 / 3) + 7) // 8 * 8 if c.mlp_layer != "mlp" else D * ratio

    for ratio in range(1, 17):
        if width_for(ratio) == width:
            return ratio
    raise ValueError(
        f"a Hugging Face DINOv2 cannot hold an MLP {width} wide at embed_dim={D}: no whole mlp_ratio gives that width"
    )


def to_hf_config(config: ViTConfig) -> dict[str, Any]:
    """The ``config.json`` of the Hugging Face model that holds this model (see :func:`hf_model_type`)."""
    kind = _check(config)
    c = config
    labels = c.labels if c.labels and len(c.labels) == c.num_classes else [f"LABEL_{i}" for i in range(c.num_classes)]
    out: dict[str, Any] = {
        "model_type": kind,
        "architectures": [_architecture(c, kind)],
        "hidden_size": c.embed_dim,
        "num_hidden_layers": c.depth,
        "num_attention_heads": c.num_heads,
        "hidden_act": _ACTS[c.act_layer],
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "layer_norm_eps": c.norm_eps,
        "image_size": c.img_hw[0] if c.img_hw[0] == c.img_hw[1] else list(c.img_hw),
        "patch_size": c.patch_size,
        "num_channels": c.in_chans,
        "qkv_bias": c.qkv_bias,
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
    }
    if kind.startswith("dinov2"):
        out.update(
            mlp_ratio=_dinov2_mlp_ratio(c),
            layerscale_value=float(c.init_values or 1.0),  # the scales themselves are in the weights
            use_swiglu_ffn=c.mlp_layer != "mlp",
            drop_path_rate=0.0,
        )
        if kind == "dinov2_with_registers":
            out["num_register_tokens"] = c.reg_tokens
    else:
        out.update(intermediate_size=c.hidden_dim, encoder_stride=c.patch_size)
    return out


def _prefix(c: ViTConfig, kind: str) -> str:
    """Where the encoder sits in the classifier's state dict (``vit.``, ``deit.``...); bare models have none."""
    return f"{kind}." if c.num_classes else ""


def to_hf_state_dict(model: VisionTransformer, legacy: bool = False, prefix: str | None = None) -> dict[str, Tensor]:
    """The weights under the names of the model :func:`to_hf_config` describes.

    transformers 5.x names by default (``layers.i.attention.q_proj``; DINOv2 ``encoder.layer.i``);
    ``legacy``: the 4.x ones (``encoder.layer.i.attention.attention.query``). ``prefix``: where the
    encoder sits, by default the classifier's (``vit.``, ``deit.``, ``dinov2.``...) when the model
    has a head, else none.
    """
    c = model.config
    kind = _check(c)
    prefix = _prefix(c, kind) if prefix is None else prefix
    dinov2 = kind.startswith("dinov2")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out: dict[str, Tensor] = {}
    embed = prefix + "embeddings."
    out[embed + "cls_token"] = state.pop("cls_token")
    pos = state.pop("pos_embed")
    if c.no_embed_class:  # transformers adds a position to the class (and distillation) token: zero
        pos = torch.cat([pos.new_zeros(1, 1 + int(c.distilled), pos.shape[-1]), pos], dim=1)
    out[embed + "position_embeddings"] = pos
    if c.distilled:
        out[embed + "distillation_token"] = state.pop("dist_token")
    if c.reg_tokens:
        out[embed + "register_tokens"] = state.pop("reg_token")
    if dinov2:
        out[embed + "mask_token"] = pos.new_zeros(1, c.embed_dim)
    for kind_ in ("weight", "bias"):
        out[f"{embed}patch_embeddings.projection.{kind_}"] = state.pop(f"patch_embed.proj.{kind_}")
        out[f"{prefix}layernorm.{kind_}"] = state.pop(f"norm.{kind_}")
    teacher = kind == "deit" and c.dist_head  # DeiTForImageClassificationWithTeacher names its two heads
    heads = {"head": "cls_classifier" if teacher else "classifier", "head_dist": "distillation_classifier"}
    for i in range(c.depth):  # one gated layout: the two first layers packed, gate first
        for kind_ in ("weight", "bias"):
            if f"blocks.{i}.mlp.fc1_g.{kind_}" in state:
                gate, up = state.pop(f"blocks.{i}.mlp.fc1_g.{kind_}"), state.pop(f"blocks.{i}.mlp.fc1_x.{kind_}")
                state[f"blocks.{i}.mlp.fc1.{kind_}"] = torch.cat([gate, up])
    gated = c.mlp_layer != "mlp"
    for key, value in state.items():
        if m := re.fullmatch(r"(head|head_dist)\.(weight|bias)", key):
            out[f"{heads[m.group(1)]}.{m.group(2)}"] = value
            continue
        i, rest = re.fullmatch(r"blocks\.(\d+)\.(.+)", key).groups()
        out.update(_layer(rest, value, _layer_prefix(prefix, i, dinov2, legacy), dinov2, gated, legacy))
    if dinov2 and c.init_values is None:  # DINOv2 always scales its branches: by one, here
        for i in range(c.depth):
            for n in (1, 2):
                out[f"{_layer_prefix(prefix, str(i), True, legacy)}layer_scale{n}.lambda1"] = torch.ones(c.embed_dim)
    return out


def _layer_prefix(prefix: str, index: str, dinov2: bool, legacy: bool) -> str:
    return f"{prefix}encoder.layer.{index}." if dinov2 or legacy else f"{prefix}layers.{index}."


def _layer(rest: str, value: Tensor, at: str, dinov2: bool, gated: bool, legacy: bool) -> dict[str, Tensor]:
    """One block tensor under transformers' names: q, k and v apart, a packed gate split in two (5.x)."""
    module, kind = rest.rsplit(".", 1)
    if module == "attn.qkv":
        names = ("attention.attention.query", "attention.attention.key", "attention.attention.value")
        if not legacy:
            names = ("attention.q_proj", "attention.k_proj", "attention.v_proj")
        return {f"{at}{name}.{kind}": part.clone() for name, part in zip(names, value.chunk(3, dim=0))}
    if kind == "gamma":  # ls1 / ls2
        return {f"{at}layer_scale{module[-1]}.lambda1": value}
    if gated and module == "mlp.fc1":  # act(first half) * second half
        if legacy:
            return {f"{at}mlp.weights_in.{kind}": value}
        gate, up = value.chunk(2, dim=0)
        return {f"{at}mlp.gate_proj.{kind}": gate.clone(), f"{at}mlp.up_proj.{kind}": up.clone()}
    if gated and module == "mlp.fc2":
        return {f"{at}mlp.{'weights_out' if legacy else 'down_proj'}.{kind}": value}
    names = {"attn.proj": "attention.output.dense" if legacy else "attention.o_proj"}
    if dinov2:
        names.update({"norm1": "norm1", "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"})
    else:
        names.update(
            {
                "norm1": "layernorm_before",
                "norm2": "layernorm_after",
                "mlp.fc1": "intermediate.dense" if legacy else "mlp.fc1",
                "mlp.fc2": "output.dense" if legacy else "mlp.fc2",
            }
        )
    return {f"{at}{names[module]}.{kind}": value}
