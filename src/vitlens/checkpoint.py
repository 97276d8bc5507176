"""Saving and loading: vitlens's own format (``config.json`` + ``model.safetensors``).

Only this module knows other libraries' key names (readers for them are added here).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .config import ViTConfig
from .model import VisionTransformer

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: never a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_pretrained(model: VisionTransformer, directory: str | os.PathLike) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    config_json = model.config.to_json()
    _atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"config": config_json}))
    _atomic_write(directory / CONFIG_NAME, lambda p: Path(p).write_text(config_json))
    return directory


def load(path: str | os.PathLike, **overrides: Any) -> VisionTransformer:
    """Load a model saved by :func:`save_pretrained` (a directory or its ``.safetensors`` file)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        weights, config_path = path / WEIGHTS_NAME, path / CONFIG_NAME
        if not weights.exists():
            raise FileNotFoundError(f"{path} holds no {WEIGHTS_NAME}")
        config = ViTConfig.from_json(config_path.read_text()) if config_path.exists() else None
    else:
        weights, config = path, None
    if not weights.exists():
        raise FileNotFoundError(f"no such checkpoint: {weights}")
    if config is None:
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
        if "config" not in meta:
            raise ValueError(f"{weights} carries no vitlens config in its metadata and has no config.json beside it")
        config = ViTConfig.from_dict(json.loads(meta["config"]))
    if overrides:
        config = config.replace(**overrides)
    model = VisionTransformer(config)
    model.load_state_dict(load_file(str(weights)))
    return model
