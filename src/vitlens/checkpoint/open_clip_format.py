"""OpenCLIP image towers read into vitlens: its own ViT, and timm trunks (SigLIP, EVA...).

OpenCLIP's ``VisionTransformer`` is a pre-norm ViT (``ln_pre``) whose blocks use
``nn.MultiheadAttention`` (``in_proj_weight`` is q, k and v stacked, as vitlens's ``qkv``); the
pooled token goes through ``ln_post`` and is multiplied by ``proj`` (D, E) — vitlens's head
without bias. A ``TimmModel`` tower is a timm trunk read by the timm reader, with OpenCLIP's
linear projection (if any) as the head. ``model(x)`` then equals ``encode_image(x)`` before
normalisation. Input sizes other than the tower's are resampled as OpenCLIP's
``resize_pos_embed`` does when it loads weights at another size (bicubic with antialias).

Refused, by name: CoCa's attentional pooler, the custom blocks (scaled cosine attention, head
scaling, qk-norm), MLP projections and ResNet towers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..model import VisionTransformer
from . import preprocessing
from .build import Reading, build
from .files import CheckpointError, read_state_dict
from .text_towers import OpenClipText
from .timm_format import read_timm_module

_BLOCK_RENAMES = {
    "ln_1": "norm1",
    "ln_2": "norm2",
    "attn.in_proj_weight": "attn.qkv.weight",
    "attn.in_proj_bias": "attn.qkv.bias",
    "attn.out_proj": "attn.proj",
    "ls_1": "ls1",
    "ls_2": "ls2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}


def _visual(model: nn.Module) -> nn.Module:
    visual = getattr(model, "visual", model)
    kind = type(visual).__name__
    if kind not in ("VisionTransformer", "TimmModel") or not hasattr(
        visual, "proj" if kind != "TimmModel" else "trunk"
    ):
        raise ValueError(
            f"from_open_clip reads OpenCLIP models (or their .visual) whose image tower is a VisionTransformer or "
            f"a timm trunk; got {type(model).__name__} with a {kind} tower"
        )
    return visual


def _activation(act: nn.Module) -> str:
    name = type(act).__name__
    if name == "QuickGELU":
        return "quick_gelu"
    if isinstance(act, nn.GELU):
        return "gelu_tanh" if act.approximate == "tanh" else "gelu"
    raise ValueError(f"OpenCLIP tower with activation {name}: vitlens reads GELU and QuickGELU towers")


def _rename(key: str) -> str:
    """An OpenCLIP ``VisionTransformer`` key under vitlens's name."""
    top = {
        "conv1.weight": "patch_embed.proj.weight",
        "class_embedding": "cls_token",
        "positional_embedding": "pos_embed",
    }
    if key in top:
        return top[key]
    for old, new in (("ln_pre.", "norm_pre."), ("ln_post.", "norm.")):
        if key.startswith(old):
            return new + key[len(old) :]
    if key.startswith("transformer.resblocks."):
        index, rest = key[len("transformer.resblocks.") :].split(".", 1)
        for old, new in _BLOCK_RENAMES.items():
            if rest == old or rest.startswith(old + "."):
                return f"blocks.{index}.{new}{rest[len(old) :]}"
    return key


def _read_native(visual: nn.Module) -> Reading:
    if getattr(visual, "attn_pool", None) is not None:
        raise ValueError("OpenCLIP towers with CoCa's attentional pooler are not supported")
    block = visual.transformer.resblocks[0]
    if type(block).__name__ != "ResidualAttentionBlock":
        raise ValueError(
            f"OpenCLIP block {type(block).__name__} (qk-norm, scaled cosine attention or head scaling) is not "
            "supported; the default ResidualAttentionBlock is"
        )
    if hasattr(block, "ln_1_kv"):
        raise ValueError("OpenCLIP cross-attention blocks are not supported")
    state: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in visual.state_dict().items():
        new, value = _rename(key), value.detach()
        if key == "class_embedding":
            value = value.view(1, 1, -1)
        elif key == "positional_embedding":
            value = value[None]
        elif key == "proj":
            new, value = "head.weight", value.t()
        state[new], origin[new] = value, key
    if visual.pool_type not in ("tok", "avg"):
        raise ValueError(f"OpenCLIP pool_type={visual.pool_type!r} is not supported ('tok' and 'avg' are)")
    if visual.final_ln_after_pool:
        state = {("fc_norm" + k[len("norm") :] if k.startswith("norm.") else k): v for k, v in state.items()}
    h, w = visual.image_size
    hints: dict[str, Any] = dict(
        num_heads=int(block.attn.num_heads),
        norm_eps=float(block.ln_1.eps),
        act_layer=_activation(block.mlp.gelu),
        global_pool="token" if visual.pool_type == "tok" else "avg",
        fc_norm=bool(visual.final_ln_after_pool),
        no_embed_class=False,
        img_size=int(h) if h == w else (int(h), int(w)),
        pos_embed_interp="timm",  # OpenCLIP's resize_pos_embed: bicubic, antialias
    )
    return Reading(state, f"OpenCLIP {type(visual).__name__}", "OpenCLIP", hints, origin=origin)


def _read_timm_tower(visual: nn.Module) -> Reading:
    reading = read_timm_module(visual.trunk)
    reading.where, reading.source = "OpenCLIP TimmModel", "OpenCLIP"
    layers = dict(visual.head.named_children())
    if set(layers) - {"drop", "proj"}:
        raise ValueError(f"OpenCLIP timm tower with head {sorted(layers)}: vitlens reads a linear projection or none")
    if "proj" in layers:
        if "head.weight" in reading.state:
            raise ValueError("OpenCLIP timm tower with both a trunk classifier and a projection is not supported")
        proj = layers["proj"]
        reading.state["head.weight"] = proj.weight.detach()
        if proj.bias is not None:
            reading.state["head.bias"] = proj.bias.detach()
    reading.hints["labels"] = None
    return reading


def read_open_clip(model: nn.Module, preprocess_cfg: dict[str, Any] | None = None) -> Reading:
    """An OpenCLIP model's image tower (see the module notes), with its pre-processing."""
    visual = _visual(model)
    reading = _read_timm_tower(visual) if type(visual).__name__ == "TimmModel" else _read_native(visual)
    if preprocess_cfg is None:
        preprocess_cfg = getattr(visual, "preprocess_cfg", None) or {}
    reading.hints.update(preprocessing.from_open_clip(preprocess_cfg))
    return reading


def from_open_clip(
    model: nn.Module, preprocess_cfg: dict[str, Any] | None = None, tokenizer: Any = None, **overrides: Any
) -> VisionTransformer:
    """A vitlens model whose ``model(x)`` equals OpenCLIP's ``encode_image(x)`` (before normalisation).

    ``model``: an OpenCLIP ``CLIP`` / ``CustomTextCLIP`` or its ``.visual``. ``preprocess_cfg``:
    OpenCLIP's image settings; by default the ones the factory attached to the model. A whole
    model keeps its text half as ``model.text_tower`` (a reference, not a copy), encoding with
    ``tokenizer`` (``open_clip.get_tokenizer(name)``; by default CLIP's byte-pair tokenizer).
    """
    reading = read_open_clip(model, preprocess_cfg)
    if hasattr(model, "encode_text"):
        reading.text_tower = OpenClipText(model, tokenizer)
    return build(reading, **overrides)


CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # safetensors first


def is_open_clip_folder(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file()


def _check_image_tensors(weights: Path) -> None:
    """Read ``weights`` with vitlens's own reader first: a pickle holding code is refused by name, and
    image-tower tensors stored as integers are refused before OpenCLIP would cast them to floats."""
    for key, tensor in read_state_dict(weights).items():
        if key.startswith("visual.") and not tensor.is_floating_point():
            raise CheckpointError(
                f"{weights}: tensor {key} {tuple(tensor.shape)} is stored as {tensor.dtype}; "
                "an image tower's weights are floating point"
            )


def read_folder(weights: Path) -> Reading:
    """An OpenCLIP folder (``open_clip_config.json`` beside the weights, as OpenCLIP pushes to the Hub).

    OpenCLIP builds the model from the config and reads the weights (weights only: no pickled code
    runs); its image tower is then read as :func:`from_open_clip` does.
    """
    try:
        import open_clip
    except ImportError as e:
        raise ImportError(
            f"{weights.parent} is an OpenCLIP model ({CONFIG_FILE}); reading it needs open-clip-torch: "
            "pip install 'vitlens[clip]'"
        ) from e
    _check_image_tensors(weights)
    try:
        model = open_clip.create_model(f"local-dir:{weights.parent}", load_weights=False)
        open_clip.load_checkpoint(model, str(weights), weights_only=True)
    except (RuntimeError, ValueError, KeyError, OSError) as e:
        first = str(e).strip().splitlines()[0][:300] if str(e) else type(e).__name__
        raise CheckpointError(f"{weights}: OpenCLIP could not build or load this model: {first}") from e
    reading = read_open_clip(model.eval())
    reading.where = str(weights)
    model.visual = None  # the image tower is vitlens's now; the text half stays for text targets
    folder = f"local-dir:{weights.parent}"
    reading.text_tower = OpenClipText(model, make_tokenizer=lambda: open_clip.get_tokenizer(folder))
    return reading
