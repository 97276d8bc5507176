"""Where the model looks: raw attention maps, rollout, gradient rollout, Chefer relevance, LRP, distances.

Functions named after a method take ``(model, images)`` and return maps on the patch grid,
(B, gh, gw) or (B, H, gh, gw), on the model's device. The ``*_from`` functions take maps that
are already computed (``model(images, return_attention=True).attentions`` and a
``TokenLayout``) so several explanations can share one forward pass. Gradient methods explain a
``target``: a class, or any score of the output — built-in ones for a text prompt, a reference
image, a region or the features' norm (:mod:`.scores`).
"""

from .attribution import CAM_METHODS, gradcam, integrated_gradients, occlusion
from .lrp import Relevance, attnlrp, cp_lrp, lrp, transformer_attribution
from .maps import (
    TokenNorms,
    attention_distance,
    attention_entropy,
    cls_attention,
    cls_attention_from,
    dino_mask,
    high_norm_tokens,
    patch_scores,
    upsample,
)
from .relevance import attention_gradients, gae, gae_from, grad_rollout, grad_rollout_from
from .rollout import fuse_heads, rollout, rollout_from_attentions, rollout_matrix, rollout_per_layer
from .scores import (
    Score,
    image_target,
    norm_target,
    per_target,
    region_patches,
    similarity_map,
    text_target,
)
from .targets import Target, check_target, target_scores

# the short names the command line and the explorer give the methods beyond maps, rollout and GAE
ATTRIBUTIONS = {
    "attnlrp": attnlrp,
    "cp-lrp": cp_lrp,
    "chefer2021": transformer_attribution,
    "gradcam": gradcam,
    "ig": integrated_gradients,
    "occlusion": occlusion,
}

__all__ = [
    "ATTRIBUTIONS",
    "Relevance",
    "attnlrp",
    "cp_lrp",
    "lrp",
    "transformer_attribution",
    "CAM_METHODS",
    "gradcam",
    "integrated_gradients",
    "occlusion",
    "Score",
    "image_target",
    "norm_target",
    "per_target",
    "region_patches",
    "similarity_map",
    "text_target",
    "Target",
    "check_target",
    "target_scores",
    "attention_distance",
    "attention_entropy",
    "attention_gradients",
    "cls_attention",
    "cls_attention_from",
    "dino_mask",
    "high_norm_tokens",
    "TokenNorms",
    "fuse_heads",
    "gae",
    "gae_from",
    "grad_rollout",
    "grad_rollout_from",
    "patch_scores",
    "rollout",
    "rollout_from_attentions",
    "rollout_matrix",
    "rollout_per_layer",
    "upsample",
]
