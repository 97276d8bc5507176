"""ViTConfig and the named presets: the one place where architecture numbers live.

Field names follow timm's ``VisionTransformer`` arguments so that a timm user can read a
config at a glance and so that checkpoints map onto it without translation tables.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POOLINGS = ("token", "avg", "map", "token_avg")
POS_EMBEDS = ("learn", "sincos2d", "none")
ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu", "relu", "silu")
MLP_LAYERS = ("mlp", "swiglu_packed", "swiglu")
NORMS = ("layernorm", "rmsnorm", "none")
BLOCK_TYPES = ("pre_norm", "post_norm", "parallel")
ATTN_LAYERS = ("attn", "diff")
ROPES = ("none", "axial", "dinov3", "mixed")
ROPE_NORMALIZATIONS = ("separate", "min", "max")
POS_INTERPOLATIONS = ("timm", "hf", "torchvision")
CROP_MODES = ("center", "squash", "border")
CROP_ROUNDINGS = ("round", "floor")


@dataclass
class ViTConfig:
    """Everything needed to build a :class:`vitlens.VisionTransformer`.

    Architecture fields use timm's names. ``mlp_dim`` (when set) overrides ``mlp_ratio`` with an
    exact hidden width (the first layer's output width). ``mlp_layer`` picks the feed-forward
    layout: ``'mlp'`` (fc1 -> act -> fc2), ``'swiglu_packed'`` (fc1 gives both halves of a gated unit:
    act(a) * b, DINOv2-giant) or ``'swiglu'`` (separate ``fc1_g`` / ``fc1_x``, AIMv2, EVA-02);
    ``mlp_norm`` puts a norm on the hidden units (timm's ``scale_mlp_norm``), ``attn_norm`` one on
    the heads' output before the projection (``scale_attn_norm``). ``norm_layer='none'`` removes every
    norm (only the seed model wants that). ``block_type='post_norm'`` normalizes each branch's output
    instead of its input (timm's ``ResPostBlock``); ``'parallel'`` runs attention and MLP side by side
    on one norm of the input, x + attn(n(x)) + mlp(n(x)) (ViT-22B; timm's ``ParallelScalingBlock``).
    ``num_parallel`` > 1 gives a pre-norm block that many attention branches, then as many MLP
    branches, each with its own norm and layer scale, summed (timm's ``ParallelThingsBlock``; its maps
    are the branches' heads side by side). ``attn_layer='diff'`` is differential attention (timm's
    ``DiffAttention``; see :class:`vitlens.layers.DiffAttention` for what its maps are).
    ``rope='mixed'`` is RoPE-Mixed: rotary frequencies learned per block and head (``rope.freqs``).
    ``global_pool='map'`` pools with a learned query
    attending over the tokens (SigLIP's attention pool); its maps come back as ``pool_attention``;
    ``'token_avg'`` feeds the head the class token and the patch mean side by side (DINOv2's linear
    classifier). ``distilled`` adds DeiT's distillation token, read by its own head unless
    ``dist_head=False``; ``head_bias=False`` is a projection without bias (CLIP's).
    ``pos_embed_interp`` picks whose resampling rule is used when the input grid differs from
    ``img_size`` (see :func:`vitlens.layers.resample_pos_embed`). The pre-processing fields
    (``image_mean``, ``image_std``, ``interpolation``, ``crop_pct``, ``crop_mode``, ``crop_rounding``)
    and ``labels`` describe how images must be prepared and what the classes are called; they do not
    change the network. ``crop_mode`` follows timm: ``'center'`` resizes the short side to
    ``img_size / crop_pct`` and centre-crops; ``'squash'`` resizes both sides to it, ignoring the
    aspect ratio (Hugging Face ViT); ``'border'`` fits the long side and pads the rest with the mean
    colour. ``crop_rounding`` says how an odd margin is split: ``'round'`` as torchvision (and so
    timm), ``'floor'`` as Hugging Face's processors. :func:`vitlens.transforms_for` builds the
    transform from these fields.
    """

    img_size: int | tuple[int, int] = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    mlp_dim: int | None = None
    qkv_bias: bool = True
    k_bias: bool = True
    qkv_fused: bool = True
    qk_norm: bool = False
    attn_norm: bool = False
    proj_bias: bool = True
    head_dim: int | None = None
    attn_layer: str = "attn"
    num_kv_heads: int | tuple[int, ...] | None = None
    class_token: bool = True
    global_pool: str = "token"
    reg_tokens: int = 0
    attn_pool_num_heads: int | None = None
    attn_pool_mlp_ratio: float | None = None
    distilled: bool = False
    dist_head: bool = True
    head_bias: bool = True
    no_embed_class: bool = False
    pos_embed: str = "learn"
    pos_embed_interp: str = "timm"
    rel_pos_bias: bool = False
    rope: str = "none"
    rope_temperature: float = 10000.0
    rope_grid_offset: float = 0.0
    rope_grid_indexing: str = "ij"
    rope_ref_grid: tuple[int, int] | None = None
    rope_rotate_half: bool = False
    rope_normalize: str = "separate"
    rope_periods: tuple[float, float] | None = None
    pre_norm: bool = False
    final_norm: bool = True
    fc_norm: bool | None = None
    init_values: float | None = None
    attn_only_layer_scale: bool = False
    act_layer: str = "gelu"
    mlp_layer: str = "mlp"
    mlp_norm: bool = False
    norm_layer: str = "layernorm"
    norm_eps: float = 1e-6
    block_type: str = "pre_norm"
    num_parallel: int = 1
    patch_bias: bool = True
    patch_norm: bool = False
    pool_include_prefix: bool = False
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    # Pre-processing and class names (metadata: they never change the network's numbers).
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    crop_mode: str = "center"
    crop_rounding: str = "round"
    labels: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.act_layer == "swiglu":  # the name configs written before mlp_layer existed used
            self.act_layer, self.mlp_layer = "silu", "swiglu_packed"
        for f in dataclasses.fields(self):
            setattr(self, f.name, _typed(f"ViTConfig.{f.name}", getattr(self, f.name), _FIELD_TYPES[f.name]))
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError`` naming the field, the allowed values and what came."""

        def choice(name: str, allowed: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"ViTConfig.{name} must be one of {allowed}, got {value!r}")

        choice("global_pool", POOLINGS)
        choice("pos_embed", POS_EMBEDS)
        choice("act_layer", ACTIVATIONS)
        choice("mlp_layer", MLP_LAYERS)
        choice("norm_layer", NORMS)
        choice("block_type", BLOCK_TYPES)
        choice("attn_layer", ATTN_LAYERS)
        choice("rope", ROPES)
        choice("rope_grid_indexing", ("ij", "xy"))
        choice("rope_normalize", ROPE_NORMALIZATIONS)
        choice("pos_embed_interp", POS_INTERPOLATIONS)
        choice("crop_mode", CROP_MODES)
        choice("crop_rounding", CROP_ROUNDINGS)
        if not 0.0 < self.crop_pct < float("inf"):
            raise ValueError(
                f"ViTConfig.crop_pct (the part of the resized image kept) must be > 0, got {self.crop_pct!r}"
            )
        for name in ("patch_size", "in_chans", "embed_dim", "depth", "num_heads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ViTConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        kv = self.kv_heads_per_block
        if any(h < 1 or self.num_heads % h for h in kv) or len(kv) != self.depth:
            raise ValueError(
                f"ViTConfig.num_kv_heads must divide num_heads ({self.num_heads}), one value or one per block "
                f"({self.depth}); got {self.num_kv_heads!r}"
            )
        if self.rel_pos_bias and (not self.class_token or self.num_prefix_tokens != 1):
            raise ValueError("rel_pos_bias (BEiT's) has a slot for one class token and no other prefix token")
        if self.rope != "none" and self.attn_head_dim % 4:
            raise ValueError(f"rotary embeddings need a head width divisible by 4, got {self.attn_head_dim}")
        if self.rope == "mixed" and self.rope_rotate_half:
            raise ValueError("rope='mixed' pairs neighbouring channels: it needs rope_rotate_half=False")
        self._validate_branches()
        if self.head_dim is None and self.embed_dim % self.num_heads:
            raise ValueError(
                f"ViTConfig.embed_dim ({self.embed_dim}) must be divisible by num_heads "
                f"({self.num_heads}); each head gets embed_dim // num_heads channels"
            )
        if self.num_classes < 0 or self.reg_tokens < 0:
            raise ValueError("ViTConfig.num_classes and reg_tokens must be >= 0")
        if not self.norm_eps > 0:
            raise ValueError(f"ViTConfig.norm_eps must be > 0, got {self.norm_eps!r}")
        if not self.image_mean or len(self.image_std) != len(self.image_mean):
            raise ValueError(
                f"ViTConfig.image_mean and image_std need one value per channel, as many of each; "
                f"got {self.image_mean} and {self.image_std}"
            )
        if any(v <= 0 for v in self.image_std):
            raise ValueError(f"ViTConfig.image_std must be > 0, got {self.image_std}")
        if self.labels is not None and len(self.labels) != self.num_classes:
            raise ValueError(
                f"ViTConfig.labels names {len(self.labels)} class(es) but the head has num_classes={self.num_classes}: "
                "give one name per class, or none"
            )
        if self.global_pool in ("token", "token_avg") and not self.class_token:
            raise ValueError(f"global_pool={self.global_pool!r} needs class_token=True; use global_pool='avg'")
        if self.distilled and not self.class_token:
            raise ValueError("distilled=True (DeiT distillation token) needs class_token=True")
        h, w = self.grid_size
        if h < 1 or w < 1:  # a remainder is dropped, as timm does at SigLIP-so400m's 384 with 14-pixel patches
            raise ValueError(f"ViTConfig.img_size {self.img_hw} is smaller than one {self.patch_size}-pixel patch")
        if self.mlp_layer == "swiglu_packed" and self.hidden_dim % 2:
            raise ValueError(f"mlp_layer='swiglu_packed' packs two halves: hidden width {self.hidden_dim} must be even")

    def _validate_branches(self) -> None:
        """Parallel branches and differential attention: the combinations that exist (timm's)."""
        if self.num_parallel < 1:
            raise ValueError(f"ViTConfig.num_parallel must be >= 1, got {self.num_parallel}")
        if self.num_parallel > 1 and self.block_type != "pre_norm":
            raise ValueError(
                f"num_parallel > 1 (parallel branches) needs block_type='pre_norm', got {self.block_type!r}"
            )
        if self.attn_layer != "diff":
            return
        other = [
            name
            for name, present in (
                ("rotary embeddings", self.rope != "none"),
                ("a relative position bias", self.rel_pos_bias),
                ("grouped key/value heads", self.num_kv_heads is not None),
                ("head_dim", self.head_dim is not None),
                ("q and v biases without a k bias", not self.k_bias),
                ("separate q, k and v projections", not self.qkv_fused),
                ("post-norm blocks", self.block_type == "post_norm"),
            )
            if present
        ]
        if other:
            raise ValueError(f"attn_layer='diff' (differential attention) does not take {', '.join(other)}")
        if self.embed_dim % (2 * self.num_heads):
            raise ValueError(
                f"attn_layer='diff' splits each head's queries and keys in two: embed_dim ({self.embed_dim}) "
                f"must be divisible by 2 * num_heads ({2 * self.num_heads})"
            )

    # ------------------------------------------------------------ derived values
    @property
    def img_hw(self) -> tuple[int, int]:
        """``img_size`` as (height, width)."""
        s = self.img_size
        return (int(s), int(s)) if isinstance(s, int) else (int(s[0]), int(s[1]))

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid (rows, columns) at the native image size."""
        h, w = self.img_hw
        return h // self.patch_size, w // self.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: class, distillation and register tokens."""
        return int(self.class_token) + int(self.distilled) + self.reg_tokens

    @property
    def hidden_dim(self) -> int:
        """Width of the MLP's hidden layer."""
        return self.mlp_dim if self.mlp_dim is not None else int(self.embed_dim * self.mlp_ratio)

    @property
    def attn_head_dim(self) -> int:
        """Channels per attention head: ``head_dim`` when set, else ``embed_dim // num_heads``."""
        return self.head_dim if self.head_dim is not None else self.embed_dim // self.num_heads

    @property
    def kv_heads_per_block(self) -> tuple[int, ...]:
        """Key/value heads of each block (fewer than ``num_heads``: grouped-query attention)."""
        kv = self.num_kv_heads if self.num_kv_heads is not None else self.num_heads
        return tuple(kv) if isinstance(kv, tuple) else (int(kv),) * self.depth

    @property
    def gated_dim(self) -> int:
        """Width of the MLP's activations: half the first layer's for a packed gated unit."""
        return self.hidden_dim // 2 if self.mlp_layer == "swiglu_packed" else self.hidden_dim

    @property
    def head_in_dim(self) -> int:
        """Width of what the head reads: twice ``embed_dim`` for ``global_pool='token_avg'``."""
        return 2 * self.embed_dim if self.global_pool == "token_avg" else self.embed_dim

    @property
    def use_fc_norm(self) -> bool:
        """timm's rule: with average pooling the final norm moves after the pooling."""
        return self.global_pool == "avg" if self.fc_norm is None else bool(self.fc_norm)

    # ------------------------------------------------------------ (de)serialize
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides: Any) -> ViTConfig:
        """Build from a dict; unknown keys are an error that lists them and the known ones."""
        merged = {**d, **overrides}
        merged.pop("model_type", None)
        merged.pop("vitlens_version", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(merged) - known)
        if unknown:
            hints = {u: difflib.get_close_matches(u, known, n=1) for u in unknown}
            detail = ", ".join(f"{u!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for u, h in hints.items())
            raise ValueError(f"unknown ViTConfig field(s): {detail}")
        return cls(**merged)

    def to_json(self) -> str:
        return json.dumps({"model_type": "vitlens", **self.to_dict()}, indent=2)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> ViTConfig:
        """Read a config from JSON text or from a path to a ``config.json``."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> ViTConfig:
        return dataclasses.replace(self, **changes)


def _typed(name: str, value: Any, kind: Any) -> Any:
    """``value`` as the annotated type ``kind`` (JSON lists become tuples, ints become floats), or a ValueError.

    What came is named with its type, so ``depth: 4.5``, ``num_heads: "4"`` and ``img_size: "16"``
    say what is wrong instead of failing later; non-finite floats are refused too.
    """
    options = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)
    if value is None and type(None) in options:
        return None
    for option in (o for o in options if o is not type(None)):
        try:
            return _as(value, option)
        except (TypeError, ValueError):
            continue
    wanted = " or ".join(_describe(o) for o in options)
    raise ValueError(f"{name} must be {wanted}, got {value!r} ({type(value).__name__})")


_NAMES = {int: ("an integer", "integers"), float: ("a finite number", "numbers"), bool: ("true or false", "booleans")}
_NAMES[str] = ("a string", "strings")


def _describe(kind: Any) -> str:
    if kind is type(None):
        return "null"
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (tuple, list):
        count = "" if origin is list or args[-1] is Ellipsis else f"{len(args)} "
        return f"a list of {count}{_NAMES.get(args[0], ('', str(args[0])))[1]}"
    if origin is dict:
        return "an object"
    return _NAMES.get(kind, (str(kind),))[0]


def _as(value: Any, kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin in (tuple, list):
        args = typing.get_args(kind)
        fixed = origin is tuple and args[-1] is not Ellipsis
        if not isinstance(value, (list, tuple)) or (fixed and len(value) != len(args)):
            raise TypeError
        return origin(_as(v, args[0]) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise TypeError
        return value
    raise TypeError(f"unhandled field type {kind}")


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _vit(embed_dim: int, depth: int, num_heads: int, patch_size: int = 16, **kw: Any) -> dict[str, Any]:
    return dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads, patch_size=patch_size, **kw)


_DEIT = dict(image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, crop_pct=0.9)  # timm's fb_in1k recipe
_DINOV2 = dict(
    img_size=518,
    patch_size=14,
    init_values=1e-5,
    num_classes=0,
    image_mean=IMAGENET_MEAN,
    image_std=IMAGENET_STD,
    crop_pct=1.0,
)
_DINOV2_REG = dict(_DINOV2, reg_tokens=4, no_embed_class=True)
_DINOV3 = dict(
    img_size=256,
    num_classes=0,
    qkv_bias=False,
    global_pool="avg",
    fc_norm=False,
    reg_tokens=4,
    pos_embed="none",
    rope="dinov3",
    rope_temperature=100.0,
    rope_rotate_half=True,
    init_values=1e-5,
    norm_eps=1e-5,
    image_mean=IMAGENET_MEAN,
    image_std=IMAGENET_STD,
    crop_pct=1.0,
)
_GIANT = dict(
    embed_dim=1536, depth=40, num_heads=24, act_layer="silu", mlp_layer="swiglu_packed", mlp_ratio=2.66667 * 2
)

PRESETS: dict[str, dict[str, Any]] = {
    # timm / Google ViT (augreg weights use mean = std = 0.5)
    "vit_tiny_patch16_224": _vit(192, 12, 3, crop_pct=0.9),
    "vit_small_patch16_224": _vit(384, 12, 6, crop_pct=0.9),
    "vit_base_patch16_224": _vit(768, 12, 12, crop_pct=0.9),
    "vit_base_patch32_224": _vit(768, 12, 12, patch_size=32, crop_pct=0.9),
    "vit_large_patch16_224": _vit(1024, 24, 16, crop_pct=0.9),
    # DeiT (ImageNet mean/std); the distilled ones carry a second (distillation) token and head
    "deit_tiny_patch16_224": _vit(192, 12, 3, **_DEIT),
    "deit_small_patch16_224": _vit(384, 12, 6, **_DEIT),
    "deit_base_patch16_224": _vit(768, 12, 12, **_DEIT),
    "deit_tiny_distilled_patch16_224": _vit(192, 12, 3, distilled=True, **_DEIT),
    "deit_small_distilled_patch16_224": _vit(384, 12, 6, distilled=True, **_DEIT),
    "deit_base_distilled_patch16_224": _vit(768, 12, 12, distilled=True, **_DEIT),
    # DINOv2 (layer scale, 518 px, patch 14; the reg4 ones add four register tokens)
    "vit_small_patch14_dinov2": _vit(384, 12, 6, **_DINOV2),
    "vit_base_patch14_dinov2": _vit(768, 12, 12, **_DINOV2),
    "vit_large_patch14_dinov2": _vit(1024, 24, 16, **_DINOV2),
    "vit_giant_patch14_dinov2": dict(_DINOV2, **_GIANT),
    "vit_small_patch14_reg4_dinov2": _vit(384, 12, 6, **_DINOV2_REG),
    "vit_base_patch14_reg4_dinov2": _vit(768, 12, 12, **_DINOV2_REG),
    "vit_large_patch14_reg4_dinov2": _vit(1024, 24, 16, **_DINOV2_REG),
    "vit_giant_patch14_reg4_dinov2": dict(_DINOV2_REG, **_GIANT),
    # SigLIP: no class token; a learned query pools the tokens (global_pool='map'); image embedding out
    "vit_base_patch16_siglip_224": _vit(
        768, 12, 12, num_classes=0, class_token=False, global_pool="map", fc_norm=False, crop_pct=0.9
    ),
    # OpenAI CLIP's image tower: norm before the blocks, no patch bias, QuickGELU; the head is the projection
    "vit_base_patch16_clip_quickgelu_224": _vit(
        768,
        12,
        12,
        num_classes=512,
        pre_norm=True,
        patch_bias=False,
        act_layer="quick_gelu",
        norm_eps=1e-5,
        fc_norm=False,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    ),
    # EVA-02 (MIM): rotary embeddings on the patches, q and v biases, SwiGLU with a norm inside, mean pooling
    "eva02_base_patch14_224": _vit(
        768,
        12,
        12,
        patch_size=14,
        num_classes=0,
        mlp_dim=2048,
        k_bias=False,
        qkv_fused=False,
        global_pool="avg",
        fc_norm=True,
        rope="axial",
        rope_ref_grid=(16, 16),
        act_layer="silu",
        mlp_layer="swiglu",
        mlp_norm=True,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        crop_pct=0.9,
    ),
    # DINOv3: four registers, layer scale, no absolute positions (DINOv3's rotary embedding instead)
    "vit_small_patch16_dinov3": _vit(384, 12, 6, **_DINOV3),
    "vit_base_patch16_dinov3": _vit(768, 12, 12, **_DINOV3),
    # BEiT: q and v biases, a relative position bias in every block, layer scale, mean pooling
    "beit_base_patch16_224": _vit(
        768,
        12,
        12,
        k_bias=False,
        global_pool="avg",
        fc_norm=True,
        pos_embed="none",
        rel_pos_bias=True,
        init_values=1e-5,
        crop_pct=0.9,
    ),
    # Small-data presets that train on a laptop CPU.
    # vit_digits: scikit-learn's 8x8 grey digits, upsampled to 16x16 and cut into 2x2 patches.
    # Recipe (`make demo`; the vitlens.train.TrainConfig defaults): 45 epochs, batch 32, fused AdamW
    # lr 2e-3 with 2 warm-up epochs and cosine decay to 1e-5, weight decay 0.05, label smoothing 0.1,
    # gradient clipping 1.0, a random affine per image (+-10 degrees, +-10% shift, 0.9-1.1 scale), no EMA.
    # Test accuracy on the fixed 360-digit split after the last epoch, seeds 0 / 1 / 2 / 3 / 4:
    # 98.61 / 98.33 / 98.33 / 97.50 / 98.61%; about 60 s on two cores (AMD EPYC).
    # 60 epochs: 98.89 / 99.44 / 98.89% (seeds 0-2) for a third more time; 50 epochs: 98.06 / 98.33 /
    # 98.33 / 99.44%. Tried and dropped: 40 epochs (97.2-98.6%, also at lr 3e-3), 30 epochs (96.9-97.8%),
    # EMA 0.998 over 45 epochs (96.1-97.5%), lr 1e-3 (98.89 / 98.61 / 97.50% at 60 epochs), batch 128
    # (learned too slowly in 60 epochs), batch 16 (a fifth slower per epoch), 8x8 input with 2x2 patches
    # (16 tokens), wider and deeper (94-95% after 30 epochs).
    "vit_digits": dict(
        img_size=16,
        patch_size=2,
        in_chans=1,
        num_classes=10,
        embed_dim=64,
        depth=4,
        num_heads=4,
        mlp_ratio=2.0,
        image_mean=(0.5,),
        image_std=(0.5,),
        interpolation="bilinear",
        labels=[str(i) for i in range(10)],
    ),
    # vit_cifar: 32x32 RGB, patch 4 (64 patches), width 192, depth 6, 3 heads, MLP 384.
    "vit_cifar": dict(
        img_size=32,
        patch_size=4,
        num_classes=10,
        embed_dim=192,
        depth=6,
        num_heads=3,
        mlp_ratio=2.0,
        image_mean=(0.4914, 0.4822, 0.4465),
        image_std=(0.2470, 0.2435, 0.2616),
    ),
}


_FIELD_TYPES = typing.get_type_hints(ViTConfig)


def list_models(pattern: str = "*") -> list[str]:
    """Names of the presets, sorted, optionally filtered with a shell-style pattern."""
    import fnmatch

    return sorted(n for n in PRESETS if fnmatch.fnmatch(n, pattern))


def get_config(name: str, **overrides: Any) -> ViTConfig:
    """The preset ``name`` as a :class:`ViTConfig`, with ``overrides`` applied.

    A timm-style pretrained tag (``vit_small_patch16_224.augreg_in21k``) is accepted: the part
    after the dot is ignored here.
    """
    base = name.split(".", 1)[0]
    if base not in PRESETS:
        close = difflib.get_close_matches(base, PRESETS, n=4, cutoff=0.5)
        hint = f"; close names: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown model preset {name!r}{hint}. vitlens.list_models() lists all {len(PRESETS)}.")
    return ViTConfig.from_dict(dict(PRESETS[base]), **overrides)
