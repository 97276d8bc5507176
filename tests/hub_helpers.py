"""A Hugging Face cache laid out by hand, and transformers' image processors to compare against."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch


def put_in_cache(cache: Path, repo_id: str, folder: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Lay ``folder``'s files out as huggingface_hub does: content-addressed blobs, snapshot symlinks, refs."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for file in folder.iterdir():
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, repo / "blobs" / digest)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", digest))
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def hf_processors(kind: str, folder: Path):
    """The repository's processor in transformers' PIL backend and in its torchvision one (4.x: slow / fast)."""
    import transformers

    pil = getattr(transformers, f"{kind}ImageProcessorPil", None)
    tensor = getattr(transformers, f"{kind}ImageProcessorFast", None) if pil is None else None
    pil, tensor = (
        pil or getattr(transformers, f"{kind}ImageProcessor"),
        tensor or getattr(transformers, f"{kind}ImageProcessor"),
    )
    return pil.from_pretrained(folder), tensor.from_pretrained(folder)


def assert_matches_processors(ours, kind: str, folder: Path, image, std: float):
    """Equal to the PIL backend; within one 8-bit level of the torchvision one, on under 1% of the values."""
    pil, tensor = hf_processors(kind, folder)
    exact = pil(images=image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours[None], exact, atol=1e-5, rtol=0)
    near = tensor(images=image, return_tensors="pt")["pixel_values"]
    diff = (ours[None] - near).abs()
    assert diff.max() <= 1 / 255 / std + 1e-5 and (diff > 1e-5).float().mean() < 0.01
    return exact
