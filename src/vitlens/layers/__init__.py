"""The building blocks of a Vision Transformer, each small enough to read in one sitting.

Read them in the order data flows: :mod:`.patch` (image -> tokens), :mod:`.position`
(where each patch sits), :mod:`.attention` (tokens talk to each other; the maps come from
here), :mod:`.mlp` (each token on its own), :mod:`.norm`, and :mod:`.block` (one layer).
"""

from .attention import Attention, attention_with_weights_inplace
from .block import Block, DropPath
from .mlp import Mlp, make_activation
from .norm import LayerScale, make_norm
from .patch import PatchEmbed
from .position import resample_pos_embed, sincos_2d

__all__ = [
    "Attention",
    "Block",
    "DropPath",
    "LayerScale",
    "Mlp",
    "PatchEmbed",
    "attention_with_weights_inplace",
    "make_activation",
    "make_norm",
    "resample_pos_embed",
    "sincos_2d",
]
