"""Built-in targets: the scores people ask about, as callables ``score(out) -> (B,)`` for any gradient method.

* :func:`text_target` — cosine similarity of the image embedding and a text's (CLIP, SigLIP): the
  text is encoded by the source library's own text tower, kept by the loader (``model.text_tower``).
* :func:`image_target` — cosine similarity of the image embedding and a reference image's.
* :func:`norm_target` — the norm of the readout features (the class token's, the pool's or the
  patch mean), or of a region's mean patch token: what a backbone without a classifier explains.

The image embedding is the model's output for a CLIP-like model (its head is the projection into
the text space) and the pooled features the head reads otherwise. Each target takes one value for
every image or one per image; :func:`per_target` runs several targets (prompts, references) over
every image, one map each. :func:`similarity_map` is the direct, gradient-free "what is like this
region?" map of a DINOv2-style backbone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model import TokenLayout, VisionTransformer, ViTOutput, eval_mode

Box = tuple[float, float, float, float]

# set by relevance methods: the cosine targets then treat the embedding's norm as a constant
_NORMS_AS_CONSTANTS: ContextVar[bool] = ContextVar("norms_as_constants", default=False)


@contextmanager
def norms_as_constants() -> Iterator[None]:
    """Within: the cosine targets divide by a norm that gradients do not see (LRP's identity rule for
    normalizations); a cosine is scale-free, so gradient x input of the plain one is 0 everywhere."""
    token = _NORMS_AS_CONSTANTS.set(True)
    try:
        yield
    finally:
        _NORMS_AS_CONSTANTS.reset(token)


def _unit(x: Tensor) -> Tensor:
    """``x`` scaled to unit norm along its last axis (the norm a constant inside :func:`norms_as_constants`)."""
    if _NORMS_AS_CONSTANTS.get():
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12).detach()
    return F.normalize(x, dim=-1)


@dataclass(frozen=True)
class Score:
    """A named target: ``score(out)`` gives one number per image; ``kind`` and ``label`` say what it is."""

    kind: str
    label: str
    fn: Callable[[ViTOutput], Tensor]

    def __call__(self, out: ViTOutput) -> Tensor:
        return self.fn(out)


def embedding(model: VisionTransformer, out: ViTOutput) -> Tensor:
    """The image embedding targets compare: the output of a CLIP-like model, else the pooled features."""
    return out.logits if model.text_tower is not None else out.pooled


def embed_images(model: VisionTransformer, images: Tensor) -> Tensor:
    """:func:`embedding` of ``images`` (no gradient), for references."""
    with eval_mode(model), torch.no_grad():
        tokens = model.forward_features(images.to(next(model.parameters()).device))
        return model.forward_head(tokens, pre_logits=model.text_tower is None)


def _paired(values: Tensor, batch: int, what: str) -> Tensor:
    """One row of ``values`` per image: a single row serves every image."""
    if len(values) == 1:
        return values.expand(batch, -1)
    if len(values) != batch:
        raise ValueError(
            f"{len(values)} {what} for a batch of {batch} image(s): give one for every image or one per image "
            "(explain.per_target runs several over every image)"
        )
    return values


def _cosine_target(model: VisionTransformer, reference: Tensor, kind: str, label: str, what: str) -> Score:
    reference = F.normalize(reference.detach().float(), dim=-1)

    def score(out: ViTOutput) -> Tensor:
        image = embedding(model, out)
        if image.shape[-1] != reference.shape[-1]:
            raise ValueError(
                f"the image embedding has {image.shape[-1]} dimensions and the {what} {reference.shape[-1]}: "
                "they come from different models"
            )
        pairs = _paired(reference.to(image.device), image.shape[0], what)
        return (_unit(image.float()) * pairs).sum(dim=-1)

    return Score(kind, label, score)


def text_target(model: VisionTransformer, prompts: str | Sequence[str]) -> Score:
    """Cosine similarity of each image's embedding and a text's: one prompt for all, or one per image."""
    tower = model.text_tower
    if tower is None:
        raise ValueError(
            "a text target needs the model's text tower, and this model has none: load a CLIP or SigLIP with "
            "vitlens.from_open_clip(model), vitlens.load(an OpenCLIP or transformers CLIP/SigLIP folder or hf-hub: "
            "name) or vitlens.from_hf(CLIPModel, tokenizer=...)"
        )
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError(f"text targets are non-empty strings; got {prompts!r}")
    label = texts[0] if len(texts) == 1 else " | ".join(texts)
    return _cosine_target(model, tower.encode(texts), "text", label, "text embeddings")


def image_target(model: VisionTransformer, reference: Tensor, label: str = "reference image") -> Score:
    """Cosine similarity of each image's embedding and a reference's: ``reference`` (R, C, H, W), model-ready,
    one for all images or one per image."""
    if reference.dim() == 3:
        reference = reference[None]
    if reference.dim() != 4:
        raise ValueError(f"reference images are (R, C, H, W) tensors, got shape {tuple(reference.shape)}")
    return _cosine_target(model, embed_images(model, reference), "image", label, "reference embeddings")


def region_patches(box: Box, layout: TokenLayout) -> Tensor:
    """Indices of the patches whose centre lies in ``box`` (x0, y0, x1, y1: pixels of the model's input);
    the patch under the box's centre when the box is smaller than a patch."""
    rows, cols = layout.grid
    p = layout.patch_size
    height, width = rows * p, cols * p
    if len(box) != 4:
        raise ValueError(f"a region is (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height) or not all(map(math.isfinite, (x0, y0, x1, y1))):
        raise ValueError(
            f"region {tuple(box)} must lie inside the {width}x{height} image the model sees, with x0 < x1 and y0 < y1"
        )
    centres = (torch.arange(rows)[:, None] + 0.5) * p, (torch.arange(cols)[None, :] + 0.5) * p
    inside = (centres[0] >= y0) & (centres[0] <= y1) & (centres[1] >= x0) & (centres[1] <= x1)
    if not inside.any():
        inside[min(int((y0 + y1) / 2 // p), rows - 1), min(int((x0 + x1) / 2 // p), cols - 1)] = True
    return inside.flatten().nonzero()[:, 0]


def _layout_of(model: VisionTransformer, out: ViTOutput) -> TokenLayout:
    """The token layout behind ``out``: the model's own size, or a square grid of that many patches."""
    patches = out.features.shape[1] - model.num_prefix_tokens
    rows, cols = model.config.grid_size
    if patches != rows * cols:
        side = math.isqrt(patches)
        if side * side != patches:
            raise ValueError(f"{patches} patches: not the model's {rows}x{cols} grid, nor a square one")
        rows = cols = side
    p = model.config.patch_size
    return model.token_layout((rows * p, cols * p))


def norm_target(model: VisionTransformer, region: Box | None = None) -> Score:
    """The norm of each image's readout features, or of the mean final token of the patches in ``region``."""
    if region is None:
        return Score("features", "norm of the readout features", lambda out: out.pooled.float().norm(dim=-1))

    def score(out: ViTOutput) -> Tensor:
        layout = _layout_of(model, out)
        index = region_patches(region, layout).to(out.features.device) + layout.num_prefix_tokens
        return out.features[:, index].float().mean(dim=1).norm(dim=-1)

    return Score("region", "region " + ",".join(f"{v:g}" for v in region), score)


def similarity_map(model: VisionTransformer, images: Tensor, region: Box) -> Tensor:
    """Cosine similarity (B, gh, gw) of every patch's final token to the mean token of the patches in
    ``region`` (pixels of the model's input): a backbone's "what is like this?" map."""
    layout = model.token_layout(images)
    index = region_patches(region, layout)
    with eval_mode(model), torch.no_grad():
        tokens = model.forward_features(images.to(next(model.parameters()).device))
    patches = F.normalize(tokens[:, layout.num_prefix_tokens :].float(), dim=-1)
    query = F.normalize(patches[:, index.to(patches.device)].mean(dim=1), dim=-1)
    return (patches @ query[:, :, None])[..., 0].view(-1, *layout.grid)


def per_target(
    method: Callable[..., Tensor], model: VisionTransformer, images: Tensor, targets: Sequence, **options
) -> Tensor:
    """``method`` (gae, grad_rollout...) for each target over every image: (B, T, gh, gw)."""
    if not targets:
        raise ValueError("per_target needs at least one target")
    return torch.stack([method(model, images, target, **options) for target in targets], dim=1)
