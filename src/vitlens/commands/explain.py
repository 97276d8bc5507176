"""``vitlens explain``: for each image file, overlays per method, the per-head grid of one layer,
the attention-distance plot, and one JSON with the numbers (top-k predictions, map statistics).

Images are pre-processed exactly as the model's config says (size, crop, interpolation,
mean/std), so a converted timm or Hugging Face checkpoint sees its own pre-processing. Under
``torchrun`` every rank takes ``images[rank::world]``; each image is explained on its own, so the
files are the same as a single process writes, and rank 0 writes the JSON for all of them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import explain
from ..atomic import atomic_write, write_json
from ..checkpoint import load
from ..config import list_models
from ..data import transforms_for
from ..data.files import read_image, unique_stems
from ..factory import create_model
from ..model import VisionTransformer, eval_mode
from ..training import distributed
from ..viz import plot
from ..viz.readout import check_finite, check_top_k, class_name, display_image, top_predictions

METHODS = ("cls", "rollout", "grad-rollout", "gae")
SUMMARY_NAME = "explain.json"
OVERLAY_PIXELS = 224  # small inputs (digits) are enlarged to this for viewing


def load_model(spec: str) -> VisionTransformer:
    """A checkpoint (folder or file, any format :func:`vitlens.load` reads) or a preset name (random weights)."""
    if not Path(spec).exists() and spec in list_models():
        print(
            f"note: {spec} is a preset with random weights; pass a checkpoint to explain a trained model",
            file=sys.stderr,
        )
        return create_model(spec)
    return load(spec)


def check_methods(methods: Sequence[str], model: VisionTransformer) -> list[str]:
    """The methods asked for, in order and without repeats; ``ValueError`` for one unknown or unfit for ``model``."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown explanation method(s) {unknown}; choose from {', '.join(METHODS)}")
    if "cls" in methods and not model.config.class_token and model.config.global_pool != "map":
        raise ValueError(
            "method 'cls' needs a class token or an attention pool; this model averages its patches "
            "(use rollout or gae)"
        )
    if {"gae", "grad-rollout"} & set(methods) and model.config.num_classes == 0:
        raise ValueError("gae and grad-rollout explain a class, and this model has no classifier (num_classes=0)")
    return list(dict.fromkeys(methods))


def map_statistics(heat: Tensor) -> dict[str, Any]:
    """Numbers that describe one patch map: extremes, peak patch, how concentrated it is."""
    heat = heat.detach().double().cpu()
    flat = heat.flatten().clamp_min(0)
    p = flat / flat.sum() if flat.sum() > 0 else torch.full_like(flat, 1 / flat.numel())
    entropy = float(-(p * p.clamp_min(1e-300).log()).sum())
    top = max(1, round(0.1 * flat.numel()))
    peak = int(flat.argmax())
    return {
        "min": _round(heat.min()),
        "max": _round(heat.max()),
        "mean": _round(heat.mean()),
        "peak": [peak // heat.shape[-1], peak % heat.shape[-1]],
        "entropy": _round(entropy),
        "normalized_entropy": _round(entropy / max(torch.log(torch.tensor(float(flat.numel()))).item(), 1e-12)),
        "top10pct_mass": _round(p.sort(descending=True).values[:top].sum()),
    }


def _round(value: Any, digits: int = 6) -> float:
    return float(f"{float(value):.{digits}g}")


def explain_one(
    model: VisionTransformer, image: Tensor, methods: Sequence[str], target: int | None, layer: int
) -> dict[str, Any]:
    """One model-ready image (C, H, W): logits, a (gh, gw) map per method, the readout query's maps per
    head (H, gh, gw: the class token's in ``layer``, or the attention pool's), and the attention
    distance per layer and head (L, H)."""
    x = image[None].to(next(model.parameters()).device)
    layout = model.token_layout(x)
    with eval_mode(model), torch.no_grad():
        out = model(x, return_attention=True)
    heads = None
    if out.pool_attention is not None:
        heads = explain.cls_attention_from(out.pool_attention, layout)[0]
    elif layout.class_index is not None:
        heads = explain.cls_attention_from(out.attentions[layer], layout)[0]
    maps: dict[str, Tensor] = {}
    if "cls" in methods:
        maps["cls"] = heads.mean(0)
    if "rollout" in methods:
        maps["rollout"] = explain.rollout_from_attentions(out.attentions, layout, pool_attention=out.pool_attention)[0]
    gradient = [m for m in ("grad-rollout", "gae") if m in methods]
    if gradient:
        attn, grads, _ = explain.attention_gradients(model, x, target)
        folds = {"grad-rollout": explain.grad_rollout_from, "gae": explain.gae_from}
        for m in gradient:
            maps[m] = folds[m](attn, grads, layout)[0]
    distance = explain.attention_distance(out.attentions, layout)
    return {"logits": out.logits[0], "maps": {m: maps[m] for m in methods}, "heads": heads, "distance": distance}


def write_pictures(
    model: VisionTransformer, image: Tensor, result: dict[str, Any], folder: Path, layer: int
) -> dict[str, str]:
    """Save the overlays, head grid and distance plot of one image into ``folder``; return the file names."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = display_image(model, image)  # (the folder's name comes from unique_stems: inside the output folder)
    size = max(OVERLAY_PIXELS, *pixels.shape[:2])
    files: dict[str, str] = {}
    for method, heat in result["maps"].items():
        picture = plot.overlay(pixels, heat.detach().cpu(), size=size)
        atomic_write(folder / f"{method}.png", lambda tmp, picture=picture: picture.save(tmp, format="PNG"))
        files[method] = f"{method}.png"
    if result["heads"] is not None and model.attn_pool is not None:
        key, title = "heads_pool", "attention pool's query, per head"
        plot.head_grid(result["heads"].cpu(), pixels, path=folder / f"{key}.png", title=title)
        files[key] = f"{key}.png"
    elif result["heads"] is not None:
        key = f"heads_layer{layer % model.depth}"
        title = f"class-token attention per head, layer {layer % model.depth}"
        plot.head_grid(result["heads"].cpu(), pixels, path=folder / f"{key}.png", title=title)
        files[key] = f"{key}.png"
    plot.distance_plot(result["distance"].cpu(), path=folder / "distance.png", image_size=pixels.shape[1])
    files["distance"] = "distance.png"
    return files


def explain_files(
    model: VisionTransformer,
    paths: Sequence[Path],
    out: Path,
    methods: Sequence[str] = METHODS,
    target: int | None = None,
    layer: int = -1,
    top_k: int = 5,
    progress: bool = True,
) -> list[dict[str, Any]] | None:
    """Explain every image in ``paths`` into ``out/<name>/``; rank 0 also writes ``out/explain.json``.

    Returns the per-image records (in the order of ``paths``) on rank 0, None on other ranks.
    Every image is read and checked before anything is written, so a bad file stops the run
    with nothing half-done.
    """
    methods = check_methods(methods, model)
    explain.check_target(target, model.config.num_classes)
    check_top_k(top_k)
    model.layers_requested([layer])  # a clear error for a layer the model does not have
    paths = [Path(p) for p in paths]
    for p in paths:
        read_image(p).close()
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot write to the output folder {out}: {e.strerror or e}") from e

    world = distributed.setup()
    model = model.to(world.device)
    transform = transforms_for(model)
    names = unique_stems(paths, reserved=(SUMMARY_NAME,))
    mine = range(world.rank, len(paths), world.size)
    records = []
    for i in tqdm(mine, desc="explain", unit="image", disable=not (progress and world.is_main)):
        image = transform(read_image(paths[i]))
        result = explain_one(model, image, methods, target, layer)
        check_finite(model, image[None].to(world.device), result, str(paths[i]))
        files = write_pictures(model, image, result, out / names[i], layer)
        target_index = int(result["logits"].argmax()) if target is None else target
        records.append(
            {
                "index": i,
                "image": str(paths[i]),
                "name": names[i],
                "top": top_predictions(model, result["logits"][None], top_k)[0],
                "target": {"index": target_index, "label": class_name(model, target_index)},
                "maps": {m: {"file": f"{names[i]}/{files[m]}", **map_statistics(h)} for m, h in result["maps"].items()},
                "pictures": {k: f"{names[i]}/{v}" for k, v in files.items() if k not in result["maps"]},
                "attention_distance": [[_round(v) for v in row] for row in result["distance"].tolist()],
            }
        )
    gathered = _gather(records, world)
    if gathered is not None:
        gathered.sort(key=lambda r: r["index"])
        summary = {
            "model": {  # class names are in the predictions; a thousand of them here would drown the rest
                "config": {k: v for k, v in model.config.to_dict().items() if k != "labels"},
                "layer": layer % model.depth,
            },
            "methods": methods,
            "images": [{k: v for k, v in r.items() if k != "index"} for r in gathered],
        }
        write_json(out / SUMMARY_NAME, summary, indent=1)
    distributed.teardown()
    return None if gathered is None else summary["images"]


def _gather(records: list[dict[str, Any]], world) -> list[dict[str, Any]] | None:
    """Every rank's records on rank 0 (None elsewhere); a world of one keeps its own."""
    if not world.distributed:
        return records
    import torch.distributed as dist

    parts: list[Any] | None = [None] * world.size if world.is_main else None
    dist.gather_object(records, parts, dst=0)
    return [r for part in parts for r in part] if world.is_main else None
