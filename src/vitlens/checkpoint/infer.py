"""Build a ViTConfig from a timm-named state dict: shapes decide what they can, hints the rest.

Whatever the tensor shapes fix (width, depth, patch size, patch grid, classes, registers, layer
scale, which norms exist) is read from them. What they cannot fix (the number of heads, the
pooling rule when a class token exists, norm eps, the activation) must come from a hint: a
source-library config, a preset / model name, or an explicit argument. Nothing is guessed.
"""

from __future__ import annotations

import math
import re
from typing import Any

from torch import Tensor

from ..config import PRESETS, ViTConfig
from .files import CheckpointError

_BLOCK = re.compile(r"^blocks\.(\d+)\.")
# a multi-branch block's first branches (timm's ParallelThingsBlock) under a plain block's names
_FIRST_BRANCH = re.compile(r"^(blocks\.\d+\.)((?:attns|ffns)\.0\.(?:norm|attn|ls|mlp))\.")
_BRANCH_AS = {
    "attns.0.norm": "norm1",
    "attns.0.attn": "attn",
    "attns.0.ls": "ls1",
    "ffns.0.norm": "norm2",
    "ffns.0.mlp": "mlp",
    "ffns.0.ls": "ls2",
}


def _need(state: dict[str, Tensor], key: str, where: str, source_key: str | None = None) -> Tensor:
    if key not in state:
        raise CheckpointError(f"{where}: missing key {source_key or key!r}, which every ViT checkpoint has")
    return state[key]


def ratio_for(width: int, dim: int) -> float:
    """A ratio r with ``int(dim * r) == width`` in floating point (timm sizes hidden layers so)."""
    ratio = width / dim
    while int(dim * ratio) < width:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def _grid_from_hint(num_patches: int, hint: Any, patch: int) -> tuple[int, int] | None:
    """The hinted image size's grid when it has ``num_patches`` patches, else a square grid or None."""
    if hint is not None:
        h, w = (hint, hint) if isinstance(hint, int) else tuple(hint)
        if (h // patch) * (w // patch) == num_patches:
            return h // patch, w // patch
    if _is_square(num_patches):
        side = math.isqrt(num_patches)
        return side, side
    return None


def _size_of(grid: tuple[int, int], hint: Any, patch: int) -> int | tuple[int, int]:
    """The image size of ``grid``: the hinted size when it floors to that grid (SigLIP-so400m's 384
    with 14-pixel patches), else whole patches."""
    if hint is not None:
        h, w = (hint, hint) if isinstance(hint, int) else tuple(hint)
        if (h // patch, w // patch) == tuple(grid):
            return hint if isinstance(hint, int) else (int(h), int(w))
    return grid[0] * patch if grid[0] == grid[1] else (grid[0] * patch, grid[1] * patch)


def _through_first_branch(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with a multi-branch model's first branches also under a plain block's names
    (``blocks.i.attns.0.attn.*`` as ``blocks.i.attn.*``...), so that one set of rules reads both."""
    aliases = {}
    for key, value in state.items():
        if m := _FIRST_BRANCH.match(key):
            aliases[m.group(1) + _BRANCH_AS[m.group(2)] + key[m.end(2) :]] = value
    return {**state, **aliases}


def shape_facts(state: dict[str, Tensor], hints: dict[str, Any], where: str) -> dict[str, Any]:
    """Config fields that the tensors themselves determine."""
    branches = len({k.split(".")[3] for k in state if k.startswith("blocks.0.attns.")})
    state = _through_first_branch(state) if branches else state
    proj = _need(state, "patch_embed.proj.weight", where)
    if proj.dim() != 4 or proj.shape[2] != proj.shape[3]:
        raise CheckpointError(
            f"{where}: patch_embed.proj.weight {tuple(proj.shape)} is not a square (D, C, p, p) patch kernel"
        )
    dim, chans, patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
    blocks = {int(m.group(1)) for k in state if (m := _BLOCK.match(k))}
    if not blocks:
        raise CheckpointError(f"{where}: no transformer blocks (keys blocks.<i>.*) found")
    unpacked = "blocks.0.mlp.fc1_g.weight" in state  # SwiGLU with its two first layers apart
    fc1 = _need(state, "blocks.0.mlp.fc1_g.weight" if unpacked else "blocks.0.mlp.fc1.weight", where)
    fc2 = _need(state, "blocks.0.mlp.fc2.weight", where)
    hidden, fc2_in = int(fc1.shape[0]), int(fc2.shape[1])
    facts: dict[str, Any] = dict(
        embed_dim=dim,
        in_chans=chans,
        patch_size=patch,
        depth=max(blocks) + 1,
        patch_bias="patch_embed.proj.bias" in state,
        patch_norm="patch_embed.norm.weight" in state,
        qkv_bias="blocks.0.attn.qkv.bias" in state or "blocks.0.attn.q_bias" in state,
        k_bias="blocks.0.attn.q_bias" not in state,  # q and v biases without a key bias (EVA, BEiT)
        rel_pos_bias="blocks.0.attn.relative_position_bias_table" in state,
        qk_norm="blocks.0.attn.q_norm.weight" in state,
        attn_layer="diff" if "blocks.0.attn.lambda_q1" in state else "attn",  # differential attention's λ
        num_parallel=max(branches, 1),
        attn_norm="blocks.0.attn.norm.weight" in state,
        proj_bias="blocks.0.attn.proj.bias" in state,
        mlp_norm="blocks.0.mlp.norm.weight" in state,
        class_token="cls_token" in state,
        distilled="dist_token" in state,
        reg_tokens=int(state["reg_token"].shape[1]) if "reg_token" in state else 0,
        pre_norm="norm_pre.weight" in state,
        fc_norm="fc_norm.weight" in state,
        final_norm="norm.weight" in state or "fc_norm.weight" in state,
        num_classes=int(state["head.weight"].shape[0]) if "head.weight" in state else 0,
    )
    if "head.weight" in state:
        facts["head_bias"] = "head.bias" in state
        if int(state["head.weight"].shape[1]) == 2 * dim:  # the class token beside the patch mean (DINOv2)
            facts["global_pool"] = "token_avg"
        if facts["distilled"]:
            facts["dist_head"] = "head_dist.weight" in state
    if unpacked:
        facts["mlp_layer"] = "swiglu"
    elif hidden == 2 * fc2_in:
        facts["mlp_layer"] = "swiglu_packed"
    elif hints.get("mlp_layer", "mlp") != "mlp":
        raise CheckpointError(
            f"{where}: the hints say mlp_layer={hints['mlp_layer']!r} but blocks.0.mlp.fc1/fc2 {tuple(fc1.shape)}/"
            f"{tuple(fc2.shape)} are an ungated MLP; pass mlp_layer='mlp' and the right act_layer"
        )
    else:
        facts["mlp_layer"] = "mlp"
    if facts["mlp_layer"] == "swiglu_packed" and hints.get("act_layer") not in ("silu", "gelu", "gelu_tanh"):
        facts["act_layer"] = "silu"  # a packed gated unit without a hint: SwiGLU, DINOv2-giant's
    if hidden % dim == 0:
        facts["mlp_ratio"], facts["mlp_dim"] = float(hidden // dim), None
    else:
        facts["mlp_dim"] = hidden
    if "attn_pool.latent" in state:
        facts["global_pool"] = "map"
        pool_hidden = int(_need(state, "attn_pool.mlp.fc1.weight", where).shape[0])
        same = int(dim * facts.get("mlp_ratio", 0.0)) == pool_hidden  # timm: int(dim * ratio) hidden units
        facts["attn_pool_mlp_ratio"] = None if same else ratio_for(pool_hidden, dim)
    facts["init_values"] = (hints.get("init_values") or 1e-5) if "blocks.0.ls1.gamma" in state else None
    facts.update(_position_facts(state, facts, hints, where))
    return facts


def _position_facts(state: dict[str, Tensor], facts: dict[str, Any], hints: dict[str, Any], where: str) -> dict:
    patch = facts["patch_size"]
    prefix = int(facts["class_token"]) + int(facts["distilled"]) + facts["reg_tokens"]
    if "pos_embed" not in state:
        table = state.get("blocks.0.attn.relative_position_bias_table")
        if table is not None:  # BEiT: the relative position table fixes the grid, (2 side - 1)^2 + 3 offsets
            side = (math.isqrt(int(table.shape[0]) - 3) + 1) // 2
            grid = _grid_from_hint(side * side, hints.get("img_size"), patch)
            if (2 * grid[0] - 1) * (2 * grid[1] - 1) + 3 == int(table.shape[0]):
                return dict(pos_embed="none", img_size=_size_of(grid, hints.get("img_size"), patch))
        return dict(pos_embed="none", img_size=hints.get("img_size", 224))
    length = int(state["pos_embed"].shape[1])
    # The prefix tokens either have their own positions or not (no_embed_class): a hint decides
    # when its reading fits the length; otherwise only one reading may fit.
    fits = {
        flag: _grid_from_hint(length - (0 if flag else prefix), hints.get("img_size"), patch) is not None
        for flag in (False, True)
    }
    hinted = hints.get("no_embed_class")
    if prefix == 0 or (hinted is not None and fits[bool(hinted)]):
        no_embed_class = bool(hinted)
    elif fits[False] and fits[True]:
        raise CheckpointError(
            f"{where}: pos_embed of length {length} fits a grid both with and without positions for the "
            f"{prefix} prefix token(s); pass no_embed_class=True or False (or preset=)"
        )
    else:
        no_embed_class = fits[True]
    num_patches = length - (0 if no_embed_class else prefix)
    grid = _grid_from_hint(num_patches, hints.get("img_size"), patch)
    if grid is None:
        raise CheckpointError(
            f"{where}: pos_embed {tuple(state['pos_embed'].shape)} holds {num_patches} patch positions, "
            "which is not a square grid; pass preset= naming a model of that native image size"
        )
    return dict(pos_embed="learn", no_embed_class=no_embed_class, img_size=_size_of(grid, hints.get("img_size"), patch))


def presets_like(facts: dict[str, Any]) -> list[str]:
    """Preset names with the same width and patch size (to suggest in error messages)."""
    keys = ("embed_dim", "patch_size")
    return [n for n, p in PRESETS.items() if all(p.get(k, getattr(ViTConfig, k)) == facts[k] for k in keys)]


def config_from_state(
    state: dict[str, Tensor], hints: dict[str, Any], overrides: dict[str, Any], where: str, source: str
) -> ViTConfig:
    """The config of the network stored in ``state``: shapes first, then ``hints``, ``overrides`` last.

    ``overrides`` never contains ``img_size``: a new image size is a resampling target,
    handled after the stored weights are understood.
    """
    facts = shape_facts(state, {**hints, **overrides}, where)
    merged = {**hints, **facts, **overrides}
    if "num_heads" not in merged:
        like = presets_like(facts)
        hint = f" or preset= (presets of this shape: {', '.join(like[:4])})" if like else " or preset=<timm name>"
        if source == "torchvision":
            hint += " (or keep torchvision's builder name in the file name: vit_b_16..., vit_l_16..., vit_h_14...)"
        divisors = [h for h in (1, 2, 3, 4, 6, 8, 12, 16, 24) if facts["embed_dim"] % h == 0]
        raise CheckpointError(
            f"{where}: cannot determine num_heads: a {source} state dict fixes embed_dim={facts['embed_dim']} "
            f"but not how it splits into heads (divisors: {divisors}). Pass num_heads={hint}."
        )
    if not facts["class_token"] and "global_pool" not in overrides and facts.get("global_pool") != "map":
        merged["global_pool"] = "avg"  # without a class token (and no attention pool), average pooling
    if "global_pool" not in merged:
        if not facts["class_token"]:
            merged["global_pool"] = "avg"
        else:
            raise CheckpointError(
                f"{where}: cannot determine the pooling of a {source} state dict with a class token "
                "(timm allows both). Pass global_pool='token' or 'avg', or preset=<timm name>."
            )
    elif (
        facts["fc_norm"]
        and merged["global_pool"] == "token"
        and hints.get("fc_norm") is None
        and "global_pool" not in overrides
    ):
        raise CheckpointError(
            f"{where}: the checkpoint has fc_norm (timm's sign of average pooling) but the preset says "
            "global_pool='token'; pass global_pool='avg' or global_pool='token' to decide"
        )
    labels = merged.get("labels")
    if labels is not None and len(labels) != merged.get("num_classes", facts["num_classes"]):
        merged["labels"] = None  # names for another head (e.g. a backbone saved without its classifier)
    return ViTConfig.from_dict(merged)


def plain_vit_problems(
    config: ViTConfig, extra: tuple[tuple[str, bool], ...] = (), allow: frozenset[str] = frozenset()
) -> list[str]:
    """What ``config`` has that the original ViT cannot hold (empty: it is the original ViT).

    Hugging Face's ``ViTModel`` and torchvision's ``VisionTransformer`` are the original ViT:
    class token, learned positions, pre-norm blocks with biases, final LayerNorm, token pooling.
    ``extra`` adds (description, present) pairs a caller also rules out; ``allow`` names the
    config fields a caller's format does hold (DeiT's ``distilled``, DINOv2's ``init_values``...).
    """
    c = config
    kv = c.num_kv_heads if isinstance(c.num_kv_heads, tuple) else (c.num_kv_heads,)
    checks = (
        ("distilled", "a distillation token", c.distilled),
        ("reg_tokens", "register tokens", bool(c.reg_tokens)),
        ("init_values", "layer scale", bool(c.init_values)),
        ("qk_norm", "qk_norm", c.qk_norm),
        ("pre_norm", "pre_norm", c.pre_norm),
        ("global_pool", f"global_pool={c.global_pool!r} / fc_norm", c.global_pool != "token" or c.use_fc_norm),
        ("final_norm", "no final norm", not c.final_norm),
        ("patch_bias", "a patch projection without bias", not c.patch_bias),
        ("pos_embed", f"position embeddings {c.pos_embed!r}", c.pos_embed != "learn"),
        ("no_embed_class", "prefix tokens without positions", c.no_embed_class),
        ("class_token", "no class token", not c.class_token),
        ("norm_layer", "no LayerNorm", c.norm_layer != "layernorm"),
        ("mlp_layer", f"a {c.mlp_layer} MLP", c.mlp_layer != "mlp"),
        ("attn_norm", "norms inside the attention or MLP", c.attn_norm or c.mlp_norm),
        ("proj_bias", "projections without bias", not c.proj_bias),
        ("patch_norm", "a norm on the patch embeddings", c.patch_norm),
        ("block_type", f"{c.block_type.replace('_', '-')} blocks", c.block_type != "pre_norm"),
        ("rope", f"rotary position embeddings ({c.rope})", c.rope != "none"),
        ("rel_pos_bias", "a relative position bias", c.rel_pos_bias),
        ("k_bias", "q and v biases without a k bias", c.qkv_bias and not c.k_bias),
        (
            "head_dim",
            f"head_dim={c.head_dim} beside embed_dim / num_heads",
            c.head_dim not in (None, c.embed_dim // c.num_heads),
        ),
        ("num_kv_heads", "grouped key/value heads", any(n not in (None, c.num_heads) for n in kv)),
        ("head_bias", "a head without bias", not c.head_bias and bool(c.num_classes)),
    )
    found = [text for name, text, present in checks if present and name not in allow]
    return found + [text for text, present in extra if present]


def require_plain_vit(
    config: ViTConfig, library: str, extra: tuple[tuple[str, bool], ...] = (), allow: frozenset[str] = frozenset()
) -> None:
    """Raise ``ValueError`` listing what ``config`` has that the original ViT of ``library`` cannot hold."""
    problems = plain_vit_problems(config, extra, allow)
    if problems:
        raise ValueError(f"a {library} cannot hold this model: it has {', '.join(problems)}")
