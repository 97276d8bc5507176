"""Reading weight files safely, and writing them without ever leaving half a file behind.

Pickles are opened with ``torch.load(weights_only=True)`` so that no code stored in them runs;
safetensors files hold only tensors to begin with and are what vitlens writes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..atomic import atomic_write

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
# Wrappers that training scripts put around a state dict, in the order they are tried.
WRAPPER_KEYS = ("model", "state_dict", "model_ema", "state_dict_ema", "module")


class CheckpointError(ValueError):
    """A weight file that cannot be read, or whose tensors do not fit the model it describes."""


def write_tensors(path: Path, tensors: Mapping[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors, or as a pickle when ``path`` ends in ``.pth``/``.pt``/``.bin``."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    if path.suffix in PICKLE_SUFFIXES:
        write = lambda p: torch.save(tensors, p)
    else:
        from safetensors.torch import save_file

        write = lambda p: save_file(tensors, p, metadata=metadata)
    try:
        atomic_write(path, write)
    except OSError:
        raise
    except Exception as e:  # torch's and safetensors' own errors for a full disk or a vanished folder
        raise OSError(f"cannot write {path}: {e} (is the disk full?)") from e


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read JSON ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error type for bad headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a weight file, unwrapped from ``model`` / ``state_dict`` / ``model_ema`` wrappers."""
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    if path.suffix in PICKLE_SUFFIXES:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            first_line = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()[0][:200] if str(e) else ""
            raise CheckpointError(
                f"{path}: cannot be read as a weights-only PyTorch file ({type(e).__name__}: {first_line}). "
                "It is truncated, corrupt, or holds Python objects other than tensors, which vitlens never executes."
            ) from e
    else:
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable safetensors file, truncated or corrupt ({e})") from e
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj: Any, path: Path | str) -> dict[str, Tensor]:
    """The tensor mapping inside ``obj``; a ``module.`` prefix (DistributedDataParallel) is dropped."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    state = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise CheckpointError(
            f"{path}: holds no tensors; top-level keys: {sorted(map(str, obj))[:8]} "
            f"(wrappers understood: {', '.join(WRAPPER_KEYS)})"
        )
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def describe(keys: Iterable[str], shapes: Mapping[str, Any], limit: int = 5) -> str:
    """``key (shape), ...`` for the first ``limit`` keys, with a count of the rest."""
    keys = list(keys)
    parts = [f"{k} {tuple(shapes[k]) if k in shapes else ''}".rstrip() for k in keys[:limit]]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(parts) + more
