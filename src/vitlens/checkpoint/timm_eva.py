"""timm's ``Eva`` family (EVA-02, DINOv3, Perception Encoder, Sapiens2, ...): hints and key names.

``Eva`` is timm's ViT with rotary position embeddings. Its differences from vitlens's layout are
names only: layer scale is ``gamma_1`` / ``gamma_2`` (vitlens: ``ls1.gamma`` / ``ls2.gamma``), and
q, k and v may be stored as three layers ``q_proj`` / ``k_proj`` / ``v_proj`` (vitlens keeps one
``qkv``; the split is remembered in ``qkv_fused``); EVA's attention has q and v biases and none
for k (``k_bias=False``). The rotary embedding's settings are read from the model's ``rope``.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn

from ..config import ViTConfig

_GAMMA = re.compile(r"^(blocks\.\d+\.)gamma_([12])$")
_SPLIT = re.compile(r"^(blocks\.\d+\.attn\.)([qkv])_proj\.(weight|bias)$")


def rope_hints(rope: nn.Module | None, attn: nn.Module) -> dict[str, Any]:
    """ViTConfig's ``rope*`` fields from an ``Eva`` model's rotary embedding module."""
    if rope is None:
        return {"rope": "none"}
    kind = type(rope).__name__
    if kind not in ("RotaryEmbeddingCat", "RotaryEmbeddingDinoV3", "RotaryEmbeddingMixed"):
        raise ValueError(
            f"timm rotary embedding {kind} is not supported "
            "(RotaryEmbeddingCat, RotaryEmbeddingDinoV3 and RotaryEmbeddingMixed are)"
        )
    half = bool(getattr(rope, "rotate_half", False))
    if half != bool(getattr(attn, "rotate_half", False)):
        raise ValueError("timm Eva whose rotary embedding and attention disagree on the rotation layout")
    if kind == "RotaryEmbeddingMixed":  # learned frequencies (rope.freqs) on integer coordinates
        return dict(rope="mixed", rope_temperature=float(rope.temperature), rope_grid_indexing=rope.grid_indexing)
    common = dict(
        rope_grid_offset=float(rope.grid_offset), rope_grid_indexing=rope.grid_indexing, rope_rotate_half=half
    )
    if kind == "RotaryEmbeddingCat":
        if rope.grid_type != "index" or rope.in_pixels:
            raise ValueError(f"timm RotaryEmbeddingCat on a {rope.grid_type!r} grid is not supported (index is)")
        ref = tuple(int(s) for s in rope.ref_feat_shape) if rope.ref_feat_shape is not None else None
        return dict(rope="axial", rope_temperature=float(rope.temperature), rope_ref_grid=ref, **common)
    periods = None  # RotaryEmbeddingDinoV3
    if rope.min_period is not None and rope.max_period is not None:
        periods = (float(rope.min_period), float(rope.max_period))
    temperature = float(rope.temperature) if rope.temperature is not None else 100.0
    return dict(
        rope="dinov3",
        rope_temperature=temperature,
        rope_periods=periods,
        rope_normalize=rope.normalize_coords,
        **common,
    )


def attention_hints(model: nn.Module) -> dict[str, Any]:
    """Head layout, biases and grouped-query heads of an ``Eva``'s attention, refused where vitlens has none."""
    blocks = model.blocks
    attn = blocks[0].attn
    kind = type(attn).__name__
    if kind not in ("EvaAttention", "AttentionRope"):
        raise ValueError(f"timm attention {kind} is not supported (EvaAttention and AttentionRope are)")
    if any(getattr(b.attn, "gate", None) is not None for b in blocks):
        raise ValueError("timm's gated attention (gated_attn) is not supported")
    kv = tuple(int(getattr(b.attn, "num_kv_heads", b.attn.num_heads)) for b in blocks)
    heads = int(attn.num_heads)
    hints: dict[str, Any] = dict(
        num_heads=heads,
        qkv_fused=attn.qkv is not None,
        k_bias=kind == "AttentionRope",  # EVA's own attention has no key bias
        num_kv_heads=None if set(kv) == {heads} else (kv[0] if len(set(kv)) == 1 else kv),
    )
    if int(attn.head_dim) * heads != int(model.embed_dim):
        hints["head_dim"] = int(attn.head_dim)
    return hints


def to_vitlens_names(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """An ``Eva`` state dict under vitlens's names, and a map back to the source's names (for messages)."""
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    split: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in state.items():
        if m := _GAMMA.match(key):
            new = f"{m.group(1)}ls{m.group(2)}.gamma"
        elif m := _SPLIT.match(key):
            split.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
            continue
        else:
            new = key
        out[new], origin[new] = value, key
    for (prefix, kind), parts in split.items():
        if kind == "weight":
            out[prefix + "qkv.weight"] = torch.cat([parts[p] for p in "qkv"])
            origin[prefix + "qkv.weight"] = prefix + "{q,k,v}_proj.weight"
        elif "k" in parts:  # a key bias too: one qkv bias
            out[prefix + "qkv.bias"] = torch.cat([parts[p] for p in "qkv"])
            origin[prefix + "qkv.bias"] = prefix + "{q,k,v}_proj.bias"
        else:  # EVA: q and v biases only
            out[prefix + "q_bias"], out[prefix + "v_bias"] = parts["q"], parts["v"]
            origin[prefix + "q_bias"], origin[prefix + "v_bias"] = prefix + "q_proj.bias", prefix + "v_proj.bias"
    return out, origin


def to_eva_names(state: dict[str, Tensor], config: ViTConfig) -> dict[str, Tensor]:
    """The inverse of :func:`to_vitlens_names`: vitlens's keys under ``Eva``'s."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        m = re.match(r"^(blocks\.(\d+)\.)(ls([12])\.gamma|attn\.(qkv\.weight|qkv\.bias|q_bias|v_bias))$", key)
        if m is None:
            out[key] = value
        elif m.group(4):
            out[f"{m.group(1)}gamma_{m.group(4)}"] = value
        elif config.qkv_fused:
            out[key] = value
        else:
            block = int(m.group(2))
            heads = (config.num_heads, config.kv_heads_per_block[block], config.kv_heads_per_block[block])
            sizes = [h * config.attn_head_dim for h in heads]
            name = m.group(5)
            if name in ("qkv.weight", "qkv.bias"):
                kind = name.split(".")[1]
                for part, tensor in zip("qkv", value.split(sizes)):
                    out[f"{m.group(1)}attn.{part}_proj.{kind}"] = tensor.clone()
            else:
                out[f"{m.group(1)}attn.{name[0]}_proj.bias"] = value
    return out
