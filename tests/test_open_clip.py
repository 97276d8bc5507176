"""OpenCLIP image towers read by ``vitlens.from_open_clip`` and ``vitlens.load``: equal to ``encode_image``.

Models are random init (perturbed so that every weight counts). Every ViT tower OpenCLIP
defines is built at one block (its text tower at one layer) and either equals ``encode_image``
within 1e-5 or is refused with the reason listed here; three are also checked at full depth, with
each layer's attention maps against ``nn.MultiheadAttention``'s own weights.
"""

from __future__ import annotations

import copy
import logging
import warnings

import pytest
import torch

import vitlens

from .payload import Payload

open_clip = pytest.importorskip("open_clip")
ATOL = 1e-5
TINY_TEXT = dict(context_length=16, vocab_size=99, width=32, heads=2, layers=1)

# OpenCLIP towers that are no plain ViT, with the words their refusal must contain
REFUSED = {
    "MobileCLIP-B": "HybridEmbed",
    "MobileCLIP2-B": "HybridEmbed",
    "vit_relpos_medium_patch16_cls_224": "VisionTransformerRelPos",
}
# families refused as a whole (one member is tried: the first by name)
REFUSED_PREFIX = {
    "ViTamin": "HybridEmbed",
    "MobileCLIP-S": "FastVit",
    "MobileCLIP2-S": "FastVit",
    "coca_": "attentional pooler",
}


def perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return module.eval()


def _vit_towers() -> list[str]:
    """Every ViT-like tower OpenCLIP defines; of the families refused as a whole, one member."""
    names, refused_families = [], set()
    for name in sorted(open_clip.list_models()):
        family = next((p for p in REFUSED_PREFIX if name.startswith(p)), None)
        if family in refused_families:
            continue
        if family is not None:
            refused_families.add(family)
        vision = open_clip.get_model_config(name)["vision_cfg"]
        if isinstance(vision.get("layers"), (list, tuple)):  # ResNet towers
            continue
        timm_name = vision.get("timm_model_name", "vit")
        if any(k in timm_name for k in ("vit", "eva", "siglip", "pe_", "fastvit", "mci")):
            names.append(name)
    return names


def one_block_clip(name: str, monkeypatch) -> torch.nn.Module:
    """The model ``name`` with one block in its image tower and a tiny text tower."""
    timm = pytest.importorskip("timm")
    create = timm.create_model

    def one_block(*args, **kwargs):  # timm trunks: built at depth 1, not built whole and cut
        try:
            return create(*args, depth=1, **kwargs)
        except TypeError:  # a trunk that takes no depth (FastViT): as it is
            return create(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", one_block)
    cfg = copy.deepcopy(open_clip.get_model_config(name))
    vision = cfg["vision_cfg"]
    if isinstance(vision.get("layers"), int):
        vision["layers"] = 1
    cfg["text_cfg"] = dict(TINY_TEXT)
    cfg.pop("custom_text", None)
    multimodal = cfg.pop("multimodal_cfg", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.CLIP(**cfg)
    if multimodal is not None:  # CoCa: the attentional pooler is what matters here
        assert model.visual.attn_pool is not None
    return perturbed(model.visual)


@pytest.fixture(autouse=True)
def _quiet_open_clip():
    logging.getLogger().setLevel(logging.ERROR)  # "No pretrained weights loaded" for random init


@pytest.mark.parametrize("name", _vit_towers())
def test_every_open_clip_vit_tower_equals_encode_image_or_is_refused(name, monkeypatch):
    visual = one_block_clip(name, monkeypatch)
    reason = REFUSED.get(name) or next((r for p, r in REFUSED_PREFIX.items() if name.startswith(p)), None)
    if reason is not None:
        with pytest.raises(ValueError, match=reason):
            vitlens.from_open_clip(visual)
        return
    ours = vitlens.from_open_clip(visual).eval()
    size = visual.image_size if hasattr(visual, "image_size") else visual.trunk.patch_embed.img_size
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        assert (visual(x) - ours(x)).abs().max() <= ATOL


def _mha_maps(visual: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Each block's attention weights, from nn.MultiheadAttention itself (OpenCLIP asks it for none)."""
    maps = []

    def grab(block, args):
        q = block.ln_1(args[0])
        maps.append(block.attn(q, q, q, need_weights=True, average_attn_weights=False)[1])

    hooks = [b.register_forward_pre_hook(grab) for b in visual.transformer.resblocks]
    try:
        visual(x)
    finally:
        for h in hooks:
            h.remove()
    return maps


@pytest.mark.parametrize("name", ["ViT-B-32", "ViT-B-16-quickgelu", "ViT-B-16-SigLIP"])
def test_full_depth_towers_equal_encode_image_with_their_maps(name):
    model = open_clip.create_model(name, pretrained=None)
    perturbed(model.visual)
    ours = vitlens.from_open_clip(model).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        out = ours(x, return_attention=True)
        assert (model.encode_image(x) - out.logits).abs().max() <= ATOL
        if name == "ViT-B-16-SigLIP":  # a timm trunk: timm's own maps are checked in the timm tests
            return
        theirs = _mha_maps(model.visual, x)
    assert ours.config.act_layer == ("quick_gelu" if "quickgelu" in name else "gelu")
    assert len(theirs) == len(out.attentions) == 12
    for mine, their in zip(out.attentions, theirs):
        assert (mine - their).abs().max() <= ATOL


def test_other_sizes_follow_open_clips_resize_pos_embed():
    small = perturbed(open_clip.create_model("ViT-B-32", pretrained=None))
    big = open_clip.create_model("ViT-B-32", pretrained=None, force_image_size=288).eval()
    state = small.state_dict()
    open_clip.model.resize_pos_embed(state, big)  # what OpenCLIP does when it loads weights at another size
    big.load_state_dict(state)
    ours = vitlens.from_open_clip(small).eval()
    x = torch.randn(1, 3, 288, 288)
    with torch.no_grad():
        assert (ours(x) - big.encode_image(x)).abs().max() <= ATOL
        resized = vitlens.from_open_clip(small, img_size=288).eval()
        assert (resized(x) - big.encode_image(x)).abs().max() <= ATOL


@pytest.mark.parametrize("resize_mode", ["shortest", "squash"])
def test_preprocessing_is_open_clips(resize_mode):
    from PIL import Image

    skimage = pytest.importorskip("skimage")
    image = Image.fromarray(skimage.data.chelsea())  # not square: the two modes differ
    cfg = dict(size=224, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), interpolation="bicubic", resize_mode=resize_mode)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    ours = vitlens.from_open_clip(model, preprocess_cfg=cfg)
    from open_clip.transform import PreprocessCfg, image_transform_v2

    theirs = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    torch.testing.assert_close(vitlens.transforms_for(ours)(image), theirs(image), atol=1e-6, rtol=0)


def test_padding_resize_and_other_towers_are_refused_by_name():
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    with pytest.raises(ValueError, match="resize_mode='longest' pads with fill_color=0"):
        vitlens.from_open_clip(model, preprocess_cfg=dict(resize_mode="longest"))
    resnet = open_clip.create_model("RN50", pretrained=None)
    with pytest.raises(ValueError, match="got CLIP with a ModifiedResNet tower"):
        vitlens.from_open_clip(resnet)


def _open_clip_folder(folder, name: str, preprocess: dict) -> torch.nn.Module:
    """A random-init model in the layout OpenCLIP's ``push_to_hf_hub`` writes: config and safetensors."""
    import json

    from safetensors.torch import save_file

    model = perturbed(open_clip.create_model(name, pretrained=None))
    folder.mkdir(parents=True)
    save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
    config = dict(model_cfg=open_clip.get_model_config(name), preprocess_cfg=preprocess)
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return model


@pytest.mark.parametrize(
    ("repo", "name"),
    [("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "ViT-B-32"), ("timm/ViT-B-16-SigLIP", "ViT-B-16-SigLIP")],
)
def test_hub_repositories_of_open_clip_load_offline(tmp_path, monkeypatch, repo, name):
    pytest.importorskip("huggingface_hub")
    from .hub_helpers import put_in_cache

    preprocess = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic", resize_mode="squash")
    made = _open_clip_folder(tmp_path / "staging", name, preprocess)
    assert (tmp_path / "staging" / "open_clip_config.json").is_file()
    put_in_cache(tmp_path / "hub", repo, tmp_path / "staging", "d" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for source in (f"hf-hub:{repo}", tmp_path / "staging"):
        ours = vitlens.load(source)
        c = ours.config
        assert (c.crop_mode, c.image_mean, c.interpolation) == ("squash", (0.5, 0.5, 0.5), "bicubic")
        x = torch.randn(1, 3, 224, 224)
        with torch.no_grad():
            assert (ours(x) - made.encode_image(x)).abs().max() <= ATOL


def test_open_clip_folders_holding_code_or_integer_weights_are_refused(tmp_path):
    import pickle

    folder = tmp_path / "clip"
    made = _open_clip_folder(folder, "ViT-B-32", {})
    state = made.state_dict()
    (folder / "open_clip_model.safetensors").unlink()
    marker = tmp_path / "pwned"
    with open(folder / "open_clip_pytorch_model.bin", "wb") as f:
        pickle.dump({**state, "visual.proj": Payload(str(marker))}, f, protocol=2)
    with pytest.raises(vitlens.checkpoint.CheckpointError, match="weights-only.*never executes"):
        vitlens.load(folder)
    assert not marker.exists()
    state["visual.proj"] = state["visual.proj"].view(torch.int32)  # the same bytes, read as integers
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    with pytest.raises(vitlens.checkpoint.CheckpointError, match=r"visual\.proj .* torch\.int32"):
        vitlens.load(folder)
