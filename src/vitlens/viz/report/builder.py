"""Build the self-contained attention explorer: one HTML file, its data embedded, no network.

Per image the file holds every layer's and head's attention of every token over the patches
(8-bit, per-row scaled, zlib + base64, one chunk per layer so the browser inflates only what
is shown), the top predictions, and the explanation maps that need no browser-side compute.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ... import explain
from ...atomic import write_text
from ...data import transforms_for
from ...data.files import read_image
from ...explain.fold import running_products
from ...explain.rollout import residual_step
from ...model import TokenLayout, VisionTransformer, eval_mode
from ..readout import check_finite, check_top_k, class_name, display_image, top_predictions
from .encode import pack_rows

ImageInput = Any  # a model-ready tensor (B, C, H, W) / (C, H, W), a PIL image, or a path


@dataclass(frozen=True)
class View:
    """One way of looking at an image: which maps it shows and what the controls do in it."""

    id: str
    label: str
    query: str  # 'patch': follows the mouse; 'class': the class token; 'none': one map per image
    heads: bool
    help: str


VIEWS = {
    "attention": View(
        "attention",
        "patch attention",
        "patch",
        True,
        "Hover over a patch to see where it attends; click to pin it (arrow keys move it), Esc for the class token.",
    ),
    "cls": View("cls", "class token", "class", True, "Where the class token attends in the chosen layer and head."),
    "rollout": View(
        "rollout",
        "rollout",
        "patch",
        False,
        "Attention rollout: attention multiplied through the layers up to the chosen one "
        "(heads averaged, identity added). Hover or click a patch to change the query.",
    ),
    "gae": View(
        "gae",
        "GAE",
        "none",
        False,
        "Chefer et al.'s gradient-weighted relevance for the chosen target (all layers).",
    ),
    "grad-rollout": View(
        "grad-rollout",
        "gradient rollout",
        "none",
        False,
        "Rollout with heads weighted by the gradient of the chosen target (all layers).",
    ),
    "attnlrp": View(
        "attnlrp",
        "AttnLRP",
        "none",
        False,
        "AttnLRP (Achtibat et al. 2024): how much each patch token adds to the chosen target's score.",
    ),
    "cp-lrp": View(
        "cp-lrp", "CP-LRP", "none", False, "LRP with the attention maps held constant: relevance through the values."
    ),
    "chefer2021": View(
        "chefer2021",
        "Chefer 2021",
        "none",
        False,
        "Chefer et al. (CVPR 2021): each map's LRP relevance times its gradient, rolled out (all layers).",
    ),
    "gradcam": View(
        "gradcam", "Grad-CAM", "none", False, "Grad-CAM (the grad-cam package) on the tokens entering the last block."
    ),
    "ig": View("ig", "integrated gradients", "none", False, "Captum's Integrated Gradients, summed per patch."),
    "occlusion": View(
        "occlusion", "occlusion", "none", False, "How much the target's score drops when a patch is blacked out."
    ),
}
GRADIENT_VIEWS = ("gae", "grad-rollout")  # always there; the others on request (many passes each)


def prepare_images(model: VisionTransformer, images: ImageInput | Sequence[ImageInput]) -> tuple[Tensor, list[str]]:
    """Model-ready batch (B, C, H, W) and a display name per image.

    Tensors are taken as already pre-processed; PIL images and paths go through
    :func:`vitlens.transforms_for` (the model's own size, crop, interpolation, mean and std).
    """
    c = model.config
    if isinstance(images, Tensor):
        batch = images[None] if images.dim() == 3 else images
        names = [f"image {i}" for i in range(len(batch))]
    else:
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError("no images given")
        tensors, names = [], []
        transform = None
        for i, item in enumerate(items):
            if isinstance(item, (str, os.PathLike)):
                names.append(Path(item).name)
                item = read_image(item)
            else:
                names.append(f"image {i}")
            if not isinstance(item, Tensor):
                if transform is None:
                    transform = transforms_for(model)
                item = transform(item)
            tensors.append(item)
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) != 1:
            raise ValueError(f"images must share one size after pre-processing, got shapes {sorted(shapes)}")
        batch = torch.stack(tensors)
    if batch.dim() != 4 or batch.shape[1] != c.in_chans:
        raise ValueError(
            f"expected images of shape (batch, {c.in_chans}, height, width) for this {c.in_chans}-channel model, "
            f"got {tuple(batch.shape)}"
        )
    return batch, names


def png_data_url(pixels: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def colour_table(cmap: str = "inferno") -> str:
    """The colour map as 256 RGB triples, base64: the browser colours maps with the same table."""
    from matplotlib import colormaps

    rgb = (colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    return base64.b64encode(rgb.tobytes()).decode("ascii")


def model_summary(model: VisionTransformer, layout: TokenLayout, size: tuple[int, int]) -> str:
    c = model.config
    prefix = f", {layout.num_prefix_tokens} prefix token(s)" if layout.num_prefix_tokens else ""
    return (
        f"{c.depth} layers × {c.num_heads} heads, {c.patch_size}px patches on {size[0]}×{size[1]} images "
        f"({layout.grid[0]}×{layout.grid[1]} patches{prefix})"
    )


def _rounded(values: Tensor, digits: int = 4) -> list:
    return np.round(values.detach().float().cpu().numpy(), digits).tolist()


def rollout_rows(attentions: Sequence[Tensor], layout: TokenLayout) -> Tensor:
    """Rollout through layers 0..l for every l, every query token's row over the patches: (L, N, P).

    One image's maps; the rows are what the explorer shows when a patch is hovered in the rollout view.
    """
    products = running_products(residual_step(attn) for attn in attentions)
    return torch.stack([product[0][:, layout.patch_slice] for product in products])


def gradient_maps(
    model: VisionTransformer, image: Tensor, target: explain.Target, extra: Sequence[str] = ()
) -> dict[str, Any]:
    """GAE and gradient-rollout maps of one image (1, C, H, W) for ``target`` — and the ``extra`` methods
    of :data:`vitlens.explain.ATTRIBUTIONS` — each scaled to a maximum of 1, and the class a class target
    resolved to."""
    maps, grads, classes = explain.attention_gradients(model, image, target)
    layout = model.token_layout(image)
    out: dict[str, Any] = {} if classes is None else {"index": int(classes[0])}
    heats = {
        "gae": explain.gae_from(maps, grads, layout),
        "grad-rollout": explain.grad_rollout_from(maps, grads, layout),
    }
    heats.update({m: explain.ATTRIBUTIONS[m](model, image, target) for m in extra})
    for key, heat in heats.items():
        heat = heat[0].flatten().clamp_min(0)  # what raises the score (occlusion, IG and LRP have signs)
        out[key] = _rounded(heat / heat.max().clamp_min(1e-12))
    return out


def report_targets(
    model: VisionTransformer,
    target: int | None,
    texts: Sequence[str],
    references: Sequence[ImageInput],
    top_targets: int,
) -> list[tuple[explain.Target, dict[str, Any]]]:
    """What the explorer's target selector offers, built before any work: a class (``target``, else the
    top ``top_targets`` predictions of each image, as ``('top', k)``), each text, each reference image; a
    backbone with none of them, the norm of its features."""
    chosen: list[tuple[Any, dict[str, Any]]] = []
    if model.config.num_classes:
        if target is not None:
            chosen.append((target, {"kind": "class", "index": target, "label": class_name(model, target)}))
        elif not texts and not references:
            k = min(top_targets, model.config.num_classes)
            chosen += [(("top", j), {"kind": "class"}) for j in range(k)]
    chosen += [(explain.text_target(model, t), {"kind": "text", "label": t}) for t in texts]
    if references:
        refs, names = prepare_images(model, references)
        chosen += [
            (explain.image_target(model, r, label=n), {"kind": "image", "label": n}) for r, n in zip(refs, names)
        ]
    if not chosen:
        score = explain.norm_target(model)
        chosen.append((score, {"kind": "features", "label": score.label}))
    return chosen


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element (no ``</script>`` or ``<!--`` can appear in it)."""
    return json.dumps(value, separators=(",", ":")).replace("<", "\\u003c")


def _chunk(ident: str, text: str) -> str:
    return f'<script type="application/octet-stream" id="{ident}">{text}</script>'


def check_writable(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or a clear ``OSError`` when no file can be written there (checked before any work)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write the report to {path}: it is a folder; name a file like report.html")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write the report to {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"cannot write the report to {path}: no permission to write in {folder}")
    return path


@dataclass
class Report:
    """A built explorer: ``save(path)`` writes it; in Jupyter it shows itself inline."""

    html: str

    def save(self, path: str | os.PathLike) -> Path:
        """Write the HTML atomically (temp file + rename); a clear ``OSError`` when ``path`` can't be written."""
        path = check_writable(path)
        try:
            write_text(path, self.html)
        except OSError as e:
            raise OSError(f"cannot write the report to {path}: {e.strerror or e}") from e
        return path

    def _repr_html_(self) -> str:
        return (
            f'<iframe srcdoc="{html.escape(self.html, quote=True)}" style="width:100%;height:780px;border:0" '
            'sandbox="allow-scripts"></iframe>'
        )


def render(
    model: VisionTransformer,
    images: ImageInput | Sequence[ImageInput],
    *,
    names: Sequence[str] | None = None,
    target: int | None = None,
    texts: Sequence[str] = (),
    references: Sequence[ImageInput] = (),
    top_targets: int = 3,
    methods: Sequence[str] = (),
    top_k: int = 5,
    title: str = "vitlens attention explorer",
    gradients: bool = True,
) -> Report:
    """Run ``model`` on ``images`` and build the explorer in memory (see :func:`build`)."""
    explain.check_target(target, model.config.num_classes)
    check_top_k(top_k)
    unknown = [m for m in methods if m not in explain.ATTRIBUTIONS]
    if unknown:
        known = ", ".join(explain.ATTRIBUTIONS)
        raise ValueError(f"report methods beyond GAE and gradient rollout: {known}; got {unknown}")
    targets = report_targets(model, target, texts, references, top_targets) if gradients else []
    batch, default_names = prepare_images(model, images)
    names = list(names) if names is not None else default_names
    if len(names) != len(batch):
        raise ValueError(f"got {len(names)} names for {len(batch)} images")
    device = next(model.parameters()).device
    layout = model.token_layout(batch)
    records, chunks = [], []
    with eval_mode(model):
        for i in range(len(batch)):
            x = batch[i : i + 1].to(device)
            with torch.no_grad():
                out = model(x, return_attention=True)
            record = {
                "name": str(names[i]),
                "src": png_data_url(display_image(model, batch[i])),
                "top": top_predictions(model, out.logits, top_k)[0],
                "distance": _rounded(explain.attention_distance(out.attentions, layout)),
            }
            for layer, weights in enumerate(out.attentions):
                chunks.append(_chunk(f"vl-a-{i}-{layer}", pack_rows(weights[0][..., layout.patch_slice])))
            chunks.append(_chunk(f"vl-r-{i}", pack_rows(rollout_rows(out.attentions, layout))))
            record["targets"] = []
            for chosen, described in targets:
                if isinstance(chosen, tuple):  # the image's k-th prediction
                    chosen = int(out.logits[0].topk(chosen[1] + 1).indices[-1])
                maps = gradient_maps(model, x, chosen, methods)
                if "index" in maps:
                    described = {**described, "index": maps["index"], "label": class_name(model, maps["index"])}
                record["targets"].append({**described, **maps})
            check_finite(model, x, [out.logits, out.attentions], names[i])
            records.append(record)
    views = [VIEWS["attention"]] + ([VIEWS["cls"]] if layout.class_index is not None else []) + [VIEWS["rollout"]]
    views += [VIEWS[v] for v in (*GRADIENT_VIEWS, *dict.fromkeys(methods)) if targets]
    meta = {
        "model": {
            "depth": model.depth,
            "heads": model.config.num_heads,
            "grid": list(layout.grid),
            "tokens": layout.num_tokens,
            "prefix": layout.num_prefix_tokens,
            "class_index": layout.class_index,
            "dist_index": layout.dist_index,
            "register_indices": list(layout.register_indices),
            "summary": model_summary(model, layout, tuple(batch.shape[-2:])),
        },
        "lut": colour_table(),
        "views": [v.__dict__ for v in views],
        "images": records,
    }
    return Report(_fill_template(title, meta, chunks))


def _fill_template(title: str, meta: dict[str, Any], chunks: list[str]) -> str:
    files = resources.files(__package__)
    page = files.joinpath("template.html").read_text(encoding="utf-8")
    parts = {
        "__TITLE__": html.escape(title),
        "__STYLE__": files.joinpath("explorer.css").read_text(encoding="utf-8"),
        "__META__": _script_json(meta),
        "__CHUNKS__": "\n".join(chunks),
        "__SCRIPT__": files.joinpath("explorer.js").read_text(encoding="utf-8"),
    }
    # one pass over the template: text inside the embedded data is never substituted again
    return re.sub("|".join(parts), lambda m: parts[m.group(0)], page)


def build(
    model: VisionTransformer,
    images: ImageInput | Sequence[ImageInput],
    path: str | os.PathLike,
    **options: Any,
) -> Path:
    """Write the attention explorer for ``images`` to ``path`` (one self-contained HTML file); return the path.

    ``images``: a model-ready tensor, PIL images or image paths. Options: ``names``; the targets of
    the gradient views, which the page's target selector switches between: ``target`` (a class;
    default each image's ``top_targets`` predictions), ``texts`` (prompts, for CLIP and SigLIP),
    ``references`` (images to compare with); ``methods``: more views beside GAE and gradient rollout
    (``gradcam``, ``ig``, ``occlusion``; each many passes per image and target); ``top_k``, ``title``,
    ``gradients`` (False skips the backward passes and the gradient views).
    """
    check_writable(path)
    return render(model, images, **options).save(path)
