"""Pretrained weights by name on the Hugging Face Hub: ``hf-hub:ORG/NAME[@rev]`` and ``timm/NAME.TAG``.

``vitlens.load("hf-hub:google/vit-base-patch16-224")``, ``vitlens.load("timm/vit_small_patch16_224.augreg_in1k")``
and ``vitlens.create_model("vit_small_patch16_224", pretrained=True)`` come here for the files. They are
fetched with ``huggingface_hub`` into its standard cache (``$HF_HOME/hub``, shared with timm and
transformers, so nothing is downloaded twice); ``HF_HUB_OFFLINE=1`` reads only that cache. Safetensors
files are preferred to pickles. The files are then read like any folder by :func:`vitlens.checkpoint.load`:
the repository's ``config.json`` and ``preprocessor_config.json`` give class names and pre-processing.
OpenCLIP repositories (``hf-hub:timm/ViT-B-16-SigLIP``, ``hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K``)
are known by their ``open_clip_config.json`` and fetched with OpenCLIP's weights.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import read_json
from .hf_format import TEXT_MODEL_TYPES
from .open_clip_format import CONFIG_FILE as OPEN_CLIP_CONFIG_FILE
from .open_clip_format import WEIGHT_FILES as OPEN_CLIP_WEIGHT_FILES

HF_PREFIX = "hf-hub:"
TIMM_PREFIX = "timm/"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in order of preference: no pickle when avoidable
# a CLIP or SigLIP repository's tokenizer (whichever files it has), for its text tower
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
)

# The Hub repository of the weights timm loads for a preset named without a tag (timm's default tag).
DEFAULT_REPOS: dict[str, str] = {
    "vit_tiny_patch16_224": "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k",
    "vit_small_patch16_224": "timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
    "vit_base_patch16_224": "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
    "vit_base_patch32_224": "timm/vit_base_patch32_224.augreg_in21k_ft_in1k",
    "vit_large_patch16_224": "timm/vit_large_patch16_224.augreg_in21k_ft_in1k",
    "deit_tiny_patch16_224": "timm/deit_tiny_patch16_224.fb_in1k",
    "deit_small_patch16_224": "timm/deit_small_patch16_224.fb_in1k",
    "deit_base_patch16_224": "timm/deit_base_patch16_224.fb_in1k",
    "deit_tiny_distilled_patch16_224": "timm/deit_tiny_distilled_patch16_224.fb_in1k",
    "deit_small_distilled_patch16_224": "timm/deit_small_distilled_patch16_224.fb_in1k",
    "deit_base_distilled_patch16_224": "timm/deit_base_distilled_patch16_224.fb_in1k",
    "vit_small_patch14_dinov2": "timm/vit_small_patch14_dinov2.lvd142m",
    "vit_base_patch14_dinov2": "timm/vit_base_patch14_dinov2.lvd142m",
    "vit_large_patch14_dinov2": "timm/vit_large_patch14_dinov2.lvd142m",
    "vit_giant_patch14_dinov2": "timm/vit_giant_patch14_dinov2.lvd142m",
    "vit_small_patch14_reg4_dinov2": "timm/vit_small_patch14_reg4_dinov2.lvd142m",
    "vit_base_patch14_reg4_dinov2": "timm/vit_base_patch14_reg4_dinov2.lvd142m",
    "vit_large_patch14_reg4_dinov2": "timm/vit_large_patch14_reg4_dinov2.lvd142m",
    "vit_giant_patch14_reg4_dinov2": "timm/vit_giant_patch14_reg4_dinov2.lvd142m",
    "vit_base_patch16_siglip_224": "timm/vit_base_patch16_siglip_224.v2_webli",
    "vit_base_patch16_clip_quickgelu_224": "timm/vit_base_patch16_clip_224.metaclip_2pt5b",
    "eva02_base_patch14_224": "timm/eva02_base_patch14_224.mim_in22k",
    "vit_small_patch16_dinov3": "timm/vit_small_patch16_dinov3.lvd1689m",
    "vit_base_patch16_dinov3": "timm/vit_base_patch16_dinov3.lvd1689m",
    "beit_base_patch16_224": "timm/beit_base_patch16_224.in22k_ft_in22k_in1k",
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

    A ``timm/`` name without a tag gets timm's default tag for that preset; after ``hf-hub:`` a
    repository is taken as it is spelled (``hf-hub:timm/ViT-B-16-SigLIP``, an OpenCLIP repository).
    """
    text = name[len(HF_PREFIX) :] if name.startswith(HF_PREFIX) else name
    repo_id, at, revision = text.partition("@")
    if not _REPO_ID.match(repo_id) or (at and not revision):
        raise ValueError(
            f"cannot read model name {name!r}: expected 'hf-hub:ORG/NAME', 'hf-hub:ORG/NAME@REVISION' "
            "or 'timm/NAME.TAG' (e.g. 'hf-hub:google/vit-base-patch16-224', 'timm/vit_small_patch16_224.augreg_in1k')"
        )
    if not name.startswith(HF_PREFIX) and repo_id.startswith(TIMM_PREFIX) and "." not in repo_id:
        repo_id = pretrained_repo(repo_id[len(TIMM_PREFIX) :])
    return HubName(repo_id, revision or None)


def pretrained_repo(model_name: str) -> str:
    """The Hub repository of timm's weights for a model name: ``vit_small_patch16_224`` -> ``timm/vit_small_...in1k``.

    ``NAME.TAG`` names that tag's repository; a name without a tag gets timm's default tag (for a
    preset from the table here, for any other ViT from timm when it is installed).
    """
    base, _, tag = model_name.partition(".")
    if tag:
        return f"{TIMM_PREFIX}{base}.{tag}"
    if base in DEFAULT_REPOS:
        return DEFAULT_REPOS[base]
    try:
        import timm

        repo = timm.models.get_pretrained_cfg(base).hf_hub_id if timm.is_model(base) else None
    except (ImportError, RuntimeError, AttributeError):
        repo = None
    if not repo:
        known = ", ".join(sorted(DEFAULT_REPOS))
        raise ValueError(f"no public weights are known for {model_name!r}; presets with weights: {known}")
    return repo


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
    open_clip_config = _download(name, OPEN_CLIP_CONFIG_FILE, cache_dir, offline)
    if open_clip_config is not None:  # an OpenCLIP repository (it may hold a transformers copy too)
        for filename in OPEN_CLIP_WEIGHT_FILES:
            weights = _download(name, filename, cache_dir, offline)
            if weights is not None:
                return HubFiles(open_clip_config, weights, None)
        raise _missing_error(name, OPEN_CLIP_WEIGHT_FILES, cache_dir, offline)
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
    preprocessor = None
    config_dict = read_json(config)
    if "architecture" not in config_dict:  # timm repositories keep their pre-processing in config.json
        preprocessor = _download(name, PREPROCESSOR_FILE, cache_dir, offline)
    if config_dict.get("model_type") in TEXT_MODEL_TYPES:
        for filename in TOKENIZER_FILES:  # beside the weights, where the text tower looks for them
            _download(name, filename, cache_dir, offline)
    return HubFiles(config, weights, preprocessor)
