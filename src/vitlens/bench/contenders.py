"""The libraries measured against each other, each holding the same weights as the vitlens model.

A contender is one library's model for one case: its plain forward, its way of returning maps
(when it has one), and its differentiable forward for training steps. Peers are optional: a
missing library only removes its rows.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..checkpoint import timm_kwargs, to_hf_config, to_hf_state_dict, to_timm_state_dict, to_torchvision_state_dict
from ..checkpoint.infer import plain_vit_problems
from ..checkpoint.timm_format import timm_class
from ..model import VisionTransformer

PEERS = ("timm", "hf", "torchvision", "vit_pytorch")


@dataclass
class Contender:
    """One library's model for one case: plain forward, and maps forward when it has one."""

    name: str
    model: nn.Module
    plain: Callable[[Tensor], Tensor]
    maps_all: Callable[[Tensor], Any] | None = None
    maps_last: Callable[[Tensor], Any] | None = None
    logits: Callable[[Tensor], Tensor] | None = None  # for training: the differentiable forward
    note: str = ""


def _is_plain_vit(model: VisionTransformer) -> bool:
    """True when the config is the original ViT (GELU, a classifier) that every peer library can express."""
    c = model.config
    return not plain_vit_problems(
        c, (("an activation other than GELU", c.act_layer != "gelu"), ("no head", not c.num_classes))
    )


def vitlens_contender(model: VisionTransformer) -> Contender:
    return Contender(
        "vitlens",
        model,
        plain=model,
        maps_all=lambda x: model(x, return_attention=True),
        maps_last=lambda x: model(x, return_attention=[-1]),
        logits=model,
    )


def timm_contender(model: VisionTransformer, timm_name: str | None = None) -> Contender:
    """timm's model with the same weights; maps through ``timm.utils.AttentionExtract``.

    A config timm's ``VisionTransformer`` expresses is built from its arguments; another (timm's
    Eva or Beit) is built by ``timm_name``, the timm model name of the case.
    """
    import timm
    from timm.models.vision_transformer import VisionTransformer as TimmViT
    from timm.utils import AttentionExtract

    if timm_class(model.config) == "VisionTransformer":
        peer = TimmViT(**timm_kwargs(model.config))
    elif timm_name is not None and timm.is_model(timm_name):
        c = model.config
        peer = timm.create_model(
            timm_name, pretrained=False, img_size=c.img_hw, num_classes=c.num_classes, depth=c.depth
        )
    else:
        raise ValueError(f"a timm {timm_class(model.config)} needs its timm model name to be built")
    peer.load_state_dict(to_timm_state_dict(model))
    peer = peer.to(**_placement(model)).train(model.training)
    # AttentionExtract reads the softmax output, which only the unfused path forms: unfuse every
    # block for all maps, only the last one for last-layer maps (the other blocks stay fused).
    unfused_all, unfused_last = copy.deepcopy(peer), copy.deepcopy(peer)
    for blk in unfused_all.blocks:
        blk.attn.fused_attn = False
    unfused_last.blocks[-1].attn.fused_attn = False
    last = len(peer.blocks) - 1
    extract_all = AttentionExtract(unfused_all, names=["*attn.attn_drop"], method="hook")
    extract_last = AttentionExtract(unfused_last, names=[f"blocks.{last}.attn.attn_drop"], method="hook")
    return Contender(
        "timm",
        peer,
        plain=peer,
        maps_all=extract_all,
        maps_last=extract_last,
        logits=peer,
        note="maps: AttentionExtract (hooks on attn_drop; only the blocks asked for run unfused)",
    )


def hf_contender(model: VisionTransformer) -> Contender:
    """Hugging Face ``ViTForImageClassification``: SDPA plain, eager + ``output_attentions`` for maps."""
    from transformers import ViTConfig as HFConfig
    from transformers import ViTForImageClassification

    hf_config = HFConfig(**to_hf_config(model.config))
    state = to_hf_state_dict(model)
    placement = _placement(model)

    def build(impl: str) -> nn.Module:
        m = ViTForImageClassification(hf_config)
        m.set_attn_implementation(impl)
        missing, unexpected = m.load_state_dict(state, strict=False)
        if [k for k in missing if "pooler" not in k] or unexpected:
            raise RuntimeError(f"Hugging Face key mismatch: missing {missing}, unexpected {unexpected}")
        return m.to(**placement).train(model.training)

    plain, eager = build("sdpa"), build("eager")

    def maps(x: Tensor) -> Any:
        out = eager(pixel_values=x, output_attentions=True)
        return out.logits, out.attentions

    return Contender(
        "hf",
        plain,
        plain=lambda x: plain(pixel_values=x).logits,
        maps_all=maps,
        maps_last=maps,
        logits=lambda x: plain(pixel_values=x).logits,
        note="maps: attn_implementation='eager' + output_attentions=True (always every layer)",
    )


def torchvision_contender(model: VisionTransformer) -> Contender:
    """torchvision's ``VisionTransformer`` (``nn.MultiheadAttention`` fast path; it cannot return maps)."""
    import torchvision

    c = model.config
    if c.img_hw[0] != c.img_hw[1]:
        raise ValueError("torchvision's VisionTransformer needs square images")
    peer = torchvision.models.VisionTransformer(
        image_size=c.img_hw[0],
        patch_size=c.patch_size,
        num_layers=c.depth,
        num_heads=c.num_heads,
        hidden_dim=c.embed_dim,
        mlp_dim=c.hidden_dim,
        num_classes=c.num_classes,
    )
    state = to_torchvision_state_dict(model)
    peer.load_state_dict(state)
    peer = peer.to(**_placement(model)).train(model.training)
    return Contender("torchvision", peer, plain=peer, logits=peer, note="cannot return attention maps")


def vit_pytorch_contender(model: VisionTransformer) -> Contender:
    """lucidrains' ``vit_pytorch.ViT`` of the same size, maps through its ``Recorder``.

    Its architecture differs (LayerNorms around the patch projection, no qkv bias), so it gets
    its own random weights: same shapes and matmul work, not the same numbers.
    """
    from vit_pytorch import ViT
    from vit_pytorch.recorder import Recorder

    c = model.config
    peer = ViT(
        image_size=c.img_hw,
        patch_size=c.patch_size,
        num_classes=c.num_classes,
        dim=c.embed_dim,
        depth=c.depth,
        heads=c.num_heads,
        mlp_dim=c.hidden_dim,
        channels=c.in_chans,
        dim_head=c.embed_dim // c.num_heads,
    )
    peer = peer.to(**_placement(model)).train(model.training)
    recorder = Recorder(peer)
    return Contender(
        "vit_pytorch",
        peer,
        plain=peer,
        maps_all=recorder,
        logits=peer,
        note="own weights (different layout); maps: Recorder (every layer)",
    )


_BUILDERS = {
    "timm": timm_contender,
    "hf": hf_contender,
    "torchvision": torchvision_contender,
    "vit_pytorch": vit_pytorch_contender,
}


def build_contenders(
    model: VisionTransformer, peers: Sequence[str], timm_name: str | None = None
) -> tuple[list[Contender], dict[str, str]]:
    """vitlens plus every peer that is installed and can express this config; and why others are missing.

    ``timm_name``: the timm model name of the case, for configs only timm's Eva or Beit hold.
    """
    unknown = [p for p in peers if p not in _BUILDERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {unknown}; expected some of {list(PEERS)}")
    contenders = [vitlens_contender(model)]
    skipped: dict[str, str] = {}
    for peer in peers:
        if peer != "timm" and not _is_plain_vit(model):
            skipped[peer] = "this config uses options the library lacks"
            continue
        try:
            contenders.append(timm_contender(model, timm_name) if peer == "timm" else _BUILDERS[peer](model))
        except ImportError as err:
            skipped[peer] = f"not installed ({err.name})"
    return contenders, skipped


def _placement(model: nn.Module) -> dict[str, Any]:
    """The device and dtype of ``model``, for moving a peer next to it."""
    p = next(model.parameters())
    return {"device": p.device, "dtype": p.dtype}


def check_same_outputs(contenders: Sequence[Contender], images: Tensor, atol: float = 1e-4) -> dict[str, float]:
    """Largest logit difference of each peer from vitlens; raises if weights were not carried over."""
    with torch.inference_mode():
        ref = contenders[0].plain(images)
        diffs = {}
        for c in contenders[1:]:
            if c.name == "vit_pytorch":  # own weights by design
                continue
            diff = (c.plain(images) - ref).abs().max().item()
            if diff > atol:
                raise RuntimeError(f"{c.name} logits differ from vitlens by {diff:.2e} (> {atol}): weights not copied")
            diffs[c.name] = diff
    return diffs
