"""``vitlens.load``: find the weights, recognise whose they are, read what the files beside them say.

The format is decided by the keys (and a ``config.json`` beside them), never by the file name:
``patch_embed.proj.weight`` is timm / vitlens, ``embeddings.patch_embeddings.projection.weight``
is Hugging Face, ``conv_proj.weight`` / ``encoder.layers.encoder_layer_0.*`` is torchvision.
An OpenCLIP folder (``open_clip_config.json`` beside ``open_clip_model.safetensors``) is built
by OpenCLIP and its image tower read. Hub names (``hf-hub:ORG/NAME``, ``timm/NAME.TAG``) are
fetched into the Hugging Face cache first and then read like any folder.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from ..config import ViTConfig
from ..model import VisionTransformer
from . import hf_format, hub, open_clip_format, timm_eva, timm_format, torchvision_format
from .build import Reading, build
from .files import CheckpointError, describe, read_json, read_state_dict, safetensors_metadata
from .vitlens_format import CONFIG_NAME, WEIGHTS_NAME, config_from_metadata, is_vitlens_config

WEIGHT_NAMES = (WEIGHTS_NAME, "pytorch_model.bin", "model.pth", "pytorch_model.pth")
PREPROCESSOR_NAME = "preprocessor_config.json"


def _find_weights(directory: Path) -> Path:
    names = WEIGHT_NAMES
    if open_clip_format.is_open_clip_folder(directory):  # OpenCLIP's own files before a transformers copy
        names = open_clip_format.WEIGHT_FILES + WEIGHT_NAMES
    for name in names:
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
    img_size: int | tuple[int, int] | None = None,
    **config_overrides: Any,
) -> VisionTransformer:
    """Load a vitlens, timm, Hugging Face, OpenCLIP or torchvision ViT: a folder, a file, or a Hub name.

    ``preset`` (a timm model name) or ``num_heads`` supplies what the weights cannot show; a timm
    name in the file or folder name, a timm or Hugging Face ``config.json`` beside the weights
    serve too (a vitlens file's own config is complete and needs neither). Class names and
    pre-processing come from the files beside the weights (``config.json``,
    ``preprocessor_config.json``). ``img_size=`` resamples the stored position embeddings once, by
    ``pos_interp`` ('timm' | 'hf' | 'torchvision'; default: the rule of the library the file came
    from). ``num_classes=`` other than the checkpoint's keeps the backbone and starts a new head.
    Other ``config_overrides`` replace config fields (e.g. ``crop_pct=1.0``). ``strict=False``
    loads what fits and warns with the keys it skipped.
    """
    if hub.is_hub_name(path):  # "hf-hub:ORG/NAME[@rev]" / "timm/NAME.TAG": fetched into the Hugging Face cache first
        path = hub.fetch(str(path)).weights
    path = Path(path)
    swapped = path.with_name(f".{path.name}.old")
    if not path.exists() and swapped.is_dir():  # a training checkpoint caught between its two renames
        warnings.warn(f"{path} is being replaced; reading the previous checkpoint {swapped}", stacklevel=2)
        path = swapped
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    reading = read_checkpoint(path, preset=preset, num_heads=num_heads)
    return build(reading, strict=strict, pos_interp=pos_interp, img_size=img_size, **config_overrides)


def _vitlens_config(weights: Path, side_config: dict[str, Any] | None, side_path: Path) -> dict[str, Any] | None:
    """A vitlens config for ``weights``: the ``config.json`` beside them, else the one in the safetensors header.

    ``save_pretrained`` writes both alike; when they disagree (an edited ``config.json``), the
    ``config.json`` wins and a warning names the fields that differ.
    """
    side = side_config if side_config is not None and is_vitlens_config(side_config) else None
    stored = None
    if weights.suffix == ".safetensors":
        stored = config_from_metadata(safetensors_metadata(weights), str(weights))
    if side is not None and stored is not None:
        differ = sorted(k for k in set(side) | set(stored) if side.get(k) != stored.get(k))
        if differ:
            warnings.warn(
                f"{side_path} and the config in {weights.name}'s header differ in {', '.join(differ)}; "
                f"{side_path.name} wins",
                stacklevel=4,
            )
    return side if side is not None else stored


def read_checkpoint(path: Path, *, preset: str | None = None, num_heads: int | None = None) -> Reading:
    """Read the weights at ``path`` (a folder or a file) and what the files beside them say."""
    weights = _find_weights(path) if path.is_dir() else path
    folder = weights.parent
    if weights.name in open_clip_format.WEIGHT_FILES and open_clip_format.is_open_clip_folder(folder):
        return open_clip_format.read_folder(weights)
    side_config = read_json(folder / CONFIG_NAME) if (folder / CONFIG_NAME).is_file() else None
    where = str(weights)
    state = read_state_dict(weights)

    stored = _vitlens_config(weights, side_config, folder / CONFIG_NAME)
    if stored is not None and "patch_embed.proj.weight" in state:
        try:
            config = ViTConfig.from_dict(stored)
        except ValueError as e:
            raise CheckpointError(f"{where}: its vitlens config is not valid: {e}") from e
        return Reading(state, where, "vitlens", config=config)

    if hf_format.is_hf_state(state):
        processor = read_json(folder / PREPROCESSOR_NAME) if (folder / PREPROCESSOR_NAME).is_file() else None
        reading = hf_format.read_state(state, side_config, processor, where, str(folder))
    elif torchvision_format.is_torchvision_state(state):
        reading = torchvision_format.read_state(state, where, torchvision_format.name_in_path(weights))
    elif "patch_embed.proj.weight" in state:
        hints: dict[str, Any] = {"pos_embed_interp": "timm"}
        if side_config is not None and side_config.get("architecture"):
            hints.update(timm_format.hints_from_timm_config(side_config))
        elif preset is None and (name := timm_format.name_in_path(weights)):
            hints.update(timm_format.hints_from_name(name))
        renamed, origin = timm_eva.to_vitlens_names(state)  # Eva / Beit names; a no-op for the others
        reading = Reading(renamed, where, "timm", hints, origin=origin)
    else:
        raise CheckpointError(
            f"{where}: not a ViT checkpoint vitlens can read; none of the timm (patch_embed.proj.weight), "
            "Hugging Face (embeddings.patch_embeddings.projection.weight) or torchvision (conv_proj.weight) "
            f"keys are there. First keys: {describe(list(state)[:5], {k: v.shape for k, v in state.items()})}"
        )

    if preset is not None:  # the name wins over what a timm file implies; other sources keep their own reading
        named = timm_format.hints_from_name(preset)
        keep = {k: v for k, v in reading.hints.items() if k not in named or reading.source != "timm"}
        reading.hints = {**named, **keep}
    if num_heads is not None:
        reading.hints["num_heads"] = int(num_heads)
    return reading
