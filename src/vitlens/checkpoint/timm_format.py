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
from . import labels, preprocessing, timm_eva
from .build import Reading, build
from .infer import config_from_state, ratio_for

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
    "proj_bias",
    "pool_include_prefix",
)
# timm VisionTransformer arguments that vitlens names otherwise.
_TIMM_RENAMED_ARGS = {"scale_attn_norm": "attn_norm", "scale_mlp_norm": "mlp_norm"}


def known_to_timm(name: str) -> bool:
    try:
        import timm
    except ImportError:
        return False
    return timm.is_model(name)


# Name prefixes of the ViT families timm registers (a file named after one reads with that model's hints).
_TIMM_VIT_PREFIXES = ("vit_", "deit", "eva", "beit", "aimv2_", "test_vit")


def name_in_path(path: Path) -> str | None:
    """A model name (with its pretrained tag, when the path spells one timm knows) that ``path`` spells."""
    for part in [path.stem, path.name, *(p.name for p in path.parents)][:6]:
        full = re.sub(r"-[0-9a-f]{6,}$", "", _HUB_PREFIX.sub("", part))  # torchvision-style hash suffix
        base, _, tag = full.partition(".")
        if base in PRESETS or (base.startswith(_TIMM_VIT_PREFIXES) and known_to_timm(base)):
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
    if not known_to_timm(base):
        raise ValueError(
            f"unknown model name {name!r}: not a vitlens preset (vitlens.list_models()) and not a timm model"
        )
    import timm

    with torch.device("meta"):
        model = timm.create_model(name if _timm_pretrained_cfg(name) is not None else base, pretrained=False)
    return hints_from_timm_module(model)


def config_from_timm_name(name: str, **overrides: Any) -> ViTConfig:
    """The config of the ViT timm registers as ``name`` (``NAME.TAG`` takes that tag's pre-processing).

    Built from timm's own definition on the meta device (no weights are made): its hints, and the
    shapes of its parameters.
    """
    import timm

    if not known_to_timm(name.split(".", 1)[0]):
        raise ValueError(f"unknown model name {name!r}: not a timm model")
    with torch.device("meta"):
        model = timm.create_model(name if _timm_pretrained_cfg(name) is not None else name.split(".", 1)[0])
    hints = hints_from_timm_module(model)
    state, _ = _vitlens_names(model, dict(model.state_dict()))
    return config_from_state(state, hints, overrides, f"timm {name}", "timm")


def hints_from_timm_config(data: dict[str, Any]) -> dict[str, Any]:
    """Hints from a timm Hub ``config.json`` (``architecture``, ``model_args``, ``pretrained_cfg``, label names)."""
    hints = hints_from_name(data["architecture"]) if data.get("architecture") else {}
    given = data.get("model_args") or {}
    model_args = {k: v for k, v in given.items() if k in _TIMM_ARGS}
    model_args.update({ours: given[theirs] for theirs, ours in _TIMM_RENAMED_ARGS.items() if theirs in given})
    if isinstance(model_args.get("img_size"), list):
        model_args["img_size"] = tuple(model_args["img_size"])
    hints.update(model_args)
    act = (data.get("model_args") or {}).get("act_layer")
    if act is not None:
        if act not in ("gelu", "gelu_tanh", "quick_gelu", "relu", "silu"):
            raise ValueError(
                f"timm act_layer {act!r} in model_args is not supported (gelu, gelu_tanh, quick_gelu, relu, silu are)"
            )
        hints["act_layer"] = act
    for key in ("global_pool", "num_classes"):
        if data.get(key) is not None:
            hints[key] = data[key]
    if data.get("pretrained_cfg"):
        hints.update(preprocessing.from_timm(data["pretrained_cfg"]))
    num_classes = int(hints.get("num_classes") or (data.get("pretrained_cfg") or {}).get("num_classes") or 0)
    hints["labels"] = labels.from_timm(data, num_classes)
    return hints


def _activation(act: nn.Module) -> str:
    """vitlens's name for a timm activation module; refused by name when there is none."""
    kind = type(act).__name__
    if kind == "GELU":  # torch's, or timm's own exact GELU
        return "gelu_tanh" if getattr(act, "approximate", "none") == "tanh" else "gelu"
    names = {"GELUTanh": "gelu_tanh", "QuickGELU": "quick_gelu", "ReLU": "relu", "SiLU": "silu"}
    if kind not in names:
        raise ValueError(f"timm activation {kind} is not supported (GELU, GELU-tanh, QuickGELU, ReLU, SiLU are)")
    return names[kind]


def _norm(norm: nn.Module) -> tuple[str, float]:
    """(vitlens norm kind, eps) of a timm norm module; refused by name when vitlens has no such norm."""
    kind = type(norm).__name__
    if isinstance(norm, nn.LayerNorm) and norm.bias is not None and norm.elementwise_affine:
        return "layernorm", float(norm.eps)
    if kind in ("RmsNorm", "RMSNorm") and getattr(norm, "weight", None) is not None:
        return "rmsnorm", float(norm.eps)
    raise ValueError(f"timm norm layer {kind} is not supported (LayerNorm with a bias, and RmsNorm, are)")


def _mlp(mlp: nn.Module) -> dict[str, Any]:
    """The MLP layout and activation of a timm ``Mlp``, ``GluMlp`` / ``SwiGLUPacked`` or ``SwiGLU``."""
    kind = type(mlp).__name__
    if kind == "Mlp":
        return dict(mlp_layer="mlp", act_layer=_activation(mlp.act))
    if kind == "GluMlp":  # packed: one fc1 gives both halves
        if mlp.gate_last:
            raise ValueError("timm GluMlp with the gate last is not supported (gate first, as SwiGLUPacked, is)")
        return dict(mlp_layer="swiglu_packed", act_layer=_activation(mlp.act))
    if kind == "SwiGLU":  # unpacked: fc1_g and fc1_x
        return dict(mlp_layer="swiglu", act_layer=_activation(mlp.act))
    raise ValueError(f"timm MLP type {kind} is not supported (Mlp, GluMlp / SwiGLUPacked and SwiGLU are)")


def hints_from_timm_module(model: nn.Module) -> dict[str, Any]:
    """What a live timm ViT says about itself beyond its weights; unsupported variants are refused."""
    kind = type(model).__name__
    if kind in ("VisionTransformer", "VisionTransformerDistilled"):
        hints = _vision_transformer_hints(model)
    elif kind == "Eva":
        hints = _eva_hints(model)
    elif kind == "Beit":
        hints = _beit_hints(model)
    else:
        raise ValueError(
            f"from_timm reads timm VisionTransformer, VisionTransformerDistilled, Eva and Beit, got {kind}"
        )
    if type(model.patch_embed).__name__ != "PatchEmbed":
        raise ValueError(
            f"timm patch embedding {type(model.patch_embed).__name__} (a convolutional stem or hybrid backbone) "
            "is not supported; vitlens cuts images into patches with one linear projection (PatchEmbed)"
        )
    norm_module, mlp = _norm_and_mlp(model.blocks[0])
    norm, eps = _norm(norm_module)
    img = model.patch_embed.img_size
    hints.update(
        norm_layer=norm,
        norm_eps=eps,
        global_pool=model.global_pool,
        fc_norm=not isinstance(model.fc_norm, nn.Identity),
        no_embed_class=bool(getattr(model, "no_embed_class", False)),
        img_size=int(img[0]) if img[0] == img[1] else (int(img[0]), int(img[1])),
        **({} if mlp is None else _mlp(mlp)),
    )
    if model.global_pool not in ("token", "avg", "map"):
        raise ValueError(
            f"timm global_pool={model.global_pool!r} is not supported; vitlens pools 'token', 'avg', 'map'"
        )
    pool = getattr(model, "attn_pool", None)
    if pool is not None:
        if type(pool).__name__ != "AttentionPoolLatent" or pool.latent_len != 1 or pool.pos_embed is not None:
            raise ValueError("timm's attention pool is supported as AttentionPoolLatent with one latent query")
        if _activation(pool.mlp.act) != hints["act_layer"]:
            raise ValueError("a timm attention pool whose MLP activation differs from the blocks' is not supported")
        if pool.num_heads != hints["num_heads"]:
            hints["attn_pool_num_heads"] = int(pool.num_heads)
    pretrained_cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    hints.update(preprocessing.from_timm(pretrained_cfg))
    hints["labels"] = labels.from_timm({"pretrained_cfg": pretrained_cfg}, int(model.num_classes))
    return hints


def _norm_and_mlp(block: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """A timm block's (first) input norm and MLP module; no MLP module for a parallel block (its MLP is
    parts of its own projections)."""
    if hasattr(block, "in_norm"):  # ParallelScalingBlock, DiffParallelScalingBlock
        return block.in_norm, None
    if hasattr(block, "attns"):  # ParallelThingsBlock: every branch is built alike
        return block.attns[0].norm, block.ffns[0].mlp
    return block.norm1, block.mlp


def _attention_hints(attn: nn.Module) -> dict[str, Any]:
    """``attn_layer`` of a timm ``VisionTransformer``'s attention; refused by name when vitlens has none."""
    kind = type(attn).__name__
    if kind == "DiffAttention":
        _refuse_dual_lambda(attn)
        return {"attn_layer": "diff"}
    if kind != "Attention":
        raise ValueError(f"timm attention {kind} is not supported (Attention and DiffAttention are)")
    return {"attn_layer": "attn"}


def _refuse_dual_lambda(module: nn.Module) -> None:
    """Differential attention (``DiffAttention``, ``DiffParallelScalingBlock``) with λ from two scalars is
    timm's own variant; vitlens has the paper's λ (four vectors)."""
    if module.dual_lambda:
        raise ValueError("timm differential attention with dual_lambda=True is not supported (the paper's λ is)")


def _parallel_hints(block: nn.Module) -> dict[str, Any]:
    """What a timm ``ParallelScalingBlock`` or ``DiffParallelScalingBlock`` says beyond its tensors (its norm
    and MLP are its own); the latter's one output projection over [attention, MLP] is read as two."""
    diff = type(block).__name__ == "DiffParallelScalingBlock"
    if block.out_proj is not None and not diff:
        raise ValueError(
            "timm ParallelScalingBlock with fuse_out_proj=True is not supported (separate projections are)"
        )
    if diff:
        _refuse_dual_lambda(block)
    hints: dict[str, Any] = dict(
        num_heads=int(block.num_heads),
        block_type="parallel",
        attn_layer="diff" if diff else "attn",
        mlp_layer="mlp",
        act_layer=_activation(block.mlp_act),
    )
    if not isinstance(block.ls, nn.Identity):
        hints["init_values"] = 1e-5
    return hints


def _vision_transformer_hints(model: nn.Module) -> dict[str, Any]:
    block = model.blocks[0]
    pool_include_prefix = bool(getattr(model, "pool_include_prefix", False))
    if type(block).__name__ in ("ParallelScalingBlock", "DiffParallelScalingBlock"):
        return {**_parallel_hints(block), "pool_include_prefix": pool_include_prefix}
    if type(block).__name__ == "ParallelThingsBlock":
        branch = block.attns[0]
        hints = dict(
            num_heads=int(branch.attn.num_heads), num_parallel=len(block.attns), **_attention_hints(branch.attn)
        )
        if not isinstance(branch.ls, nn.Identity):
            hints["init_values"] = 1e-5
        return {**hints, "pool_include_prefix": pool_include_prefix}
    block_types = {"Block": "pre_norm", "ResPostBlock": "post_norm"}
    if type(block).__name__ not in block_types:
        raise ValueError(
            f"timm block type {type(block).__name__} is not supported "
            "(Block, ResPostBlock, ParallelScalingBlock, DiffParallelScalingBlock and ParallelThingsBlock are)"
        )
    hints: dict[str, Any] = dict(
        num_heads=int(block.attn.num_heads),
        block_type=block_types[type(block).__name__],
        pool_include_prefix=pool_include_prefix,
        **_attention_hints(block.attn),
    )
    if hints["block_type"] == "pre_norm" and not isinstance(block.ls1, nn.Identity):
        hints["init_values"] = 1e-5
    return hints


def _beit_hints(model: nn.Module) -> dict[str, Any]:
    if model.rel_pos_bias is not None:
        raise ValueError("timm Beit with a relative position bias shared by all blocks is not supported (per block is)")
    block = model.blocks[0]
    hints: dict[str, Any] = dict(num_heads=int(block.attn.num_heads), k_bias=False)
    if block.gamma_1 is not None:
        hints["init_values"] = 1e-5
    return hints


def _eva_hints(model: nn.Module) -> dict[str, Any]:
    block = model.blocks[0]
    block_types = {"EvaBlock": "pre_norm", "EvaBlockPostNorm": "post_norm"}
    if type(block).__name__ not in block_types:
        raise ValueError(
            f"timm Eva block type {type(block).__name__} is not supported (EvaBlock, EvaBlockPostNorm are)"
        )
    hints: dict[str, Any] = dict(
        block_type=block_types[type(block).__name__],
        pool_include_prefix=model.global_pool == "map",  # Eva's attention pool reads every token
        **timm_eva.attention_hints(model),
        **timm_eva.rope_hints(model.rope, block.attn),
    )
    if getattr(block, "gamma_1", None) is not None:
        hints["init_values"] = 1e-5
        hints["attn_only_layer_scale"] = block.gamma_2 is None
    return hints


def read_timm_module(model: nn.Module) -> Reading:
    """A live timm ViT's weights under vitlens's names, with what the module says about itself."""
    hints = hints_from_timm_module(model)
    state, origin = _vitlens_names(model, {k: v.detach() for k, v in model.state_dict().items()})
    return Reading(state, f"timm {type(model).__name__}", "timm", hints, origin=origin)


def _vitlens_names(model: nn.Module, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """A timm ViT's tensors under vitlens's names (Eva's and Beit's, parallel blocks' own), and a map back."""
    origin: dict[str, str] = {}
    if type(model).__name__ in ("Eva", "Beit"):
        state, origin = timm_eva.to_vitlens_names(state)
    if hasattr(model.blocks[0], "in_split"):  # ParallelScalingBlock, DiffParallelScalingBlock
        state, origin = _from_parallel_names(state, model.blocks[0].in_split[0])
    return state, origin


# a ParallelScalingBlock's own names -> vitlens's (in_proj and its bias are split: MLP rows first);
# a DiffParallelScalingBlock adds its differential attention's λ vectors and sub-norm
_PARALLEL = {
    "in_norm": "norm1",
    "q_norm": "attn.q_norm",
    "k_norm": "attn.k_norm",
    "attn_out_proj": "attn.proj",
    "mlp_out_proj": "mlp.fc2",
    "sub_norm": "attn.sub_norm",
    **{f"lambda_{v}": f"attn.lambda_{v}" for v in ("q1", "k1", "q2", "k2")},
}


def _from_parallel_names(state: dict[str, Tensor], hidden: int) -> tuple[dict[str, Tensor], dict[str, str]]:
    """timm ``ParallelScalingBlock`` tensors under vitlens's names: one in_proj is the MLP's fc1 and the qkv.

    A ``DiffParallelScalingBlock``'s one ``out_proj`` over [attention, MLP] becomes the attention's
    projection (with the bias) and the MLP's fc2 (a zero bias): the same sum.
    """
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        m = re.fullmatch(r"(blocks\.\d+)\.(\w+)\.?(.*)", key)
        if m is None:
            out[key] = value
            continue
        block, part, rest = m.groups()
        if part == "in_proj":
            pieces = (("mlp.fc1", value[:hidden]), ("attn.qkv", value[hidden:]))
        elif part == "mlp_bias":
            pieces = (("mlp.fc1", value),)
        elif part == "ls":  # one layer scale on the sum: the same scale on each branch
            pieces = (("ls1", value), ("ls2", value))
        elif part == "out_proj" and rest == "weight":  # columns: the attention's heads, then the MLP's units
            dim = value.shape[0]
            pieces = (("attn.proj", value[:, :dim]), ("mlp.fc2", value[:, dim:]))
        elif part == "out_proj":
            pieces = (("attn.proj", value), ("mlp.fc2", torch.zeros_like(value)))
        else:
            pieces = ((_PARALLEL.get(part, part), value),)
        for name, piece in pieces:
            new = f"{block}.{name}.{'bias' if part == 'mlp_bias' else rest}".rstrip(".")
            out[new], origin[new] = piece, key
    return out, origin


def _to_parallel_names(state: dict[str, Tensor], config: ViTConfig) -> dict[str, Tensor]:
    """vitlens's parallel blocks under timm's ``ParallelScalingBlock`` names, or ``DiffParallelScalingBlock``'s
    for differential attention (the inverse of the above)."""
    back = {v: k for k, v in _PARALLEL.items()}
    fused = config.attn_layer == "diff"  # one output projection
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        m = re.fullmatch(r"(blocks\.\d+)\.(.+?)(?:\.(weight|bias|gamma))?", key)
        if m is None:
            out[key] = value
            continue
        block, part, leaf = m.groups()
        if part == "ls2":  # ls2 equals ls1, which becomes the one scale
            continue
        name = part if fused and part in ("attn.proj", "mlp.fc2") else back.get(part, part)
        out[f"{block}.{name}" + (f".{leaf}" if leaf else "")] = value
    for i in range(config.depth):
        block = f"blocks.{i}"
        fc1, qkv = out.pop(f"{block}.mlp.fc1.weight"), out.pop(f"{block}.attn.qkv.weight")
        out[f"{block}.in_proj.weight"] = torch.cat([fc1, qkv])
        fc1_bias, qkv_bias = out.pop(f"{block}.mlp.fc1.bias", None), out.pop(f"{block}.attn.qkv.bias", None)
        if qkv_bias is not None:
            out[f"{block}.in_proj.bias"] = torch.cat([fc1_bias, qkv_bias])
        elif fc1_bias is not None:
            out[f"{block}.mlp_bias"] = fc1_bias
        if f"{block}.ls1.gamma" in out:
            out[f"{block}.ls.gamma"] = out.pop(f"{block}.ls1.gamma")
        if fused:
            weights = [out.pop(f"{block}.{n}.weight") for n in ("attn.proj", "mlp.fc2")]
            out[f"{block}.out_proj.weight"] = torch.cat(weights, dim=1)
            biases = [out.pop(f"{block}.{n}.bias", None) for n in ("attn.proj", "mlp.fc2")]
            if biases[0] is not None:
                out[f"{block}.out_proj.bias"] = biases[0] + biases[1]
    return out


def from_timm(model: nn.Module, **overrides: Any) -> VisionTransformer:
    """A vitlens model with the same weights as the timm ViT ``model`` (bit-exact)."""
    return build(read_timm_module(model), **overrides)


def timm_class(config: ViTConfig) -> str:
    """The timm model class that holds this config: ``Beit`` for its relative position bias, ``Eva`` for
    rotary embeddings and EVA's attention, else ``VisionTransformer``."""
    c = config
    if c.rel_pos_bias:
        return "Beit"
    eva = c.rope != "none" or not c.k_bias or not c.qkv_fused or c.num_kv_heads is not None or c.attn_only_layer_scale
    return "Eva" if eva else "VisionTransformer"


def to_timm_state_dict(model: VisionTransformer) -> dict[str, Tensor]:
    """The weights under timm's names; ``timm.create_model(name).load_state_dict`` takes them as they are.

    vitlens's names are timm's ``VisionTransformer``'s; a model of timm's ``Eva`` family gets Eva's.
    """
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if timm_class(model.config) in ("Eva", "Beit"):  # Beit names layer scale and biases as Eva does
        return timm_eva.to_eva_names(state, model.config)
    if model.config.block_type == "parallel":
        return _to_parallel_names(state, model.config)
    return state


def timm_kwargs(config: ViTConfig) -> dict[str, Any]:
    """Keyword arguments for ``timm.models.vision_transformer.VisionTransformer`` with this config.

    The norm, MLP and block layers are timm's own classes (bound to the eps); a config timm's
    ``VisionTransformer`` cannot express is refused with what is in the way.
    """
    from functools import partial

    from timm.layers import Mlp, RmsNorm, SwiGLU, SwiGLUPacked
    from timm.models.vision_transformer import (
        Block,
        DiffParallelScalingBlock,
        ParallelScalingBlock,
        ParallelThingsBlock,
        ResPostBlock,
    )

    c = config
    problems = [
        name
        for name, present in (
            ("a distillation token (timm's VisionTransformerDistilled)", c.distilled),
            (f"position embeddings {c.pos_embed!r}", c.pos_embed == "sincos2d"),
            (f"norm_layer {c.norm_layer!r}", c.norm_layer == "none"),
            ("a patch bias that does not follow pre_norm (timm ties the two)", c.patch_bias == c.pre_norm),
            (
                "an attention pool with its own head count or width",
                bool(c.attn_pool_num_heads or c.attn_pool_mlp_ratio),
            ),
            ("layer scale in post-norm blocks", bool(c.init_values) and c.block_type == "post_norm"),
            (
                "parallel blocks with a gated MLP or inner norms (ParallelScalingBlock has neither)",
                c.block_type == "parallel" and (c.mlp_layer != "mlp" or c.attn_norm or c.mlp_norm),
            ),
            (
                "parallel blocks whose MLP bias differs from the projections' (ParallelScalingBlock ties them)",
                c.block_type == "parallel" and not c.qkv_bias and not c.proj_bias,
            ),
        )
        if present
    ]
    if problems:
        raise ValueError(f"timm's VisionTransformer cannot express this config: it has {', '.join(problems)}")
    norm = partial(nn.LayerNorm if c.norm_layer == "layernorm" else RmsNorm, eps=c.norm_eps)
    mlp = {"mlp": Mlp, "swiglu_packed": SwiGLUPacked, "swiglu": SwiGLU}[c.mlp_layer]
    kwargs = dict(
        img_size=c.img_hw,
        patch_size=c.patch_size,
        in_chans=c.in_chans,
        num_classes=c.num_classes,
        global_pool=c.global_pool,
        embed_dim=c.embed_dim,
        depth=c.depth,
        num_heads=c.num_heads,
        mlp_ratio=ratio_for(c.hidden_dim, c.embed_dim),
        qkv_bias=c.qkv_bias,
        qk_norm=c.qk_norm,
        scale_attn_norm=c.attn_norm,
        scale_mlp_norm=c.mlp_norm,
        proj_bias=c.proj_bias,
        init_values=c.init_values,
        class_token=c.class_token,
        pos_embed=c.pos_embed,
        no_embed_class=c.no_embed_class,
        reg_tokens=c.reg_tokens,
        pre_norm=c.pre_norm,
        final_norm=c.final_norm,
        fc_norm=c.use_fc_norm,
        pool_include_prefix=c.pool_include_prefix,
        act_layer=c.act_layer,
        norm_layer=norm,
        mlp_layer=mlp,
        block_fn={"pre_norm": Block, "post_norm": ResPostBlock, "parallel": ParallelScalingBlock}[c.block_type],
    )
    if c.block_type == "parallel" and c.attn_layer == "diff":
        kwargs["block_fn"] = DiffParallelScalingBlock
    elif c.attn_layer == "diff":
        kwargs["attn_layer"] = "diff"
    if c.num_parallel > 1:
        kwargs["block_fn"] = partial(ParallelThingsBlock, num_parallel=c.num_parallel)
    if c.patch_norm:
        kwargs["embed_norm_layer"] = norm
    return kwargs


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
    from timm.layers import Mlp
    from timm.models.vision_transformer import Block

    classes = [k for k in ("mlp_layer", "block_fn", "embed_norm_layer") if kwargs.get(k) not in (None, Mlp, Block)]
    if classes or config.norm_layer != "layernorm":
        raise ValueError(
            f"a timm config.json cannot carry {', '.join(classes) or 'norm_layer ' + config.norm_layer!r} "
            "(they are classes, not JSON); export a single weight file (DST ending in .safetensors)"
        )
    for key in ("norm_layer", "mlp_layer", "block_fn"):
        kwargs.pop(key)
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
