"""Shared by the report tests: a small model with peaked attention, and reading a report's embedded data."""

from __future__ import annotations

import json
import re

import numpy as np
import torch

import vitlens
from vitlens.viz.report.encode import dequantize_rows, unpack_rows


def peaked_model(**overrides) -> vitlens.VisionTransformer:
    """A random 3-layer ViT on 32x32 images (4x4 patches) whose heads attend sharply, so maps differ."""
    config = dict(img_size=32, patch_size=8, in_chans=3, embed_dim=32, depth=3, num_heads=2, num_classes=5)
    model = vitlens.VisionTransformer(vitlens.ViTConfig(**{**config, **overrides}))
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight.normal_(std=0.6)
    return model.eval()


def embedded(html: str) -> tuple[dict, dict[str, str]]:
    """The report's metadata and its data chunks (id -> base64 text)."""
    meta = json.loads(re.search(r'<script type="application/json" id="vl-meta">(.*?)</script>', html, re.S).group(1))
    chunks = dict(re.findall(r'<script type="application/octet-stream" id="([^"]+)">([^<]*)</script>', html))
    return meta, chunks


def attention_chunk(meta: dict, chunks: dict[str, str], image: int, layer: int) -> np.ndarray:
    """Dequantized attention of one layer as (heads, tokens, patches)."""
    m = meta["model"]
    patches = m["grid"][0] * m["grid"][1]
    codes, scales = unpack_rows(chunks[f"vl-a-{image}-{layer}"], m["heads"] * m["tokens"], patches)
    return dequantize_rows(codes, scales).reshape(m["heads"], m["tokens"], patches)


def normalized(values: np.ndarray) -> np.ndarray:
    return values / values.max() if values.max() > 0 else values
