"""timm, Hugging Face and torchvision models, saved their own way, read by vitlens.load: same numbers."""

import re
import warnings

import pytest
import torch

import vitlens
from vitlens.checkpoint import export, timm_kwargs, to_hf_state_dict, to_timm_state_dict, to_torchvision_state_dict

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
torchvision = pytest.importorskip("torchvision")
from safetensors.torch import save_file  # noqa: E402

ATOL = 1e-5


def _close(got, want, atol=ATOL):
    diff = (got - want).abs().max().item()
    assert diff <= atol, f"max |difference| {diff:.3g} > {atol}"
    return diff


def _same_state(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------------------- timm
TIMM_CASES = {
    # name: (timm kwargs, how it is saved, load kwargs)
    "vit_tiny_patch16_224": (dict(img_size=64), "safetensors", {}),
    "deit_tiny_distilled_patch16_224": (dict(img_size=64), "pth:model", {}),
    "vit_small_patch14_reg4_dinov2": (dict(img_size=56, num_classes=10), "bin:state_dict", {}),
    "vit_small_patch14_dinov2": (dict(img_size=42), "pth:model_ema", {}),
    # the giant's packed SwiGLU MLP, at a small width (heads given: the preset's 24 would not be these 4)
    "vit_giant_patch14_dinov2": (dict(img_size=28, embed_dim=48, num_heads=4), "safetensors", {"num_heads": 4}),
    # average pooling with fc_norm and no final norm: the preset says 'token', so the pooling is passed
    "vit_tiny_patch16_224#avg": (
        dict(img_size=64, global_pool="avg", pre_norm=True),
        "safetensors",
        {"global_pool": "avg"},
    ),
    "vit_tiny_patch16_224#nocls": (
        dict(img_size=64, global_pool="avg", class_token=False, fc_norm=False),
        "safetensors",
        {},
    ),
    # the families of timm's eva and beit modules, and SigLIP's attention pool, from files named after them
    "eva02_tiny_patch14_224": (dict(img_size=56), "safetensors", {}),
    "vit_small_patch16_dinov3": (dict(img_size=64), "pth:model", {}),
    "beit_base_patch16_224": (dict(img_size=64), "safetensors", {}),
    "vit_base_patch16_siglip_224": (dict(img_size=64), "safetensors", {}),
}


def _timm_model(case):
    name = case.split("#")[0]
    kwargs, _, _ = TIMM_CASES[case]
    return timm.create_model(name, pretrained=False, depth=2, **kwargs).eval()


def _save_timm(model, case, tmp_path):
    name = case.split("#")[0]
    _, how, _ = TIMM_CASES[case]
    state = model.state_dict()
    if how == "safetensors":
        path = tmp_path / f"{name}.safetensors"
        save_file(state, str(path))
        return path
    suffix, wrapper = how.split(":")
    path = tmp_path / name / f"weights.{suffix}"  # the model name is the folder's
    path.parent.mkdir()
    torch.save({wrapper: state, "epoch": 1}, path)
    return path


@pytest.mark.parametrize("case", list(TIMM_CASES))
def test_timm_files_load_and_match(tmp_path, case):
    model = _timm_model(case)
    _, _, load_kwargs = TIMM_CASES[case]
    path = _save_timm(model, case, tmp_path)
    ours = vitlens.load(path, img_size=model.patch_embed.img_size[0], **load_kwargs)
    x = torch.randn(2, 3, *model.patch_embed.img_size)
    with torch.no_grad():
        _close(ours(x), model(x))
        out = ours(x, return_attention=True)
        _close(out.features, model.forward_features(x))
    assert len(out.attentions) == 2
    assert ours.config.num_prefix_tokens == model.num_prefix_tokens
    assert ours.config.no_embed_class == getattr(model, "no_embed_class", False)
    assert ours.config.pos_embed_interp == "timm"


@pytest.mark.parametrize("case", list(TIMM_CASES))
def test_from_timm_and_back_are_bit_exact(case):
    model = _timm_model(case)
    ours = vitlens.from_timm(model)
    x = torch.randn(2, 3, *model.patch_embed.img_size)
    with torch.no_grad():
        _close(ours(x), model(x))
    state = to_timm_state_dict(ours)
    _same_state(state, model.state_dict())
    peer = _timm_model(case)
    peer.load_state_dict(state)  # timm takes the names as they are
    _same_state(vitlens.from_timm(peer).state_dict(), ours.state_dict())


def test_vitlens_to_timm_to_vitlens_is_bit_exact():
    ours = vitlens.create_model("vit_small_patch14_reg4_dinov2", img_size=28, depth=2, num_classes=5, qk_norm=True)
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    peer = TimmViT(**timm_kwargs(ours.config)).eval()
    peer.load_state_dict(to_timm_state_dict(ours))
    back = vitlens.from_timm(peer)
    _same_state(back.state_dict(), ours.state_dict())
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        _close(back(x), peer(x))
        assert torch.equal(back(x), ours.eval()(x))


def test_timm_hub_folder_with_config_json(tmp_path):
    from timm.models._hub import save_for_hf

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=32, num_classes=4).eval()
    save_for_hf(model, str(tmp_path), safe_serialization=True)
    ours = vitlens.load(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _close(ours(x), model(x))
    assert ours.config.crop_pct == model.pretrained_cfg["crop_pct"]


def test_timm_resize_at_load_matches_timm_resampling(tmp_path):
    from timm.layers import resample_abs_pos_embed

    model = _timm_model("vit_small_patch14_reg4_dinov2")  # 4x4 grid, no positions for the prefix tokens
    path = _save_timm(model, "vit_small_patch14_reg4_dinov2", tmp_path)
    ours = vitlens.load(path, img_size=70)
    want = resample_abs_pos_embed(model.pos_embed, (5, 5), (4, 4), num_prefix_tokens=0)
    assert torch.equal(ours.pos_embed, want)


# ------------------------------------------------------------------------------------ Hugging Face
def _hf_config(**kw):
    base = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        image_size=32,
        patch_size=8,
        layer_norm_eps=1e-12,
        attn_implementation="eager",
    )
    return transformers.ViTConfig(**{**base, **kw})


# transformers 5.x key names -> 4.x key names, written out here independently of vitlens's own tables
_LEGACY = [
    (r"\.layers\.(\d+)\.attention\.([qkv])_proj\.", lambda m: f".encoder.layer.{m[1]}.attention.attention."
     + {"q": "query", "k": "key", "v": "value"}[m[2]] + "."),
    (r"\.layers\.(\d+)\.attention\.o_proj\.", r".encoder.layer.\1.attention.output.dense."),
    (r"\.layers\.(\d+)\.mlp\.fc1\.", r".encoder.layer.\1.intermediate.dense."),
    (r"\.layers\.(\d+)\.mlp\.fc2\.", r".encoder.layer.\1.output.dense."),
    (r"\.layers\.(\d+)\.", r".encoder.layer.\1."),
]  # fmt: skip


def _to_legacy_names(state):
    out = {}
    for key, value in state.items():
        new = "." + key
        for pattern, repl in _LEGACY:
            new, n = re.subn(pattern, repl, new)
            if n:
                break
        out[new[1:]] = value
    return out


def _hf_maps_match(ours, hf_model, x):
    with torch.no_grad():
        theirs = hf_model(x, output_attentions=True)
        mine = ours(x, return_attention=True)
    assert len(mine.attentions) == len(theirs.attentions)
    return max(_close(a, b) for a, b in zip(mine.attentions, theirs.attentions)), mine, theirs


@pytest.mark.parametrize("names", ["current", "legacy", "legacy-bin"])
def test_hf_image_classifier_folder_matches_logits_and_every_map(tmp_path, names):
    labels = {0: "cat", 1: "dog", 2: "bird"}
    hf = transformers.ViTForImageClassification(_hf_config(id2label=labels, label2id={})).eval()
    hf.save_pretrained(tmp_path)
    if names.startswith("legacy"):  # the same weights under transformers 4.x names
        from safetensors.torch import load_file

        weights = tmp_path / "model.safetensors"
        state = _to_legacy_names(load_file(str(weights)))
        assert any(".encoder.layer.0.attention.attention.query.weight" in k for k in state)
        weights.unlink()
        if names == "legacy-bin":
            torch.save(state, tmp_path / "pytorch_model.bin")
        else:
            save_file(state, str(weights))
    ours = vitlens.load(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    _, mine, theirs = _hf_maps_match(ours, hf, x)
    _close(mine.logits, theirs.logits)
    assert ours.config.labels == ["cat", "dog", "bird"]
    assert ours.config.norm_eps == 1e-12 and ours.config.pos_embed_interp == "hf"


def test_hf_vit_model_without_prefix_matches_last_hidden_state(tmp_path):
    hf = transformers.ViTModel(_hf_config(hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)).eval()
    hf.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="pooler"):
        ours = vitlens.load(tmp_path)
    assert ours.config.num_classes == 0 and ours.config.act_layer == "gelu_tanh"
    x = torch.randn(2, 3, 32, 32)
    _, mine, theirs = _hf_maps_match(ours, hf, x)
    _close(mine.features, theirs.last_hidden_state)


def test_hf_in_memory_both_ways_and_resize_follows_hf(tmp_path):
    hf = transformers.ViTForImageClassification(_hf_config(num_labels=5)).eval()
    ours = vitlens.from_hf(hf)
    x = torch.randn(2, 3, 32, 32)
    _hf_maps_match(ours, hf, x)
    # back to Hugging Face: a folder transformers loads by itself
    export(ours, tmp_path / "hf", "hf")
    again = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf", attn_implementation="eager")
    _hf_maps_match(ours, again.eval(), x)
    _same_state(to_hf_state_dict(ours), {k: v for k, v in hf.state_dict().items()})
    # a new image size: positions resampled once at load time with HF's rule = HF's interpolate_pos_encoding
    big = vitlens.load(tmp_path / "hf", img_size=48)
    x48 = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        want = hf(x48, interpolate_pos_encoding=True).logits
        _close(big(x48), want)
    timm_rule = vitlens.load(tmp_path / "hf", img_size=48, pos_interp="timm")
    assert timm_rule.config.pos_embed_interp == "timm"
    assert (timm_rule.pos_embed - big.pos_embed).abs().max() > 1e-4  # the two rules give different numbers


# -------------------------------------------------------------------------------------- torchvision
def _tv_model(**kw):
    # vit_b_16's shape (patch 16, 12 heads) at a small width and depth
    args = dict(image_size=64, patch_size=16, num_layers=2, num_heads=12, hidden_dim=48, mlp_dim=96, num_classes=7)
    model = torchvision.models.VisionTransformer(**{**args, **kw}).eval()
    _randomize_zeros(model)
    return model


def _randomize_zeros(model):
    """torchvision starts the head and class token at zero, which would make logits match trivially."""
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(std=0.1)


@pytest.mark.parametrize("old_names", [False, True])
def test_torchvision_files_load_and_match(tmp_path, old_names):
    tv = _tv_model()
    state = tv.state_dict()
    if old_names:
        state = {re.sub(r"\.mlp\.0\.", ".mlp.linear_1.", re.sub(r"\.mlp\.3\.", ".mlp.linear_2.", k)): v
                 for k, v in state.items()}  # fmt: skip
        assert any(".mlp.linear_1." in k for k in state)
    path = tmp_path / "vit_b_16-c0ffee12.pth"  # torchvision's naming gives the head count
    torch.save(state, path)
    ours = vitlens.load(path)
    assert ours.config.num_heads == 12 and ours.config.pos_embed_interp == "torchvision"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _close(ours(x), tv(x))


def test_torchvision_in_memory_both_ways_and_resize_follows_torchvision():
    from torchvision.models.vision_transformer import interpolate_embeddings

    tv = _tv_model()
    ours = vitlens.from_torchvision(tv)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _close(ours(x), tv(x))
    back = to_torchvision_state_dict(ours)
    _same_state(back, tv.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = interpolate_embeddings(96, 16, tv.state_dict())["encoder.pos_embedding"]
    big = vitlens.from_torchvision(tv, img_size=96)
    assert torch.equal(big.pos_embed, want)


def test_export_refuses_what_the_target_cannot_hold(tmp_path):
    ours = vitlens.create_model("vit_base_patch16_siglip_224", img_size=32, depth=1)
    with pytest.raises(
        ValueError, match=r"Hugging Face vit model cannot hold this model: it has global_pool='map' / fc_norm"
    ):
        export(ours, tmp_path / "hf", "hf")
    with pytest.raises(ValueError, match="torchvision VisionTransformer cannot hold.*global_pool='map'"):
        to_torchvision_state_dict(ours)
    assert not (tmp_path / "hf").exists()
    eva = vitlens.create_model("eva02_base_patch14_224", img_size=28, depth=1)
    with pytest.raises(ValueError, match=r"rotary position embeddings \(axial\).*q and v biases without a k bias"):
        export(eva, tmp_path / "hf", "hf")


def test_cli_converts_a_torchvision_file_into_a_folder_transformers_opens(tmp_path):
    from vitlens.commands.main import main

    tv = _tv_model()
    torch.save(tv.state_dict(), tmp_path / "vit_b_16-c0ffee12.pth")
    assert main(["convert", str(tmp_path / "vit_b_16-c0ffee12.pth"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    hf = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _close(hf(x).logits, tv(x))


def test_a_timm_name_that_is_no_preset_is_read_from_timm_itself(tmp_path):
    # CLIP image towers: pre-norm and LayerNorm eps 1e-5, which only timm's own definition tells
    model = timm.create_model("vit_base_patch16_clip_224", pretrained=False, depth=1, img_size=32).eval()
    assert "vit_base_patch16_clip_224" not in vitlens.PRESETS
    path = tmp_path / "vit_base_patch16_clip_224.openai.safetensors"
    save_file(model.state_dict(), str(path))
    ours = vitlens.load(path)
    assert ours.config.pre_norm and ours.config.norm_eps == 1e-5 and ours.config.num_heads == 12
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _close(ours(x), model(x))


# ------------------------------------------------------------------------ timm's method names
@pytest.mark.parametrize("case", ["vit_small_patch14_reg4_dinov2", "deit_tiny_distilled_patch16_224"])
def test_forward_features_and_head_mean_what_they_mean_in_timm(case):
    model = _timm_model(case)
    ours = vitlens.from_timm(model)
    x = torch.randn(2, 3, *model.patch_embed.img_size)
    with torch.no_grad():
        tokens = ours.forward_features(x)
        assert tokens.shape == (2, ours.token_layout(x).num_tokens, ours.config.embed_dim)
        _close(tokens, model.forward_features(x))
        _close(
            ours.forward_head(tokens, pre_logits=True), model.forward_head(model.forward_features(x), pre_logits=True)
        )
        _close(ours.forward_head(tokens), model(x))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"indices": 1},
        {"indices": [0, -1], "norm": True},
        {"indices": [0], "output_fmt": "NLC", "return_prefix_tokens": True},
        {"indices": 2, "intermediates_only": True, "return_prefix_tokens": True},
        {"indices": [0], "stop_early": True},
    ],
)
def test_forward_intermediates_equals_timms(kwargs):
    # registers (prefix tokens are split off) and a non-square grid
    model = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, depth=2, img_size=(56, 42)).eval()
    ours = vitlens.from_timm(model)
    x = torch.randn(2, 3, 56, 42)
    with torch.no_grad():
        got, want = ours.forward_intermediates(x, **kwargs), model.forward_intermediates(x, **kwargs)
    if not kwargs.get("intermediates_only"):
        _close(got[0], want[0])
        got, want = got[1], want[1]
    assert len(got) == len(want)
    for mine, theirs in zip(got, want):
        pairs = zip(mine, theirs) if isinstance(mine, tuple) else [(mine, theirs)]
        for a, b in pairs:
            assert a.shape == b.shape
            _close(a, b)
    if kwargs.get("output_fmt", "NCHW") == "NCHW" and not kwargs.get("return_prefix_tokens"):
        assert got[0].shape == (2, ours.config.embed_dim, 4, 3)


def test_forward_intermediates_refuses_bad_arguments():
    ours = vitlens.from_timm(_timm_model("vit_tiny_patch16_224"))
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="out of range for a 2-block model"):
        ours.forward_intermediates(x, indices=[2])
    with pytest.raises(ValueError, match=r"last-n \(3\) is out of range"):
        ours.forward_intermediates(x, indices=3)
    with pytest.raises(ValueError, match="output_fmt must be 'NCHW' or 'NLC'"):
        ours.forward_intermediates(x, output_fmt="NHWC")
