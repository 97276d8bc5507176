"""Models by name from a Hugging Face cache built here, offline: weights, labels and pre-processing.

The cache has the standard layout (``models--ORG--NAME/{blobs,refs,snapshots}``) and is filled with
random-init timm and transformers models saved in each library's own way; ``HF_HOME`` points at it
and ``HF_HUB_OFFLINE=1`` forbids any download.
"""

from __future__ import annotations

import shutil

import pytest
import torch

import vitlens
from vitlens.checkpoint import hub, labels

from .hub_helpers import assert_matches_processors, hf_processors, put_in_cache

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
pytest.importorskip("huggingface_hub")
pytest.importorskip("skimage")

TIMM_NAME = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40
HF_LABELS = {0: "tabby cat", 1: "dog", 2: "bird"}
SYNSETS = ["n02123045", "n02123159", "n02123394", "n01440764", "n99999999"]  # the last is no ImageNet-1k class


def tiny_hf(seed: int, image_size: int = 32, id2label: dict[int, str] | None = None):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    labels = id2label or {i: f"LABEL_{i}" for i in range(3)}
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=image_size,
        patch_size=8,
        num_labels=len(labels),
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    return ViTForImageClassification(config).eval()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """An ``HF_HOME`` whose hub cache holds timm and transformers repositories (and a pickle-only one)."""
    from timm.models._hub import save_for_hf
    from transformers import BitImageProcessor, ViTImageProcessor

    root = tmp_path_factory.mktemp("hf_home")
    cache, staging = root / "hub", tmp_path_factory.mktemp("staging")
    made = {}

    # timm's own weights: safetensors and a pickle; the pickle is spoiled, so reading it would show.
    torch.manual_seed(0)
    made["timm"] = model = timm.create_model(TIMM_NAME, pretrained=False).eval()
    save_for_hf(model, staging / "timm", safe_serialization="both")
    spoiled = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    torch.save(spoiled, staging / "timm" / "pytorch_model.bin")
    put_in_cache(cache, f"timm/{TIMM_NAME}", staging / "timm", COMMIT_A)

    # A timm fine-tune kept only as a pickle, classes named by WordNet synsets.
    torch.manual_seed(1)
    made["timm_bin"] = model = timm.create_model("vit_tiny_patch16_224", depth=2, num_classes=len(SYNSETS)).eval()
    save_for_hf(model, staging / "timm_bin", model_config={"label_names": SYNSETS}, safe_serialization=False)
    put_in_cache(cache, "my-org/vit-tiny-synsets", staging / "timm_bin", COMMIT_A)

    # transformers: resize straight to 32x32 (ViTImageProcessor); two commits, 'main' and 'v2'.
    for seed, commit, refs in ((2, COMMIT_A, ("main",)), (3, COMMIT_B, ("v2",))):
        made[f"hf_{commit[0]}"] = model = tiny_hf(seed, id2label=HF_LABELS)
        model.save_pretrained(staging / f"hf_{commit[0]}")
        ViTImageProcessor(size={"height": 32, "width": 32}, resample=2).save_pretrained(staging / f"hf_{commit[0]}")
        put_in_cache(cache, "hf-test/vit-tiny", staging / f"hf_{commit[0]}", commit, refs)

    # transformers with a short-side resize and a centre crop smaller than the model's own size.
    made["hf_crop"] = model = tiny_hf(4)
    model.save_pretrained(staging / "hf_crop")
    BitImageProcessor(
        size={"shortest_edge": 40},
        crop_size={"height": 24, "width": 24},
        do_center_crop=True,
        resample=3,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(staging / "hf_crop")
    put_in_cache(cache, "hf-test/vit-tiny-crop", staging / "hf_crop", COMMIT_A)
    return root, staging, made


@pytest.fixture
def offline(home, monkeypatch):
    root, staging, made = home
    monkeypatch.setenv("HF_HOME", str(root))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root / "hub", staging, made


@pytest.fixture(scope="module")
def chelsea():
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.chelsea())  # 451 x 300 RGB: not square, so crop policies differ


def test_names_are_parsed_with_revisions_and_default_tags():
    assert hub.parse_name("hf-hub:google/vit-base-patch16-224") == hub.HubName("google/vit-base-patch16-224")
    assert hub.parse_name("hf-hub:google/vit-base-patch16-224@refs/pr/3").revision == "refs/pr/3"
    assert hub.parse_name("timm/vit_small_patch14_dinov2.lvd142m") == hub.HubName(
        "timm/vit_small_patch14_dinov2.lvd142m"
    )
    assert hub.parse_name("timm/deit_tiny_patch16_224").repo_id == "timm/deit_tiny_patch16_224.fb_in1k"
    assert hub.is_hub_name("timm/vit_tiny_patch16_224.augreg_in1k") and not hub.is_hub_name("runs/model")
    for bad in ("hf-hub:no-slash", "hf-hub:a/b/c", "hf-hub:org/name@", "hf-hub:"):
        with pytest.raises(ValueError, match="expected 'hf-hub:ORG/NAME'"):
            hub.parse_name(bad)
    with pytest.raises(ValueError, match="no public weights are known for 'vit_digits'"):
        vitlens.create_model("vit_digits", pretrained=True)


def test_cache_and_offline_follow_the_environment_of_the_moment(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub.hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert hub.hub_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for value, expected in (("1", True), ("true", True), ("ON", True), ("0", False), ("no", False)):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert hub.is_offline() is expected, value
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")  # transformers' older switch counts too
    assert hub.is_offline() is False  # HF_HUB_OFFLINE, when set, decides


@pytest.mark.parametrize("name", sorted(hub.DEFAULT_REPOS))
def test_default_repositories_are_timms(name):
    assert hub.DEFAULT_REPOS[name] == timm.models.get_pretrained_cfg(name).hf_hub_id
    assert name in vitlens.list_models()
    assert hub.pretrained_repo(name) == hub.DEFAULT_REPOS[name]


def test_imagenet_names_are_timms():
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    assert [s for s, _ in labels.imagenet1k_labels()] == list(info.label_names())
    assert labels.imagenet_labels(1000) == info.label_descriptions()
    assert labels.imagenet_labels(1000)[281] == "tabby, tabby cat"
    assert len(labels.imagenet_labels(21843)) == 21843 and labels.imagenet_labels(10) is None


def test_timm_weights_by_name_match_timm(offline, chelsea):
    from timm.data import create_transform, resolve_data_config

    _, _, made = offline
    reference = made["timm"]
    model = vitlens.load(f"timm/{TIMM_NAME}")
    c = model.config
    assert (c.crop_pct, c.crop_mode, c.interpolation, c.image_mean) == (0.9, "center", "bicubic", (0.5,) * 3)
    assert len(c.labels) == 1000 and c.labels[281] == "tabby, tabby cat"
    ours = vitlens.transforms_for(model)(chelsea)
    theirs = create_transform(**resolve_data_config(model=reference))(chelsea)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)  # same pixels: PIL resize, crop, normalize
    with torch.no_grad():  # the safetensors file was read, not the spoiled pickle beside it
        torch.testing.assert_close(model(ours[None]), reference(theirs[None]), atol=1e-4, rtol=1e-4)


def test_pretrained_with_other_num_classes_keeps_backbone(offline):
    _, _, made = offline
    model = vitlens.create_model("vit_tiny_patch16_224", pretrained=True, num_classes=7)  # timm's default tag
    assert model.config.num_classes == 7 and model.head.out_features == 7 and model.config.labels is None
    torch.testing.assert_close(model.pos_embed, made["timm"].pos_embed)
    torch.testing.assert_close(model.blocks[-1].mlp.fc2.weight, made["timm"].blocks[-1].mlp.fc2.weight)


def test_pickle_only_timm_repo_with_synset_labels(offline):
    _, _, made = offline
    model = vitlens.load("hf-hub:my-org/vit-tiny-synsets")
    assert model.config.labels == ["tabby, tabby cat", "tiger cat", "Persian cat", "tench, Tinca tinca", "n99999999"]
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), made["timm_bin"](x), atol=1e-4, rtol=1e-4)


def test_transformers_repo_by_name_and_revision(offline, chelsea):
    _, staging, made = offline
    model = vitlens.load("hf-hub:hf-test/vit-tiny")
    c = model.config
    assert c.labels == list(HF_LABELS.values())
    assert (c.crop_mode, c.crop_pct, c.interpolation, c.img_hw) == ("squash", 1.0, "bilinear", (32, 32))
    ours = vitlens.transforms_for(model)(chelsea)
    theirs = assert_matches_processors(ours, "ViT", staging / "hf_a", chelsea, std=0.5)
    for name, reference in (
        ("hf-hub:hf-test/vit-tiny", made["hf_a"]),
        ("hf-hub:hf-test/vit-tiny@v2", made["hf_b"]),
        (f"hf-hub:hf-test/vit-tiny@{COMMIT_B}", made["hf_b"]),
    ):
        with torch.no_grad():
            logits = vitlens.load(name)(theirs)
            torch.testing.assert_close(logits, vitlens.create_model(name, pretrained=True)(theirs))
            torch.testing.assert_close(logits, reference(pixel_values=theirs).logits, atol=1e-5, rtol=1e-5)


def test_transformers_centre_crop_processor(offline, chelsea):
    _, staging, made = offline
    model = vitlens.load("hf-hub:hf-test/vit-tiny-crop")
    c = model.config
    assert c.labels is None  # transformers' LABEL_0.. placeholders are no names
    assert (c.crop_mode, c.crop_pct, c.interpolation, c.img_hw) == ("center", 24 / 40, "bicubic", (24, 24))
    assert c.image_mean == (0.485, 0.456, 0.406)
    ours = vitlens.transforms_for(model)(chelsea)
    theirs = assert_matches_processors(ours, "Bit", staging / "hf_crop", chelsea, std=0.224)
    with torch.no_grad():
        expected = made["hf_crop"](pixel_values=theirs, interpolate_pos_encoding=True).logits
        torch.testing.assert_close(model(theirs), expected, atol=1e-5, rtol=1e-5)


def test_offline_missing_model_says_where_and_how(offline):
    cache, staging, made = offline
    with pytest.raises(FileNotFoundError) as info:
        vitlens.load("hf-hub:nobody/vit-missing")
    message = str(info.value)
    repo = cache / "models--nobody--vit-missing"
    assert "'nobody/vit-missing'" in message and "HF_HUB_OFFLINE" in message
    assert str(repo / "refs" / "main") in message and "by hand" in message and "vitlens.load(folder)" in message
    # Following the message's recipe makes the name load.
    put_in_cache(cache, "nobody/vit-missing", staging / "hf_b", "0" * 40)
    with torch.no_grad():
        x = torch.randn(1, 3, 32, 32)
        torch.testing.assert_close(vitlens.load("hf-hub:nobody/vit-missing")(x), made["hf_b"](pixel_values=x).logits)


def test_offline_missing_weights_lists_both_paths(offline, tmp_path):
    cache, staging, _ = offline
    only_config = tmp_path / "only_config"
    only_config.mkdir()
    shutil.copy(staging / "hf_a" / "config.json", only_config)
    snapshot = put_in_cache(cache, "nobody/vit-no-weights", only_config, COMMIT_A)
    with pytest.raises(FileNotFoundError, match="model.safetensors or pytorch_model.bin not found") as info:
        vitlens.load("hf-hub:nobody/vit-no-weights")
    assert str(snapshot / "model.safetensors") in str(info.value)
    assert str(snapshot / "pytorch_model.bin") in str(info.value)


@pytest.mark.parametrize("source", ["hf", "timm"])
def test_explain_and_report_show_the_repository_labels_and_preprocessing(offline, chelsea, tmp_path, source):
    import json

    from timm.data import create_transform, resolve_data_config

    from vitlens.commands.main import main

    _, staging, made = offline
    chelsea.save(tmp_path / "chelsea.png")
    if source == "hf":
        name, reference = "hf-hub:hf-test/vit-tiny", made["hf_a"]
        pil, _ = hf_processors("ViT", staging / "hf_a")
        pixels = pil(images=chelsea, return_tensors="pt")["pixel_values"]
        names, crop_mode = list(HF_LABELS.values()), "squash"
    else:
        name, reference = f"timm/{TIMM_NAME}", made["timm"]
        pixels = create_transform(**resolve_data_config(model=reference))(chelsea)[None]
        names, crop_mode = labels.imagenet_labels(1000), "center"
    argv = ["explain", "--model", name, "--image", str(tmp_path / "chelsea.png"), "--method", "cls"]
    assert main([*argv, "--out", str(tmp_path / "out"), "--top-k", "3"]) == 0
    summary = json.loads((tmp_path / "out" / "explain.json").read_text())
    assert summary["model"]["config"]["crop_mode"] == crop_mode
    with torch.no_grad():
        logits = reference(pixels) if source == "timm" else reference(pixel_values=pixels).logits
    probs, index = logits.softmax(-1)[0].topk(3)
    top = summary["images"][0]["top"]
    assert [t["label"] for t in top] == [names[i] for i in index.tolist()]  # "tabby cat 0.83", not "class 0"
    assert [t["prob"] for t in top] == pytest.approx(probs.tolist(), abs=2e-4)
    if source == "hf":  # the explorer of a 12-layer model takes long on CPU; the tiny one shows the same
        report = tmp_path / "report.html"
        assert main(["report", "--model", name, "--image", str(tmp_path / "chelsea.png"), "--out", str(report)]) == 0
        assert json.dumps(names[int(index[0])]) in report.read_text()
