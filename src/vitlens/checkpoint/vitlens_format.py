"""vitlens's own format: ``config.json`` + ``model.safetensors`` (the config also in the file's metadata)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..atomic import write_json
from ..model import VisionTransformer
from .files import CheckpointError, write_tensors

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_pretrained(model: VisionTransformer, directory: str | os.PathLike) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed).

    The config is also stored in the safetensors metadata, so the weight file alone loads.
    """
    directory = Path(directory)
    config_json = model.config.to_json()
    write_tensors(directory / WEIGHTS_NAME, model.state_dict(), metadata={"config": config_json})
    write_json(directory / CONFIG_NAME, json.loads(config_json))
    return directory


def is_vitlens_config(data: dict[str, Any]) -> bool:
    return data.get("model_type") == "vitlens"


def config_from_metadata(metadata: dict[str, str], where: str = "the safetensors header") -> dict[str, Any] | None:
    """The vitlens config stored in a safetensors header, if there is one."""
    text = metadata.get("config")
    if not text:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{where}: the config in its safetensors header is not valid JSON ({e})") from e
    return data if isinstance(data, dict) and is_vitlens_config(data) else None
