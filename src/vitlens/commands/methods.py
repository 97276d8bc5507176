"""The explanation methods the command line names: the defaults (all that apply run) and the rest."""

from __future__ import annotations

from ..explain import ATTRIBUTIONS

DEFAULT_METHODS = ("cls", "rollout", "grad-rollout", "gae", "attnlrp", "similarity")
# on request: CP-LRP and Chefer 2021 (two passes), Grad-CAM, IG and occlusion (25-200 passes each)
METHODS = (*DEFAULT_METHODS, *(m for m in ATTRIBUTIONS if m not in DEFAULT_METHODS))
GRADIENT_METHODS = ("grad-rollout", "gae", *ATTRIBUTIONS)  # one map per target
SIGNED_METHODS = ("attnlrp", "cp-lrp", "ig", "occlusion")  # drawn with 0 in the middle: for, and against
