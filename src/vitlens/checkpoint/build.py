"""From a reader's findings to a loaded model: the config, position resampling, a new head, a strict load.

Every reader (files on disk, live timm / Hugging Face / torchvision models) ends in :func:`build`
with a :class:`Reading`: the tensors renamed to vitlens's keys, and what the tensors cannot show
(``hints``: heads, pooling, pre-processing, class names). What happens next is the same for all:

* the config comes from the shapes, then the hints, then the caller's overrides;
* ``img_size`` (or the size the source's own pre-processing produces) resamples the stored
  position embeddings once, by the source library's rule unless ``pos_interp`` names another;
* ``num_classes`` other than the stored head's keeps the backbone and starts a new head, as timm does;
* every key and shape is checked; ``strict=False`` loads what fits and warns with the rest.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..config import POS_INTERPOLATIONS, ViTConfig
from ..layers import resample_pos_embed, resample_rel_pos_table
from ..model import VisionTransformer
from .files import CheckpointError, describe
from .infer import config_from_state, shape_facts

HEAD_KEYS = ("head.", "head_dist.")


@dataclass
class Reading:
    """What a reader understood of one checkpoint.

    ``state``: tensors under vitlens's names. ``hints``: config fields the tensors cannot show
    (``input_size``, when present, is the size the source's pre-processing outputs). ``config``: a
    complete config when the checkpoint carries one (vitlens's own format); hints are then unused.
    ``origin`` maps vitlens keys back to the file's own (for messages); ``ignored`` lists source
    tensors that are deliberately not part of the model, with ``ignored_why``. ``text_tower``: the
    source's text encoder for a CLIP-like model (see :mod:`.text_towers`), attached to the model
    unless a new head replaces the image embedding.
    """

    state: dict[str, Tensor]
    where: str
    source: str
    hints: dict[str, Any] = field(default_factory=dict)
    config: ViTConfig | None = None
    origin: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    ignored_why: str = ""
    text_tower: Any = None


def build(
    reading: Reading,
    *,
    strict: bool = True,
    pos_interp: str | None = None,
    img_size: int | tuple[int, int] | None = None,
    **overrides: Any,
) -> VisionTransformer:
    """The model ``reading`` describes, with ``overrides`` (ViTConfig fields) applied; see the module doc."""
    hints = dict(reading.hints)
    input_size = hints.pop("input_size", None)
    target = img_size if img_size is not None else input_size
    num_classes = overrides.pop("num_classes", None)
    check_dtypes(reading)
    if reading.config is not None:
        check_config_fits(reading.config, reading)
        config = reading.config.replace(**overrides) if overrides else reading.config
    else:
        config = config_from_state(reading.state, hints, overrides, reading.where, reading.source)
    method = pos_interp or config.pos_embed_interp
    if method not in POS_INTERPOLATIONS:
        raise ValueError(f"pos_interp must be one of {POS_INTERPOLATIONS}, got {method!r}")
    config = config.replace(pos_embed_interp=method)
    state = reading.state
    if target is not None:
        state, config = _resample_positions(state, config, target, method)
    new_head = num_classes is not None and int(num_classes) != config.num_classes
    if new_head:
        state = {k: v for k, v in state.items() if not k.startswith(HEAD_KEYS)}
        config = config.replace(num_classes=int(num_classes), labels=None)
    with torch.device("meta"):  # shapes only: no time spent on a random init the weights replace
        shell = VisionTransformer(config)
    expected = {k: v.shape for k, v in shell.state_dict().items()}
    fresh = {k for k in expected if k.startswith(HEAD_KEYS)} if new_head else set()
    fitting = check_state({k: s for k, s in expected.items() if k not in fresh}, state, strict=strict, reading=reading)
    # The model lives where the weights are: the CPU for files, the source model's device for from_*.
    device = next(iter(fitting.values())).device if fitting else torch.device("cpu")
    if len(fitting) == len(expected) and not any(True for _ in shell.buffers()):
        model = shell.to_empty(device=device)  # every tensor is overwritten below
    else:
        model = VisionTransformer(config).to(device)  # what the file lacks (a new head) keeps its initialisation
    model.load_state_dict(fitting, strict=False)
    if reading.text_tower is not None and not new_head:
        model.text_tower = reading.text_tower
    return model.eval()


# The config fields that a checkpoint's tensors decide; a stored config that says otherwise is refused.
_SHAPE_FIELDS = (
    "embed_dim",
    "depth",
    "patch_size",
    "in_chans",
    "num_classes",
    "class_token",
    "distilled",
    "reg_tokens",
)


def check_config_fits(config: ViTConfig, reading: Reading) -> None:
    """``CheckpointError`` when a stored config disagrees with the tensors beside it (before anything is built).

    A ``config.json`` saying ``depth=100000`` over a 4-block file would otherwise build 100000 blocks
    before the key check could say so.
    """
    try:
        facts = shape_facts(reading.state, {}, reading.where)
    except CheckpointError:
        return  # the tensors are not a ViT's: the key check names what is missing
    wrong = [
        f"{k}={getattr(config, k)!r} (the weights hold {facts[k]!r})"
        for k in _SHAPE_FIELDS
        if getattr(config, k) != facts[k]
    ]
    if wrong:
        raise CheckpointError(f"{reading.where}: its config disagrees with its weights: {', '.join(wrong)}")


def check_dtypes(reading: Reading) -> None:
    """``CheckpointError`` naming the first tensor that is not floating point: weights stored as integers
    (the same bytes read as I32, or values truncated to I64) would load and run as nonsense."""
    for key, tensor in reading.state.items():
        if not tensor.is_floating_point():
            name = reading.origin.get(key, key)
            raise CheckpointError(
                f"{reading.where}: tensor {name} {tuple(tensor.shape)} is stored as {tensor.dtype}; "
                "a ViT's weights are floating point (float32, float16 or bfloat16)"
            )


def _resample_positions(
    state: dict[str, Tensor], config: ViTConfig, target: int | tuple[int, int], method: str
) -> tuple[dict[str, Tensor], ViTConfig]:
    """The state and config for input size ``target``: stored patch positions (absolute, and BEiT's
    relative tables) resampled by ``method``."""
    resized = config.replace(img_size=tuple(target) if isinstance(target, list) else target)
    old, new = config.grid_size, resized.grid_size
    if new == old:
        return state, resized
    state = dict(state)
    n = 0 if config.no_embed_class else config.num_prefix_tokens
    pos = state.get("pos_embed")
    if config.pos_embed == "learn" and pos is not None and pos.shape[1] == n + old[0] * old[1]:
        patches = resample_pos_embed(pos[:, n:], old, new, method)
        state["pos_embed"] = patches if n == 0 else torch.cat([pos[:, :n], patches], dim=1)
    distances = (2 * old[0] - 1) * (2 * old[1] - 1) + 3
    for key in [k for k in state if k.endswith("attn.relative_position_bias_table")]:
        if state[key].shape[0] == distances:  # otherwise the shape check names the mismatch
            state[key] = _resample_rel_table(state[key], old, new, method)
    return state, resized


def _resample_rel_table(table: Tensor, old: tuple[int, int], new: tuple[int, int], method: str) -> Tensor:
    """BEiT's relative position table by the source library's rule: Hugging Face's bilinear, or timm's own."""
    if method == "hf":
        return resample_rel_pos_table(table, old, new)
    if method == "torchvision":
        raise ValueError("torchvision has no relative position bias: resample it with pos_interp='timm' or 'hf'")
    try:
        from timm.layers import resize_rel_pos_bias_table
    except ImportError as e:
        raise ImportError(
            "resampling BEiT's relative position table by timm's rule calls timm's own function: "
            "pip install 'vitlens[compat]', or pos_interp='hf' for Hugging Face's bilinear rule"
        ) from e
    shape = ((2 * new[0] - 1) * (2 * new[1] - 1) + 3, table.shape[1])
    return resize_rel_pos_bias_table(table, new_window_size=new, new_bias_shape=shape, old_window_size=old)


def check_state(
    expected: dict[str, torch.Size], state: dict[str, Tensor], *, strict: bool, reading: Reading
) -> dict[str, Tensor]:
    """The tensors of ``state`` that fit; name the file, keys and shapes of anything that does not.

    ``strict``: any missing, unexpected or mis-shaped key is a :class:`CheckpointError`;
    otherwise a warning lists them. Keys that are in ``state`` but deliberately left out of
    ``expected`` (an old head replaced by a new one) are neither.
    """
    name = lambda k: reading.origin.get(k, k)  # the key as the file spells it
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and state[k].shape != expected[k]]
    problems = []
    if missing:
        problems.append(
            "missing keys (model expects): " + describe(map(name, missing), {name(k): expected[k] for k in missing})
        )
    if unexpected:
        problems.append(
            "unexpected keys: " + describe(map(name, unexpected), {name(k): state[k].shape for k in unexpected})
        )
    if mismatched:
        problems.append(
            "shape mismatch: "
            + ", ".join(
                f"{name(k)} {tuple(state[k].shape)} in the file vs {tuple(expected[k])} in the model"
                for k in mismatched[:5]
            )
            + (f" and {len(mismatched) - 5} more" if len(mismatched) > 5 else "")
        )
    where = reading.where
    if problems and strict:
        raise CheckpointError(
            f"{where} does not fit the model: " + "; ".join(problems) + ". Pass strict=False to load what fits."
        )
    if problems:
        warnings.warn(f"{where}: loaded with strict=False, skipped " + "; ".join(problems), stacklevel=3)
    if reading.ignored:
        warnings.warn(f"{where}: set aside {reading.ignored_why or ', '.join(reading.ignored)}", stacklevel=3)
    return {k: v for k, v in state.items() if k in expected and k not in mismatched}
