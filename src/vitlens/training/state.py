"""Training checkpoints: the model (``save_pretrained``) plus everything needed to continue.

A checkpoint is a folder (``last/``, ``best/``) holding ``config.json`` + ``model.safetensors``
(readable by :func:`vitlens.load`) and ``train_state.pt`` (optimizer, scheduler, EMA, RNG
states, epoch, step). It is built completely in a temporary folder and then swapped in with
renames, so a kill at any instant leaves either the old or the new checkpoint, never a mix.

``train_state.pt`` holds only tensors, numbers, strings and containers of them (the RNG states
are stored as tensors too), and is read with ``torch.load(weights_only=True)``: run folders are
shared between people and machines, and nothing stored in one is ever executed.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import save_pretrained

STATE_NAME = "train_state.pt"
STATE_KEYS = ("model", "optimizer", "scheduler", "rng", "epoch", "step", "best_top1", "train_config")


def rng_states() -> dict[str, Any]:
    """The states of every random generator a training step can touch."""
    import numpy as np

    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),  # (version, tuple of 625 ints, None): plain types
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    n = states["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _old_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def write_checkpoint(path: str | Path, model: torch.nn.Module, state: dict[str, Any]) -> Path:
    """Write ``model`` (its ``save_pretrained``) and ``state`` into folder ``path``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a write that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        save_pretrained(model, tmp)
        try:
            torch.save(state, tmp / STATE_NAME)
        except RuntimeError as e:  # torch reports a full disk as "[enforce fail at inline_container.cc] ..."
            raise OSError(f"cannot write the training state into {path}: {e} (is the disk full?)") from e
        old = _old_path(path)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)  # from here until the next rename, the reader falls back to `old`
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """The folder to read: ``path`` itself, or the previous one when a swap was cut short."""
    path = Path(path)
    if (path / STATE_NAME).exists():
        return path
    old = _old_path(path)
    if (old / STATE_NAME).exists():
        return old
    raise FileNotFoundError(
        f"no training checkpoint at {path} (expected {path / STATE_NAME}): the run stopped before its first "
        "checkpoint, or this is not a run folder; start it again with --overwrite"
    )


def read_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The ``train_state.pt`` of the checkpoint folder ``path``, read without executing anything in it."""
    file = resolve_checkpoint(path) / STATE_NAME
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as e:  # the unpickler raises many kinds for hostile, truncated or foreign files
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{file}: not a vitlens training state that can be read safely ({first}). vitlens reads it with "
            "weights_only=True and never executes objects stored in it; a file that holds anything but tensors, "
            "numbers, strings and containers of them, or a truncated one, is refused."
        ) from e
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{file}: not a vitlens training state; it lacks {', '.join(missing)}")
    return state
