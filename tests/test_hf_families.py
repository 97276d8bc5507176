"""Every Hugging Face vision encoder vitlens reads, saved with ``save_pretrained`` and loaded back.

Each model type is built at random init and a small size, saved as transformers saves it, and read
with ``vitlens.load(folder)``: what the model returns (logits, the image embedding, or the final
tokens) and every layer's attention equal transformers' (eager attention, ``output_attentions``)
within 1e-5, at the native size and at another one (``interpolate_pos_encoding=True``).
"""

from __future__ import annotations

import warnings

import pytest
import torch

import vitlens

transformers = pytest.importorskip("transformers")
T = transformers
ATOL = 1e-5
BASE = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
)


def perturbed(model):
    """Random init leaves norms at 1 and biases at 0; nudge every weight so each one counts."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def readout(kind: str, out):
    """What vitlens's model(x) returns, in transformers' output for that model."""
    if kind == "logits":
        return out.logits
    if kind == "image_embeds":
        return out.image_embeds
    if kind == "pooler":
        return out.pooler_output
    return out.last_hidden_state


# name: (transformers class, its config, what vitlens returns, whether vitlens's features are its last_hidden_state)
CASES = {
    "vit": ("ViTForImageClassification", T.ViTConfig(**BASE, num_labels=3), "logits"),
    "deit-teacher": ("DeiTForImageClassificationWithTeacher", T.DeiTConfig(**BASE, num_labels=3), "logits"),
    "deit": ("DeiTForImageClassification", T.DeiTConfig(**BASE, num_labels=3), "logits"),
    "deit-model": ("DeiTModel", T.DeiTConfig(**BASE), "hidden"),
    "dinov2": ("Dinov2Model", T.Dinov2Config(**BASE, mlp_ratio=2), "hidden"),
    "dinov2-classifier": ("Dinov2ForImageClassification", T.Dinov2Config(**BASE, mlp_ratio=2, num_labels=3), "logits"),
    "dinov2-swiglu": ("Dinov2Model", T.Dinov2Config(**BASE, mlp_ratio=2, use_swiglu_ffn=True), "hidden"),
    "dinov2-registers": ("Dinov2WithRegistersModel", T.Dinov2WithRegistersConfig(**BASE, mlp_ratio=2), "hidden"),
    "dinov2-registers-classifier": (
        "Dinov2WithRegistersForImageClassification",
        T.Dinov2WithRegistersConfig(**BASE, mlp_ratio=2, num_labels=3),
        "logits",
    ),
    "vit_mae": ("ViTMAEModel", T.ViTMAEConfig(**BASE, mask_ratio=0.0), "hidden"),
    "ijepa": ("IJepaModel", T.IJepaConfig(**BASE), "hidden"),
    "clip-vision": ("CLIPVisionModel", T.CLIPVisionConfig(**BASE), "pooler"),
    "clip-projection": ("CLIPVisionModelWithProjection", T.CLIPVisionConfig(**BASE, projection_dim=24), "image_embeds"),
    "siglip-vision": ("SiglipVisionModel", T.SiglipVisionConfig(**BASE), "pooler"),
    "beit": ("BeitModel", T.BeitConfig(**BASE, use_relative_position_bias=True), "pooler"),
    "beit-classifier": ("BeitForImageClassification", T.BeitConfig(**BASE, num_labels=3), "logits"),
    "data2vec-vision": (
        "Data2VecVisionModel",
        T.Data2VecVisionConfig(**BASE, use_relative_position_bias=True),
        "hidden",
    ),
    "dinov3": ("DINOv3ViTModel", T.DINOv3ViTConfig(**BASE, num_register_tokens=2), "hidden"),
    "dinov3-gated": ("DINOv3ViTModel", T.DINOv3ViTConfig(**BASE, use_gated_mlp=True, hidden_act="silu"), "hidden"),
}
# types whose relative position table is built for one grid: vitlens resamples it when loading at a
# size (img_size=), as transformers does it on every call at that size
LOAD_AT_SIZE = {"beit", "beit-classifier", "data2vec-vision"}


def run(model, x, **kw):
    patches = (x.shape[-2] // 8) * (x.shape[-1] // 8)  # MAE's noise orders the patches; arange keeps them in place
    extra = {"noise": torch.arange(patches).float().expand(len(x), -1)} if kw.pop("mae", False) else {}
    return model(pixel_values=x, output_attentions=True, **extra, **kw)


@pytest.mark.parametrize("name", list(CASES))
def test_hugging_face_models_load_exactly(tmp_path, name):
    cls, config, kind = CASES[name]
    config._attn_implementation = "eager"
    model = perturbed(getattr(T, cls)(config))
    model.save_pretrained(tmp_path / name)
    for size in [(32, 32), (48, 32)]:
        ours = vitlens.load(tmp_path / name, img_size=size if name in LOAD_AT_SIZE else None)
        x = torch.randn(2, 3, *size)
        kw = {"mae": name == "vit_mae"}
        if size != (32, 32) and name not in (
            "dinov2",
            "dinov2-swiglu",
            "dinov2-registers",
            "dinov2-classifier",
            "dinov2-registers-classifier",
            "dinov3",
            "dinov3-gated",
        ):
            kw["interpolate_pos_encoding"] = True
        with torch.no_grad():
            theirs = run(model, x, **kw)
            out = ours(x, return_attention=True)
        want = readout(kind, theirs)
        got = out.features if kind == "hidden" else out.logits
        assert got.shape == want.shape, (size, got.shape, want.shape)
        assert (got - want).abs().max() <= ATOL, (size, (got - want).abs().max())
        attentions = theirs.attentions if theirs.attentions is not None else theirs.vision_model_output.attentions
        assert len(attentions) == len(out.attentions)
        for mine, their in zip(out.attentions, attentions):
            assert (mine - their).abs().max() <= ATOL, size


def test_full_clip_and_siglip_folders_read_their_vision_half(tmp_path):
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=99)
    clip = perturbed(T.CLIPModel(T.CLIPConfig(text_config=text, vision_config=BASE, projection_dim=24)))
    siglip = perturbed(T.SiglipModel(T.SiglipConfig(text_config=text, vision_config=BASE)))
    x = torch.randn(2, 3, 32, 32)
    for name, model in (("clip", clip), ("siglip", siglip)):
        model.save_pretrained(tmp_path / name)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the text half is kept (model.text_tower), not set aside
            ours = vitlens.load(tmp_path / name)
        assert ours.text_tower is not None
        with torch.no_grad():
            want = model.get_image_features(pixel_values=x)
            want = want.pooler_output if hasattr(want, "pooler_output") else want
            assert (ours(x) - want).abs().max() <= ATOL, name


def test_an_unknown_model_type_is_refused_by_name(tmp_path):
    model = T.ViTModel(T.ViTConfig(**BASE))
    model.save_pretrained(tmp_path / "m")
    config = (tmp_path / "m" / "config.json").read_text().replace('"model_type": "vit"', '"model_type": "swin"')
    (tmp_path / "m" / "config.json").write_text(config)
    with pytest.raises(vitlens.checkpoint.CheckpointError, match="model_type 'swin' is not supported; vitlens reads"):
        vitlens.load(tmp_path / "m")


TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=99)
AT_224 = dict(BASE, image_size=224, patch_size=16)
IMAGENET = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
# Hub repository: (transformers class, its config, its processor class and settings, the output vitlens returns).
# The processors are what these repositories ship: DINOv2's short side 256 then 224 crop, CLIP's own
# mean/std, SigLIP's squash to 224 with 0.5, DeiT's squash to 256 then 224 crop, MAE's squash.
HUB_CASES = {
    "facebook/dinov2-small": (
        "Dinov2Model",
        T.Dinov2Config(**dict(AT_224, patch_size=14), mlp_ratio=2),
        ("Bit", dict(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, **IMAGENET)),
        "hidden",
    ),
    "openai/clip-vit-base-patch16": (
        "CLIPModel",
        T.CLIPConfig(text_config=TEXT, vision_config=AT_224, projection_dim=24),
        ("CLIP", {}),
        "image_features",
    ),
    "google/siglip-base-patch16-224": (
        "SiglipModel",
        T.SiglipConfig(text_config=TEXT, vision_config=AT_224),
        ("Siglip", {}),
        "image_features",
    ),
    "facebook/deit-small-distilled-patch16-224": (
        "DeiTForImageClassificationWithTeacher",
        T.DeiTConfig(**AT_224, num_labels=3, id2label={0: "cat", 1: "dog", 2: "bird"}),
        ("DeiT", {}),
        "logits",
    ),
    "facebook/vit-mae-base": ("ViTMAEModel", T.ViTMAEConfig(**AT_224, mask_ratio=0.75), ("ViT", {}), "hidden"),
}


@pytest.fixture(scope="module")
def chelsea():
    from PIL import Image

    skimage = pytest.importorskip("skimage")
    return Image.fromarray(skimage.data.chelsea())  # not square: the crop rules differ


@pytest.mark.parametrize("repo", list(HUB_CASES))
def test_hub_names_load_with_their_labels_and_preprocessing(tmp_path, monkeypatch, chelsea, repo):
    pytest.importorskip("huggingface_hub")
    from .hub_helpers import assert_matches_processors, put_in_cache

    cls, config, (processor, settings), kind = HUB_CASES[repo]
    model = perturbed(getattr(T, cls)(config))
    staging = tmp_path / "staging"
    model.save_pretrained(staging)
    getattr(T, f"{processor}ImageProcessorPil")(**settings).save_pretrained(staging)
    put_in_cache(tmp_path / "hub", repo, staging, "c" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the text tower and MAE's decoder are set aside, with a warning
        ours = vitlens.load(f"hf-hub:{repo}")
    std = min(ours.config.image_std)
    pixels = assert_matches_processors(vitlens.transforms_for(ours)(chelsea), processor, staging, chelsea, std=std)
    if kind == "logits":
        assert ours.config.labels == ["cat", "dog", "bird"]
    extra = {}
    if cls == "ViTMAEModel":  # the encoder without masking: transformers' own with mask_ratio 0, patches in order
        unmasked = T.ViTMAEModel(T.ViTMAEConfig(**AT_224, mask_ratio=0.0)).eval()
        unmasked.load_state_dict(model.state_dict())
        model, extra = unmasked, {"noise": torch.arange(196).float()[None]}
    with torch.no_grad():
        if kind == "image_features":
            want = model.get_image_features(pixel_values=pixels).pooler_output
        else:
            want = readout(kind, model(pixel_values=pixels, **extra))
        got = ours(pixels) if kind != "hidden" else ours(pixels, return_attention=True).features
    assert (got - want).abs().max() <= ATOL


WRITABLE = ["vit", "deit-teacher", "deit", "deit-model", "dinov2", "dinov2-classifier", "dinov2-swiglu"]
WRITABLE += ["dinov2-registers", "dinov2-registers-classifier"]


@pytest.mark.parametrize("legacy", [False, True], ids=["5.x-names", "4.x-names"])
@pytest.mark.parametrize("name", WRITABLE)
def test_converted_back_transformers_opens_the_same_model(tmp_path, name, legacy):
    cls, config, kind = CASES[name]
    config._attn_implementation = "eager"
    source = perturbed(getattr(T, cls)(config))
    source.save_pretrained(tmp_path / "source")
    vitlens.checkpoint.convert(tmp_path / "source", tmp_path / "back", "hf", legacy_hf=legacy)
    back, info = getattr(T, cls).from_pretrained(tmp_path / "back", output_loading_info=True)
    missing = [k for k in info["missing_keys"] if "pooler" not in k]  # ViTModel / DeiTModel build a pooler
    assert not missing and not info["unexpected_keys"] and not info["mismatched_keys"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want, got = readout(kind, source(pixel_values=x)), readout(kind, back.eval()(pixel_values=x))
    assert (got - want).abs().max() <= ATOL


@pytest.mark.parametrize(
    "timm_name, hf_class",
    [
        ("vit_small_patch14_reg4_dinov2", "Dinov2WithRegistersModel"),
        ("vit_small_patch14_dinov2", "Dinov2Model"),
        ("vit_giant_patch14_dinov2", "Dinov2Model"),  # the packed SwiGLU, split into gate and up
        ("deit_tiny_distilled_patch16_224", "DeiTForImageClassificationWithTeacher"),
    ],
)
def test_timm_models_convert_to_the_transformers_type_that_holds_them(tmp_path, timm_name, hf_class):
    depth = 1 if "giant" in timm_name else 2
    ours = perturbed(vitlens.create_model(timm_name, img_size=28 if "14" in timm_name else 32, depth=depth))
    vitlens.checkpoint.export(ours, tmp_path / "hf", "hf")
    theirs = getattr(T, hf_class).from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    x = torch.randn(2, 3, *ours.config.img_hw)
    with torch.no_grad():
        out, mine = theirs(pixel_values=x, output_attentions=True), ours(x, return_attention=True)
    got = out.logits if ours.config.num_classes else out.last_hidden_state
    want = mine.logits if ours.config.num_classes else mine.features
    assert (got - want).abs().max() <= ATOL
    for a, b in zip(out.attentions, mine.attentions):
        assert (a - b).abs().max() <= ATOL
