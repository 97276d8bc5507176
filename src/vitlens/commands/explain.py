"""``vitlens explain``: for each image file, overlays per method, the per-head grid of one layer,
the attention-distance plot, and one JSON with the numbers (top-k predictions, map statistics).

Images are pre-processed exactly as the model's config says (size, crop, interpolation,
mean/std), so a converted timm or Hugging Face checkpoint sees its own pre-processing. Under
``torchrun`` every rank takes ``images[rank::world]``; each image is explained on its own, so the
files are the same as a single process writes, and rank 0 writes the JSON for all of them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
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
from ..explain.scores import Box
from ..factory import create_model
from ..model import VisionTransformer, eval_mode
from ..training import distributed
from ..viz import plot
from ..viz.readout import check_finite, check_top_k, class_name, display_image, top_predictions
from .methods import DEFAULT_METHODS, GRADIENT_METHODS, METHODS, SIGNED_METHODS

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


@dataclass(frozen=True)
class NamedTarget:
    """One thing the gradient methods explain, with how the JSON and the file names call it."""

    target: explain.Target
    record: dict[str, Any]
    slug: str


def _unfit(method: str, model: VisionTransformer, region: Box | None) -> str | None:
    """Why ``method`` does not apply to ``model`` (None when it does)."""
    if method == "cls" and not model.config.class_token and model.config.global_pool != "map":
        return "method 'cls' needs a class token or an attention pool; this model averages its patches"
    if method == "similarity" and region is None:
        return "method 'similarity' compares every patch with a region: give --region x0,y0,x1,y1"
    return None


def check_methods(
    methods: Sequence[str] | None, model: VisionTransformer, region: Box | None = None
) -> tuple[list[str], list[str]]:
    """The methods to run, and (when none were named) those skipped with why.

    Named methods must all apply (``ValueError`` otherwise); by default every method that applies
    to this model runs: class-token maps when it has a class token or a pool, rollout, the
    gradient methods (a backbone's explain the norm of its features), the region's similarity map.
    """
    if methods is None:
        reasons = {m: _unfit(m, model, region) for m in DEFAULT_METHODS}
        skipped = [f"{m} ({why.split('; ', 1)[-1]})" for m, why in reasons.items() if why]
        return [m for m in DEFAULT_METHODS if reasons[m] is None], skipped
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown explanation method(s) {unknown}; choose from {', '.join(METHODS)}")
    for m in methods:
        if why := _unfit(m, model, region):
            raise ValueError(why)
    return list(dict.fromkeys(methods)), []


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "target"


def resolve_targets(
    model: VisionTransformer,
    target: int | None = None,
    texts: Sequence[str] = (),
    references: Sequence[Path] = (),
    region: Box | None = None,
) -> list[NamedTarget]:
    """What the gradient methods explain, checked before anything is written.

    The class ``target`` (default: the prediction, for a model with a classifier), each text, each
    reference image and the region, in that order; a backbone with none of them explains the norm
    of its readout features.
    """
    named: list[NamedTarget] = []
    if target is not None or (model.config.num_classes and not texts and not references and region is None):
        explain.check_target(target, model.config.num_classes)
        label = "the predicted class" if target is None else class_name(model, target)
        named.append(NamedTarget(target, {"kind": "class", "index": target, "label": label}, "class"))
    for text in texts:
        named.append(NamedTarget(explain.text_target(model, text), {"kind": "text", "label": text}, _slug(text)))
    transform = transforms_for(model) if references else None
    for path in references:
        image = transform(read_image(Path(path)))
        score = explain.image_target(model, image, label=str(path))
        named.append(NamedTarget(score, {"kind": "image", "label": str(path)}, _slug(Path(path).stem)))
    if region is not None:
        explain.region_patches(region, model.token_layout(model.config.img_hw))  # inside the image?
        score = explain.norm_target(model, region)
        named.append(NamedTarget(score, {"kind": "region", "label": score.label, "box": list(region)}, "region"))
    if not named:
        score = explain.norm_target(model)
        named.append(NamedTarget(score, {"kind": "features", "label": score.label}, "features"))
    return named


def map_keys(methods: Sequence[str], targets: Sequence[NamedTarget]) -> dict[str, tuple[str, int | None]]:
    """File stem -> (method, target index or None): one map per gradient method and target."""
    keys: dict[str, tuple[str, int | None]] = {}
    for method in methods:
        if method not in GRADIENT_METHODS:
            keys[method] = (method, None)
        elif len(targets) == 1:
            keys[method] = (method, 0)
        else:
            for j, t in enumerate(targets):
                keys[f"{method}_{j + 1}_{t.slug}"] = (method, j)
    return keys


def describe_target(
    model: VisionTransformer,
    targets: Sequence[NamedTarget],
    classes: dict[int, int],
    region: Box | None,
    j: int | None,
    method: str,
) -> dict[str, Any]:
    """The JSON's ``target`` of one map: target ``j`` (a class resolved to its index and name), or
    what an attention-only map shows."""
    if j is None and method == "similarity":
        return {"kind": "region", "label": f"similarity to region {','.join(f'{v:g}' for v in region)}"}
    if j is None:
        readout = model.token_layout(model.config.img_hw).readout
        who = {"class": "the class token", "pool": "the attention pool's query", "mean": "the mean of the patches"}
        return {"kind": "attention", "label": f"where {who[readout]} looks"}
    record = dict(targets[j].record)
    if j in classes:
        record.update(index=classes[j], label=class_name(model, classes[j]))
    return record


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
    model: VisionTransformer,
    image: Tensor,
    methods: Sequence[str],
    targets: Sequence[NamedTarget],
    layer: int,
    region: Box | None = None,
) -> dict[str, Any]:
    """One model-ready image (C, H, W): logits, a (gh, gw) map per :func:`map_keys` entry, the readout
    query's maps per head (H, gh, gw: the class token's in ``layer``, or the attention pool's), the
    attention distance per layer and head (L, H), and the class each class target resolved to."""
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
    classes: dict[int, int] = {}
    gradients: dict[int, tuple[list[Tensor], list[Tensor]]] = {}
    folds = {"grad-rollout": explain.grad_rollout_from, "gae": explain.gae_from}
    for j, named in enumerate(targets):  # class targets: the class each one is
        if named.target is None or isinstance(named.target, int):
            classes[j] = int(out.logits[0].argmax()) if named.target is None else named.target
    for key, (method, j) in map_keys(methods, targets).items():
        if method == "cls":
            maps[key] = heads.mean(0)
        elif method == "rollout":
            maps[key] = explain.rollout_from_attentions(out.attentions, layout, pool_attention=out.pool_attention)[0]
        elif method == "similarity":
            maps[key] = explain.similarity_map(model, x, region)[0]
        elif method in explain.ATTRIBUTIONS:
            maps[key] = explain.ATTRIBUTIONS[method](model, x, targets[j].target)[0]
        else:
            if j not in gradients:
                attn, grads, _ = explain.attention_gradients(model, x, targets[j].target)
                gradients[j] = (attn, grads)
            maps[key] = folds[method](*gradients[j], layout)[0]
    distance = explain.attention_distance(out.attentions, layout)
    high = explain.high_norm_tokens(model, x).high[0]  # (L, gh, gw)
    return {
        "logits": out.logits[0],
        "maps": maps,
        "heads": heads,
        "distance": distance,
        "classes": classes,
        "high_norm": high,
    }


def write_pictures(
    model: VisionTransformer, image: Tensor, result: dict[str, Any], folder: Path, layer: int
) -> dict[str, str]:
    """Save the overlays, head grid and distance plot of one image into ``folder``; return the file names."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = display_image(model, image)  # (the folder's name comes from unique_stems: inside the output folder)
    size = max(OVERLAY_PIXELS, *pixels.shape[:2])
    files: dict[str, str] = {}
    for method, heat in result["maps"].items():
        marks = result["high_norm"][-1] if method == "cls" else None  # artifacts, where the class token may look
        signed = method.split("_", 1)[0] in SIGNED_METHODS  # keys: method[_target]
        picture = plot.overlay(pixels, heat.detach().cpu(), size=size, marks=marks, signed=signed)
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
    methods: Sequence[str] | None = None,
    target: int | None = None,
    layer: int = -1,
    top_k: int = 5,
    progress: bool = True,
    texts: Sequence[str] = (),
    references: Sequence[Path] = (),
    region: Box | None = None,
) -> list[dict[str, Any]] | None:
    """Explain every image in ``paths`` into ``out/<name>/``; rank 0 also writes ``out/explain.json``.

    ``methods``: None picks those that apply to the model (and says on stderr which it skipped).
    The gradient methods explain each target of :func:`resolve_targets`: a class, each text
    (CLIP/SigLIP), each reference image, a region (pixels of the model's input), or a backbone's
    feature norm. Returns the per-image records (in the order of ``paths``) on rank 0, None on other
    ranks. Every image, target and option is checked before anything is written.
    """
    methods, skipped = check_methods(methods, model, region)
    check_top_k(top_k)
    model.layers_requested([layer])  # a clear error for a layer the model does not have
    targets = resolve_targets(model, target, texts, references, region)
    paths = [Path(p) for p in paths]
    for p in paths:
        read_image(p).close()
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot write to the output folder {out}: {e.strerror or e}") from e

    world = distributed.setup()
    if skipped and world.is_main and progress:
        print(f"skipped: {'; '.join(skipped)}", file=sys.stderr)
    model = model.to(world.device)
    transform = transforms_for(model)
    names = unique_stems(paths, reserved=(SUMMARY_NAME,))
    keys = map_keys(methods, targets)
    mine = range(world.rank, len(paths), world.size)
    records = []
    for i in tqdm(mine, desc="explain", unit="image", disable=not (progress and world.is_main)):
        image = transform(read_image(paths[i]))
        result = explain_one(model, image, methods, targets, layer, region)
        check_finite(model, image[None].to(world.device), result, str(paths[i]))
        files = write_pictures(model, image, result, out / names[i], layer)

        described = partial(describe_target, model, targets, result["classes"], region)
        records.append(
            {
                "index": i,
                "image": str(paths[i]),
                "name": names[i],
                "top": top_predictions(model, result["logits"][None], top_k)[0] if model.config.num_classes else [],
                "target": described(0, "gae"),
                "maps": {
                    k: {
                        "file": f"{names[i]}/{files[k]}",
                        "method": m,
                        "target": described(j, m),
                        **map_statistics(result["maps"][k]),
                    }
                    for k, (m, j) in keys.items()
                },
                "pictures": {k: f"{names[i]}/{v}" for k, v in files.items() if k not in result["maps"]},
                "attention_distance": [[_round(v) for v in row] for row in result["distance"].tolist()],
                "high_norm_tokens": {  # outlined in cls.png: norms above 3x the median (registers paper)
                    "last_layer": result["high_norm"][-1].nonzero().tolist(),
                    "per_layer": result["high_norm"].flatten(1).sum(1).tolist(),
                },
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
            "skipped": skipped,
            "targets": [t.record for t in targets],
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
