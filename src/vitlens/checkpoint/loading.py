"""``vitlens.load``: find the weights, recognise whose they are, build the model, load strictly.

The format is decided by the keys (and a ``config.json`` beside them), never by the file name:
``patch_embed.proj.weight`` is timm / vitlens, ``embeddings.patch_embeddings.projection.weight``
is Hugging Face, ``conv_proj.weight`` / ``encoder.layers.encoder_layer_0.*`` is torchvision.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import POS_INTERPOLATIONS, ViTConfig
from ..model import VisionTransformer, resample_pos_embed
from . import hf_format, timm_format, torchvision_format
from .files import CheckpointError, describe, read_json, read_state_dict, safetensors_metadata
from .infer import config_from_state
from .vitlens_format import CONFIG_NAME, WEIGHTS_NAME, config_from_metadata, is_vitlens_config

WEIGHT_NAMES = (WEIGHTS_NAME, "pytorch_model.bin", "model.pth", "pytorch_model.pth")
PREPROCESSOR_NAME = "preprocessor_config.json"


def _find_weights(directory: Path) -> Path:
    for name in WEIGHT_NAMES:
        if (directory / name).is_file():
            return directory / name
    candidates = sorted(p for p in directory.iterdir() if p.suffix in (".safetensors", ".pth", ".pt", ".bin"))
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(p.name for p in candidates) or "none"
    raise FileNotFoundError(
        f"{directory}: expected one weight file ({', '.join(WEIGHT_NAMES)} or a single *.safetensors/*.pth/*.bin); "
        f"found {found}"
    )


def load(
    path: str | os.PathLike,
    *,
    preset: str | None = None,
    num_heads: int | None = None,
    strict: bool = True,
    pos_interp: str | None = None,
    **config_overrides: Any,
) -> VisionTransformer:
    """Load a vitlens, timm, Hugging Face or torchvision ViT checkpoint (a directory or a file).

    ``preset`` (a timm model name) or ``num_heads`` supplies what the weights cannot show; a timm
    name in the file or folder name, a timm or Hugging Face ``config.json`` beside the weights
    serve too (a vitlens file's own config is complete and needs neither). ``img_size=``
    resamples the stored position embeddings once, with ``pos_interp`` ('timm' | 'hf' |
    'torchvision'; default: the rule of the library the file came from).
    Other ``config_overrides`` replace config fields (e.g. ``num_classes=10`` with
    ``strict=False`` keeps everything but the head). ``strict=False`` loads what fits and warns
    with the keys it skipped.
    """
    from ..hub import is_hub_name, load_pretrained

    if is_hub_name(path):  # "hf-hub:ORG/NAME[@rev]" / "timm/NAME.TAG": fetched into the Hugging Face cache first
        kw = dict(preset=preset, num_heads=num_heads, strict=strict, pos_interp=pos_interp)
        return load_pretrained(str(path), **kw, **config_overrides)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    weights = _find_weights(path) if path.is_dir() else path
    folder = weights.parent
    side_config = read_json(folder / CONFIG_NAME) if (folder / CONFIG_NAME).is_file() else None
    where = str(weights)
    state = read_state_dict(weights)

    hints: dict[str, Any] = {}
    if (folder / PREPROCESSOR_NAME).is_file():
        hints.update(hf_format.hints_from_preprocessor(read_json(folder / PREPROCESSOR_NAME)))
    origin: dict[str, str] = {}
    ignored: list[str] = []

    stored = None
    if weights.suffix == ".safetensors":
        stored = config_from_metadata(safetensors_metadata(weights))
    if stored is None and side_config is not None and is_vitlens_config(side_config):
        stored = side_config
    if stored is not None and "patch_embed.proj.weight" in state:
        config = ViTConfig.from_dict(stored)
        return _finish(state, config, config_overrides, pos_interp or config.pos_embed_interp, strict, where)

    if hf_format.is_hf_state(state):
        source = "Hugging Face"
        if side_config is not None:
            hints.update(hf_format.hints_from_hf_config(side_config, str(folder / CONFIG_NAME)))
        else:
            hints.update(norm_eps=1e-12, act_layer="gelu", global_pool="token", fc_norm=False, no_embed_class=False)
            hints["pos_embed_interp"] = "hf"
        if not any(k.startswith(("classifier.", "vit.classifier.")) for k in state):
            hints["num_classes"] = 0
        try:
            state, origin, ignored = hf_format.hf_to_vitlens(state)
        except CheckpointError as e:
            raise CheckpointError(f"{where}: {e}") from e
    elif torchvision_format.is_torchvision_state(state):
        source = "torchvision"
        hints.update(torchvision_format.torchvision_hints())
        name = torchvision_format_name(weights)
        if name:
            hints["num_heads"] = torchvision_format.HEADS_BY_NAME[name]
        state, origin = torchvision_format.torchvision_to_vitlens(state, where)
    elif "patch_embed.proj.weight" in state:
        source = "timm"
        hints["pos_embed_interp"] = "timm"
        if side_config is not None and side_config.get("architecture"):
            hints.update(timm_format.hints_from_timm_config(side_config))
        elif preset is None and (name := timm_format.name_in_path(weights)):
            hints.update(timm_format.hints_from_name(name))
    else:
        raise CheckpointError(
            f"{where}: not a ViT checkpoint vitlens can read; none of the timm (patch_embed.proj.weight), "
            "Hugging Face (embeddings.patch_embeddings.projection.weight) or torchvision (conv_proj.weight) "
            f"keys are there. First keys: {describe(list(state)[:5], {k: v.shape for k, v in state.items()})}"
        )

    if preset is not None:
        preset_hints = timm_format.hints_from_name(preset)
        hints = {**preset_hints, **{k: v for k, v in hints.items() if k not in preset_hints or source != "timm"}}
    if num_heads is not None:
        hints["num_heads"] = int(num_heads)
    target = config_overrides.pop("img_size", None)
    config = config_from_state(state, hints, config_overrides, where, source)
    method = pos_interp or config.pos_embed_interp
    overrides = {} if target is None else {"img_size": target}
    return _finish(state, config, overrides, method, strict, where, origin, ignored)


def torchvision_format_name(path: Path) -> str | None:
    """``vit_b_16`` and friends when the file or folder name spells one (``vit_b_16-c867db91.pth``)."""
    for part in (path.stem, path.parent.name):
        for name in torchvision_format.HEADS_BY_NAME:
            if part == name or part.startswith(name + "-") or part.startswith(name + "_"):
                return name
    return None


def build_model(
    state: dict[str, Tensor],
    hints: dict[str, Any],
    overrides: dict[str, Any],
    *,
    where: str,
    source: str,
    origin: dict[str, str] | None = None,
    ignored: list[str] | None = None,
) -> VisionTransformer:
    """Config from shapes + hints, then a strict load (used by the in-memory ``from_*`` readers)."""
    overrides = dict(overrides)
    strict = overrides.pop("strict", True)
    pos_interp = overrides.pop("pos_interp", None)
    target = overrides.pop("img_size", None)
    config = config_from_state(state, hints, overrides, where, source)
    return _finish(
        state,
        config,
        {} if target is None else {"img_size": target},
        pos_interp or config.pos_embed_interp,
        strict,
        where,
        origin or {},
        ignored or [],
    )


def _finish(
    state: dict[str, Tensor],
    config: ViTConfig,
    overrides: dict[str, Any],
    method: str,
    strict: bool,
    where: str,
    origin: dict[str, str] | None = None,
    ignored: list[str] | None = None,
) -> VisionTransformer:
    """Apply overrides (resampling positions for a new ``img_size``), build, and load the tensors."""
    if method not in POS_INTERPOLATIONS:
        raise ValueError(f"pos_interp must be one of {POS_INTERPOLATIONS}, got {method!r}")
    overrides = dict(overrides)
    target = overrides.pop("img_size", None)
    config = ViTConfig.from_dict({**config.to_dict(), "pos_embed_interp": method}, **overrides)
    if target is not None:
        resized = config.replace(img_size=target)
        if resized.grid_size != config.grid_size and "pos_embed" in state and config.pos_embed == "learn":
            state = dict(state)
            n = 0 if config.no_embed_class else config.num_prefix_tokens
            pos = state["pos_embed"]
            if pos.shape[1] == n + config.grid_size[0] * config.grid_size[1]:
                patches = resample_pos_embed(pos[:, n:], config.grid_size, resized.grid_size, method)
                state["pos_embed"] = patches if n == 0 else torch.cat([pos[:, :n], patches], dim=1)
        config = resized
    with torch.device("meta"):  # shapes only: no time spent on a random init the weights replace
        shell = VisionTransformer(config)
    expected = {k: v.shape for k, v in shell.state_dict().items()}
    fitting = check_state(expected, state, strict=strict, where=where, origin=origin or {}, ignored=ignored or [])
    # The model lives where the weights are: the CPU for files, the source model's device for from_*.
    device = next(iter(fitting.values())).device if fitting else torch.device("cpu")
    if len(fitting) == len(expected) and not any(True for _ in shell.buffers()):
        model = shell.to_empty(device=device)  # every tensor is overwritten below
    else:
        model = VisionTransformer(config).to(device)  # what the file lacks keeps its initialisation
    model.load_state_dict(fitting, strict=False)
    return model.eval()


def check_state(
    expected: dict[str, torch.Size],
    state: dict[str, Tensor],
    *,
    strict: bool,
    where: str,
    origin: dict[str, str],
    ignored: list[str],
) -> dict[str, Tensor]:
    """The tensors of ``state`` that fit; name the file, keys and shapes of anything that does not.

    ``strict``: any missing, unexpected or mis-shaped key is a :class:`CheckpointError`;
    otherwise a warning lists them.
    """
    name = lambda k: origin.get(k, k)  # the key as the file spells it
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
    if problems and strict:
        raise CheckpointError(
            f"{where} does not fit the model: " + "; ".join(problems) + ". Pass strict=False to load what fits."
        )
    if problems:
        warnings.warn(f"{where}: loaded with strict=False, skipped " + "; ".join(problems), stacklevel=3)
    if ignored:
        warnings.warn(
            f"{where}: set aside {', '.join(ignored)} (Hugging Face ViTModel pooler: dense + tanh on the class "
            "token, not part of vitlens; features match last_hidden_state)",
            stacklevel=3,
        )
    return {k: v for k, v in state.items() if k in expected and k not in mismatched}
