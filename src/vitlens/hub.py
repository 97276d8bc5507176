"""Pretrained models by name: timm's and Hugging Face's weights, with their class names and pre-processing.

``vitlens.load("hf-hub:google/vit-base-patch16-224")``, ``vitlens.load("timm/vit_small_patch16_224.augreg_in1k")``
and ``vitlens.create_model("vit_small_patch16_224", pretrained=True)`` end here. Files are fetched with
``huggingface_hub`` into its standard cache (``$HF_HOME/hub``, shared with timm and transformers, so
nothing is downloaded twice); ``HF_HUB_OFFLINE=1`` reads only that cache. Safetensors files are preferred
to pickles. The weights themselves are read by :func:`vitlens.checkpoint.load`; this module adds what the
repository says about the images the model expects (size, crop, interpolation, mean/std) and the names
of its classes, so that pictures say "tabby, tabby cat 0.83" and inputs are prepared as in training.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .config import CROP_MODES
from .model import VisionTransformer

HF_PREFIX = "hf-hub:"
TIMM_PREFIX = "timm/"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in order of preference: no pickle when avoidable
METADATA_FIELDS = ("image_mean", "image_std", "interpolation", "crop_pct", "crop_mode", "labels")

# The weights timm loads for a preset named without a tag (timm's default pretrained tag).
DEFAULT_TAGS: dict[str, str] = {
    "vit_tiny_patch16_224": "augreg_in21k_ft_in1k",
    "vit_small_patch16_224": "augreg_in21k_ft_in1k",
    "vit_base_patch16_224": "augreg2_in21k_ft_in1k",
    "vit_base_patch32_224": "augreg_in21k_ft_in1k",
    "vit_large_patch16_224": "augreg_in21k_ft_in1k",
    "deit_tiny_patch16_224": "fb_in1k",
    "deit_small_patch16_224": "fb_in1k",
    "deit_base_patch16_224": "fb_in1k",
    "deit_tiny_distilled_patch16_224": "fb_in1k",
    "deit_small_distilled_patch16_224": "fb_in1k",
    "deit_base_distilled_patch16_224": "fb_in1k",
    "vit_small_patch14_dinov2": "lvd142m",
    "vit_base_patch14_dinov2": "lvd142m",
    "vit_large_patch14_dinov2": "lvd142m",
    "vit_giant_patch14_dinov2": "lvd142m",
    "vit_small_patch14_reg4_dinov2": "lvd142m",
    "vit_base_patch14_reg4_dinov2": "lvd142m",
    "vit_large_patch14_reg4_dinov2": "lvd142m",
    "vit_giant_patch14_reg4_dinov2": "lvd142m",
}

# PIL resampling codes (Hugging Face's ``resample``) -> torchvision InterpolationMode values.
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# ImageNet variants timm recognises by their class count (its ``ImageNetInfo`` subsets).
_IMAGENET_SUBSETS = {
    11221: "imagenet-21k-miil",
    11821: "imagenet-12k",
    21841: "imagenet-22k",
    21842: "imagenet-22k-ms",
    21843: "imagenet-21k-goog",
}
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class HubName:
    """A model repository on the Hub and the revision (branch, tag or commit; ``None`` = main)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


def is_hub_name(name: Any) -> bool:
    """True for ``hf-hub:ORG/NAME[@rev]`` and for ``timm/NAME.TAG`` when no such local path exists."""
    if not isinstance(name, str):
        return False
    return name.startswith(HF_PREFIX) or (name.startswith(TIMM_PREFIX) and not os.path.exists(name))


def parse_name(name: str) -> HubName:
    """Split ``hf-hub:ORG/NAME[@revision]`` or ``timm/NAME[.TAG][@revision]`` into repository and revision.

    A ``timm/`` name without a tag gets timm's default tag for that preset.
    """
    text = name[len(HF_PREFIX) :] if name.startswith(HF_PREFIX) else name
    repo_id, at, revision = text.partition("@")
    if not _REPO_ID.match(repo_id) or (at and not revision):
        raise ValueError(
            f"cannot read model name {name!r}: expected 'hf-hub:ORG/NAME', 'hf-hub:ORG/NAME@REVISION' "
            "or 'timm/NAME.TAG' (e.g. 'hf-hub:google/vit-base-patch16-224', 'timm/vit_small_patch16_224.augreg_in1k')"
        )
    if repo_id.startswith(TIMM_PREFIX) and "." not in repo_id:
        repo_id = pretrained_repo(repo_id[len(TIMM_PREFIX) :])
    return HubName(repo_id, revision or None)


def pretrained_repo(model_name: str) -> str:
    """The Hub repository of timm's weights for a preset: ``vit_small_patch16_224`` -> ``timm/vit_small_...in1k``."""
    base, _, tag = model_name.partition(".")
    if not tag:
        if base not in DEFAULT_TAGS:
            known = ", ".join(sorted(DEFAULT_TAGS))
            raise ValueError(f"no public weights are known for {model_name!r}; presets with weights: {known}")
        tag = DEFAULT_TAGS[base]
    return f"{TIMM_PREFIX}{base}.{tag}"


# ---------------------------------------------------------------------------------------------- the cache
def hub_cache_dir() -> Path:
    """The Hugging Face cache folder, read from the environment now (``HF_HUB_CACHE``, else ``$HF_HOME/hub``)."""
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.path.expanduser(env["HF_HUB_CACHE"])))
    if env.get("HF_HOME"):
        return Path(os.path.expandvars(os.path.expanduser(env["HF_HOME"]))) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) forbids downloads, read from the environment now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is None:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def repo_cache_dir(name: HubName, cache_dir: Path | None = None) -> Path:
    """The cache folder of one repository: ``<cache>/models--ORG--NAME`` (blobs, refs, snapshots)."""
    return (cache_dir or hub_cache_dir()) / ("models--" + name.repo_id.replace("/", "--"))


def snapshot_dir(name: HubName, cache_dir: Path | None = None) -> Path | None:
    """Where the cache keeps this revision's files (``snapshots/<commit>``); ``None`` if the revision is unknown."""
    repo, ref = repo_cache_dir(name, cache_dir), name.revision or "main"
    if _COMMIT.match(ref):
        return repo / "snapshots" / ref
    ref_file = repo / "refs" / ref
    return repo / "snapshots" / ref_file.read_text().strip() if ref_file.is_file() else None


@dataclass(frozen=True)
class HubFiles:
    """The local paths of a repository's files once they are in the cache."""

    config: Path
    weights: Path
    preprocessor: Path | None


def _download(name: HubName, filename: str, cache_dir: Path, offline: bool) -> Path | None:
    """One file through ``hf_hub_download``; ``None`` when the repository or the cache lacks it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        path = hf_hub_download(
            name.repo_id, filename, revision=name.revision, cache_dir=cache_dir, local_files_only=offline
        )
    except EntryNotFoundError:  # remote: not in the repository; local: not in the cache (offline or no network)
        return None
    except RevisionNotFoundError as e:
        raise ValueError(f"model {str(name)!r}: the Hub has no revision {name.revision!r}") from e
    except RepositoryNotFoundError as e:
        raise ValueError(
            f"model {str(name)!r}: no such repository on the Hub, or it is private or gated "
            "(log in with `hf auth login` for gated models)"
        ) from e
    return Path(path)


def _missing_error(name: HubName, wanted: tuple[str, ...], cache_dir: Path, offline: bool) -> FileNotFoundError:
    """One message: the model, the cache paths tried, and how to put the files there by hand."""
    repo, ref = repo_cache_dir(name, cache_dir), name.revision or "main"
    where = snapshot_dir(name, cache_dir)
    if where is not None:
        tried = "\n".join(f"  {where / f}" for f in wanted)
        place = f"copy them into {where}/"
    else:
        tried = f"  {repo / 'refs' / ref} (absent: the cache does not know revision {ref!r})"
        place = (
            f"copy them into {repo}/snapshots/<commit>/ and write that <commit> into {repo}/refs/{ref} "
            f"(any 40-digit hex id will do, e.g. {'0' * 40})"
        )
    why = "HF_HUB_OFFLINE is set, so only the local cache is read"
    if not offline:
        why = "not cached, and the Hub lacks it or cannot be reached"
    revision = f" --revision {name.revision}" if name.revision else ""
    return FileNotFoundError(
        f"cannot load model {str(name)!r}: {' or '.join(wanted)} not found ({why}). Tried:\n{tried}\n"
        f"To place the files by hand: get the repository's {CONFIG_FILE}, its weights ({' or '.join(WEIGHT_FILES)}) "
        f"and {PREPROCESSOR_FILE} if it has one (e.g. `hf download {name.repo_id}{revision}` on a machine with "
        f"network), then {place}; or put them in any folder and call vitlens.load(folder)."
    )


def fetch(name: HubName | str) -> HubFiles:
    """Bring a repository's config, weights (safetensors if it has them) and pre-processing file into the cache."""
    name = parse_name(name) if isinstance(name, str) else name
    try:
        import huggingface_hub  # noqa: F401
    except ImportError as e:
        raise ImportError(f"loading {str(name)!r} by name needs huggingface_hub: pip install 'vitlens[compat]'") from e
    cache_dir, offline = hub_cache_dir(), is_offline()
    config = _download(name, CONFIG_FILE, cache_dir, offline)
    if config is None:
        raise _missing_error(name, (CONFIG_FILE,), cache_dir, offline)
    weights = None
    for filename in WEIGHT_FILES:
        weights = _download(name, filename, cache_dir, offline)
        if weights is not None:
            break
    if weights is None:
        raise _missing_error(name, WEIGHT_FILES, cache_dir, offline)
    from .checkpoint.files import read_json

    preprocessor = None
    if "architecture" not in read_json(config):  # timm repositories keep their pre-processing in config.json
        preprocessor = _download(name, PREPROCESSOR_FILE, cache_dir, offline)
    return HubFiles(config, weights, preprocessor)


# ----------------------------------------------------------------------------------------------- metadata
@lru_cache(maxsize=1)
def imagenet1k_labels() -> tuple[tuple[str, str], ...]:
    """The 1000 ImageNet-1k classes in classifier order, as (WordNet synset, names) pairs."""
    text = (Path(__file__).parent / "imagenet1k_labels.txt").read_text(encoding="utf-8")
    return tuple(tuple(line.split("\t", 1)) for line in text.splitlines() if line)  # type: ignore[misc]


def imagenet_labels(num_classes: int) -> list[str] | None:
    """Class names for timm's ImageNet heads: 1k from the shipped file, 12k/21k/22k from timm when installed."""
    if num_classes == 1000:
        return [names for _, names in imagenet1k_labels()]
    if num_classes in _IMAGENET_SUBSETS:
        try:
            from timm.data import ImageNetInfo
        except ImportError:
            return None
        return list(ImageNetInfo(_IMAGENET_SUBSETS[num_classes]).label_descriptions())
    return None


def timm_metadata(config: dict[str, Any]) -> dict[str, Any]:
    """What a timm ``config.json`` adds to the weights' own reading: crop mode and readable class names.

    timm names ImageNet classes by WordNet synset (``n02123045``) or not at all; pictures want
    "tabby, tabby cat", so synsets become names and a bare 1000-way head gets the ImageNet-1k names.
    """
    cfg = config.get("pretrained_cfg") or {}
    meta: dict[str, Any] = {}
    if cfg.get("crop_mode") in CROP_MODES:  # timm's rare 'border' (pad to square) is left as a centre crop
        meta["crop_mode"] = cfg["crop_mode"]
    num_classes = int(config.get("num_classes", cfg.get("num_classes", 0)) or 0)
    names = config.get("label_names") or cfg.get("label_names")
    if names and num_classes:
        if isinstance(names, dict):
            names = [names.get(str(i), str(i)) for i in range(num_classes)]
        described = config.get("label_descriptions") or cfg.get("label_descriptions") or {}
        synsets = dict(imagenet1k_labels())
        meta["labels"] = [described.get(n) or synsets.get(n) or str(n) for n in names]
    elif num_classes and (labels := imagenet_labels(num_classes)) is not None:
        meta["labels"] = labels
    return meta


def hf_metadata(config: dict[str, Any], preprocessor: dict[str, Any] | None) -> dict[str, Any]:
    """What a transformers repository adds: its processor's resize/crop policy, and no placeholder labels.

    ``size={"height", "width"}`` resizes straight to that size (``crop_mode='squash'``);
    ``size={"shortest_edge": s}`` with a centre crop ``c`` is ``crop_pct = c / s``. The processor's
    output size is returned as ``input_size``. ``id2label`` of only ``LABEL_i`` means no names.
    """
    meta: dict[str, Any] = {}
    id2label = config.get("id2label") or {}
    if id2label and all(str(v) == f"LABEL_{k}" for k, v in id2label.items()):
        meta["labels"] = None
    if not preprocessor:
        return meta
    if preprocessor.get("do_normalize") is False:
        meta["image_mean"], meta["image_std"] = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    size = preprocessor.get("size") or {}
    size = {"shortest_edge": size} if isinstance(size, int) else size
    crop = preprocessor.get("crop_size") or {}
    crop = {"height": crop, "width": crop} if isinstance(crop, int) else crop
    if preprocessor.get("do_center_crop") and size.get("shortest_edge") and crop.get("height"):
        meta.update(crop_mode="center", crop_pct=crop["height"] / size["shortest_edge"])
        meta["input_size"] = (int(crop["height"]), int(crop["width"]))
    elif preprocessor.get("do_resize", True) and size.get("height"):
        meta.update(crop_mode="squash", crop_pct=1.0, input_size=(int(size["height"]), int(size["width"])))
    return meta


# ---------------------------------------------------------------------------------------------- loading
def load_pretrained(name: str, **load_kwargs: Any) -> VisionTransformer:
    """Load ``hf-hub:ORG/NAME[@rev]`` or ``timm/NAME.TAG`` with its labels and pre-processing.

    The weights, with the ``config.json`` / ``preprocessor_config.json`` beside them in the cache, are
    read by :func:`vitlens.checkpoint.load` (``load_kwargs`` go there: ``strict``, ``img_size``, config
    overrides); this adds the repository's crop policy and class names. A ``num_classes`` that differs
    from the checkpoint's keeps the backbone and starts a fresh head (as timm does). Explicit metadata
    arguments (e.g. ``crop_pct=1.0``) win over what the repository says.
    """
    from .checkpoint import load
    from .checkpoint.files import read_json

    files = fetch(parse_name(name))
    config = read_json(files.config)
    num_classes = load_kwargs.pop("num_classes", None)
    explicit = {k: load_kwargs.pop(k) for k in METADATA_FIELDS if k in load_kwargs}
    if "architecture" in config:
        meta = timm_metadata(config)
    elif config.get("model_type") == "vitlens":
        meta = {}
    else:
        meta = hf_metadata(config, read_json(files.preprocessor) if files.preprocessor else None)
        input_size = meta.pop("input_size", None)
        if input_size and "img_size" not in load_kwargs:
            load_kwargs["img_size"] = input_size  # the size the repository's own processor produces
    model = load(files.weights, **load_kwargs)
    if num_classes is not None and int(num_classes) != model.config.num_classes:
        model = _with_new_head(model, int(num_classes))
        meta["labels"] = None
    meta.update(explicit)
    if meta:
        model.config = model.config.replace(**meta)
    return model


def create_pretrained(model_name: str, **load_kwargs: Any) -> VisionTransformer:
    """``create_model(name, pretrained=True)``: timm's public weights for the preset (its default tag if none).

    A Hub name (``hf-hub:ORG/NAME``, ``timm/NAME.TAG``) is loaded as it is, as ``timm.create_model`` does.
    """
    return load_pretrained(model_name if is_hub_name(model_name) else pretrained_repo(model_name), **load_kwargs)


def _with_new_head(model: VisionTransformer, num_classes: int) -> VisionTransformer:
    """The same backbone with a freshly initialised classifier of ``num_classes`` outputs (timm's behaviour)."""
    new = VisionTransformer(model.config.replace(num_classes=num_classes, labels=None))
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith(("head.", "head_dist."))}
    missing, unexpected = new.load_state_dict(backbone, strict=False)
    if unexpected or any(not k.startswith(("head.", "head_dist.")) for k in missing):
        raise RuntimeError(f"a new head left backbone keys unmatched: missing {missing}, unexpected {unexpected}")
    return new.to(next(model.parameters()).device)
