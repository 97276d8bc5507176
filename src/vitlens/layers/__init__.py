"""The building blocks of a Vision Transformer, each small enough to read in one sitting.

Read them in the order data flows: :mod:`.patch` (image -> tokens), :mod:`.position` and
:mod:`.rope` (where each patch sits), :mod:`.attention` (tokens talk to each other; the maps come
from here; :mod:`.diff_attention` is differential attention), :mod:`.mlp` (each token on its own),
:mod:`.norm`, :mod:`.block` (one layer) and :mod:`.pool` (an attention pool that reads the tokens out).
"""

from .attention import Attention, attend, attention_with_weights_inplace
from .block import Block, BranchesBlock, DropPath, make_block
from .diff_attention import DiffAttention
from .mlp import Mlp, QuickGELU, make_activation
from .norm import LayerScale, make_norm
from .patch import PatchEmbed
from .pool import AttentionPool
from .position import resample_pos_embed, resample_rel_pos_table, sincos_2d
from .rope import MixedRope, grid_coords, rope_angles, rope_sin_cos, rotate

__all__ = [
    "Attention",
    "AttentionPool",
    "QuickGELU",
    "attend",
    "Block",
    "BranchesBlock",
    "DiffAttention",
    "DropPath",
    "LayerScale",
    "MixedRope",
    "Mlp",
    "PatchEmbed",
    "attention_with_weights_inplace",
    "grid_coords",
    "make_block",
    "make_activation",
    "make_norm",
    "resample_pos_embed",
    "resample_rel_pos_table",
    "rope_angles",
    "rope_sin_cos",
    "rotate",
    "sincos_2d",
]
