"""Targets of the gradient methods: callables, text prompts, reference images, regions, feature norms.

Each is checked against a reference computed here: the score by hand (the source library's
``encode_text`` / ``get_text_features`` and a cosine similarity), then ``torch.autograd.grad`` of
that score with respect to the maps, folded by the paper's formula.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vitlens
from vitlens import explain

ATOL = 1e-5


def tiny(**kw):
    return vitlens.VisionTransformer(
        vitlens.ViTConfig(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=3, num_heads=4, **kw)
    ).eval()


LAYOUTS = {
    "class token": dict(num_classes=5),
    "registers": dict(num_classes=5, reg_tokens=2),
    "attention pool": dict(num_classes=0, class_token=False, global_pool="map"),
    "mean pool": dict(num_classes=0, class_token=False, global_pool="avg"),
}


def reference_fold(model, x, score_fn, rule: str):
    """GAE or gradient rollout from autograd of ``score_fn(out)`` with respect to every map, by the formula."""
    with torch.enable_grad():
        out = model(x, return_attention=True)
        maps = [*out.attentions] + ([out.pool_attention] if out.pool_attention is not None else [])
        grads = torch.autograd.grad(score_fn(out).sum(), maps)
    lay = model.token_layout(x)
    n = lay.num_tokens
    eye = torch.eye(n)
    product = eye.expand(len(x), n, n)
    layers = list(zip(maps, grads))
    pool = layers.pop() if out.pool_attention is not None else None
    for a, g in layers:
        if rule == "gae":
            product = product + (g * a).clamp_min(0).mean(1) @ product
        else:
            step = (g * a).mean(1).clamp_min(0) + eye
            product = (step / step.sum(-1, keepdim=True)) @ product
    if pool is not None:
        a, g = pool
        fused = (g * a).clamp_min(0).mean(1) if rule == "gae" else (g * a).mean(1).clamp_min(0)
        if rule != "gae":
            fused = fused / fused.sum(-1, keepdim=True)
        rows = (fused @ product)[:, 0]
    elif lay.class_index is not None:
        rows = product[:, lay.class_index]
    else:
        rows = product[:, lay.patch_slice].mean(1)
    return rows[:, lay.patch_slice].reshape(len(x), *lay.grid)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("rule", ["gae", "grad_rollout"])
def test_a_callable_target_equals_autograd_of_its_score_folded_by_hand(layout, rule):
    model = tiny(**LAYOUTS[layout])
    x = torch.randn(3, 3, 16, 16)
    weights = torch.randn(model.config.embed_dim if model.config.num_classes == 0 else 5)

    def score(out):
        return torch.tanh(out.logits) @ weights  # any differentiable number per image

    method = explain.gae if rule == "gae" else explain.grad_rollout
    torch.testing.assert_close(method(model, x, score), reference_fold(model, x, score, rule), atol=ATOL, rtol=0)
    torch.testing.assert_close(method(model, x, score, streaming=True), method(model, x, score), atol=ATOL, rtol=0)


def test_a_callable_must_return_one_score_per_image():
    model = tiny(num_classes=5)
    with pytest.raises(ValueError, match=r"one score per image, shape \(2,\); got \(2, 5\)"):
        explain.gae(model, torch.randn(2, 3, 16, 16), lambda out: out.logits)


def test_norm_and_region_targets_are_the_norms_they_say():
    model = tiny(num_classes=0, reg_tokens=1)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        out = model(x, return_attention=True)
    torch.testing.assert_close(explain.norm_target(model)(out), out.features[:, 0].norm(dim=-1))
    # the box (0, 0)-(8, 4) holds the centres of patches (0, 0) and (0, 1): tokens 2 and 3 after class + register
    region = explain.norm_target(model, region=(0, 0, 8, 4))
    torch.testing.assert_close(region(out), out.features[:, 2:4].mean(1).norm(dim=-1))
    assert region.kind == "region" and explain.norm_target(model).kind == "features"
    relevance = explain.gae(model, x, region)
    torch.testing.assert_close(relevance, reference_fold(model, x, region, "gae"), atol=ATOL, rtol=0)


def test_regions_must_lie_inside_the_image():
    lay = tiny().token_layout((16, 16))
    assert explain.region_patches((0, 0, 16, 16), lay).tolist() == list(range(16))
    assert explain.region_patches((5, 5, 6, 6), lay).tolist() == [5]  # smaller than a patch: the one under it
    for box in [(0, 0, 17, 8), (8, 0, 4, 8), (-1, 0, 4, 4), (0, 0, float("nan"), 4)]:
        with pytest.raises(ValueError, match="must lie inside the 16x16 image the model sees"):
            explain.region_patches(box, lay)


def test_similarity_map_is_the_cosine_of_every_patch_to_the_regions_mean_token():
    model = tiny(num_classes=0, reg_tokens=2)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        patches = model.forward_features(x)[:, 3:]
    query = patches[:, [0, 1, 4, 5]].mean(1)  # the top-left 8x8 pixels: patches (0,0), (0,1), (1,0), (1,1)
    want = F.cosine_similarity(patches, query[:, None], dim=-1).view(2, 4, 4)
    torch.testing.assert_close(explain.similarity_map(model, x, (0, 0, 8, 8)), want, atol=1e-6, rtol=0)


def test_image_targets_compare_embeddings_one_reference_or_one_per_image():
    model = tiny(num_classes=0)
    x, refs = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        out = model(x, return_attention=True)
        mine, theirs = model.forward_head(model.forward_features(x), pre_logits=True), model(refs)
    per_image = explain.image_target(model, refs)
    torch.testing.assert_close(per_image(out), F.cosine_similarity(mine, theirs), atol=1e-6, rtol=0)
    shared = explain.image_target(model, refs[1])
    torch.testing.assert_close(shared(out), F.cosine_similarity(mine, theirs[1:].expand(2, -1)), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="3 reference embeddings for a batch of 2 image"):
        explain.gae(model, x, explain.image_target(model, torch.randn(3, 3, 16, 16)))
    maps = explain.per_target(explain.gae, model, x, [per_image, shared])
    assert maps.shape == (2, 2, 4, 4)
    torch.testing.assert_close(maps[:, 1], explain.gae(model, x, shared))


def test_text_targets_need_a_text_tower():
    with pytest.raises(ValueError, match="a text target needs the model's text tower, and this model has none"):
        explain.text_target(tiny(), "a cat")


# ------------------------------------------------------------------ text towers kept by the loaders
def test_open_clip_text_targets_equal_encode_text_and_cosine_similarity():
    open_clip = pytest.importorskip("open_clip")
    clip = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    with torch.no_grad():
        for p in clip.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model = vitlens.from_open_clip(clip)
    assert model.text_tower is not None
    tokenizer = open_clip.get_tokenizer("ViT-B-32")  # ships with the package
    prompts = ["a photo of a cat", "a red car"]
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = F.cosine_similarity(clip.encode_image(x), clip.encode_text(tokenizer(prompts)))
        out = model(x, return_attention=[-1])
    target = explain.text_target(model, prompts)  # one prompt per image
    torch.testing.assert_close(target(out), want, atol=ATOL, rtol=0)
    shared = explain.text_target(model, "a red car")
    torch.testing.assert_close(shared(out)[1], want[1], atol=ATOL, rtol=0)
    assert target.kind == "text" and shared.label == "a red car"
    relevance = explain.per_target(explain.gae, model, x[:1], [explain.text_target(model, p) for p in prompts])
    assert relevance.shape == (1, 2, 7, 7) and not torch.equal(relevance[:, 0], relevance[:, 1])


def _word_tokenizer(words, max_length):
    """A transformers fast tokenizer over a fixed word list, made offline (one id per word)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", model_max_length=max_length
    )


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hugging_face_folders_keep_their_text_tower(tmp_path, kind):
    T = pytest.importorskip("transformers")
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=40)
    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    vision.update(image_size=32, patch_size=8)
    if kind == "clip":
        text.update(max_position_embeddings=16, eos_token_id=1)
        hf = T.CLIPModel(T.CLIPConfig(text_config=text, vision_config=vision, projection_dim=24))
    else:
        text.update(max_position_embeddings=16)
        hf = T.SiglipModel(T.SiglipConfig(text_config=text, vision_config=vision))
    hf = hf.eval()
    tokenizer = _word_tokenizer(["a", "cat", "red", "car", "photo", "of"], 16)
    hf.save_pretrained(tmp_path / kind)
    tokenizer.save_pretrained(tmp_path / kind)
    model = vitlens.load(tmp_path / kind)
    prompts = ["a cat", "a red car"]
    padding = "max_length" if kind == "siglip" else True
    inputs = tokenizer(prompts, padding=padding, return_tensors="pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        texts = hf.get_text_features(**inputs)
        images = hf.get_image_features(pixel_values=x)
        texts, images = (getattr(t, "pooler_output", t) for t in (texts, images))
        out = model(x, return_attention=True)
    torch.testing.assert_close(model.text_tower.encode(prompts), texts, atol=ATOL, rtol=0)
    torch.testing.assert_close(explain.text_target(model, prompts)(out), F.cosine_similarity(images, texts))
    live = vitlens.from_hf(hf, tokenizer=tokenizer)
    torch.testing.assert_close(live.text_tower.encode(prompts), texts, atol=ATOL, rtol=0)


def test_a_new_head_drops_the_text_tower():
    open_clip = pytest.importorskip("open_clip")
    clip = open_clip.create_model("ViT-B-32", pretrained=None)
    assert vitlens.from_open_clip(clip, num_classes=3).text_tower is None
    assert vitlens.from_open_clip(clip.visual).text_tower is None


# ------------------------------------------------------------------ vitlens explain with targets
def _photo(path, size=(40, 52), seed=0):
    from PIL import Image

    pixels = (torch.rand(size[1], size[0], 3, generator=torch.Generator().manual_seed(seed)) * 255).byte().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _explain(args):
    from vitlens.commands.main import main

    try:
        return main(["explain", *map(str, args)])
    except SystemExit as e:  # argparse's own refusals
        return e.code


def test_a_backbone_gets_the_methods_that_apply_and_says_what_it_skipped(tmp_path, capsys):
    import json

    backbone = vitlens.save_pretrained(tiny(num_classes=0, reg_tokens=1), tmp_path / "backbone")
    image = _photo(tmp_path / "cat.png")
    assert _explain(["--model", backbone, "--image", image, "--out", tmp_path / "out"]) == 0
    assert "skipped: similarity (method 'similarity' compares every patch with a region" in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "explain.json").read_text())
    assert summary["methods"] == ["cls", "rollout", "grad-rollout", "gae", "attnlrp"]
    assert summary["targets"] == [{"kind": "features", "label": "norm of the readout features"}]
    maps = summary["images"][0]["maps"]
    assert maps["gae"]["target"]["kind"] == "features" and maps["cls"]["target"]["kind"] == "attention"
    assert (tmp_path / "out" / "cat" / "gae.png").is_file() and (tmp_path / "out" / "cat" / "attnlrp.png").is_file()
    region = ["--region", "0,0,8,8", "--target-image", _photo(tmp_path / "ref.png", seed=1)]
    assert _explain(["--model", backbone, "--image", image, "--out", tmp_path / "r", *region]) == 0
    maps = json.loads((tmp_path / "r" / "explain.json").read_text())["images"][0]["maps"]
    assert {"similarity", "gae_1_ref", "gae_2_region", "grad-rollout_1_ref"} <= set(maps)
    assert maps["gae_2_region"]["target"] == {"kind": "region", "label": "region 0,0,8,8", "box": [0, 0, 8, 8]}
    assert (tmp_path / "r" / "cat" / "similarity.png").is_file()


def test_text_prompts_explain_an_open_clip_folder_end_to_end(tmp_path):
    import json

    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    clip = open_clip.create_model("ViT-B-32", pretrained=None)
    folder = tmp_path / "clip"
    folder.mkdir()
    save_file(clip.state_dict(), str(folder / "open_clip_model.safetensors"))
    config = dict(model_cfg=open_clip.get_model_config("ViT-B-32"), preprocess_cfg={})
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    image = _photo(tmp_path / "cat.png", size=(64, 48))
    args = ["--model", folder, "--image", image, "--out", tmp_path / "out", "--method", "gae"]
    assert _explain([*args, "--text", "a cat", "--text", "a dog"]) == 0
    record = json.loads((tmp_path / "out" / "explain.json").read_text())["images"][0]
    assert record["maps"]["gae_1_a-cat"]["target"] == {"kind": "text", "label": "a cat"}
    assert record["maps"]["gae_2_a-dog"]["target"] == {"kind": "text", "label": "a dog"}
    assert (tmp_path / "out" / "cat" / "gae_2_a-dog.png").is_file()
    from vitlens.commands.main import main

    report = tmp_path / "report.html"
    assert main(["report", "--model", str(folder), "--image", str(image), "--out", str(report), "--text", "a cat"]) == 0
    from .report_helpers import embedded

    targets = embedded(report.read_text())[0]["images"][0]["targets"]
    assert [(t["kind"], t["label"]) for t in targets] == [("text", "a cat")]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--text", "a cat"], "a text target needs the model's text tower"),
        (["--target", "9"], "target class 9 does not exist: the model has 5 classes"),
        (["--region", "0,0,40,8"], "must lie inside the 16x16 image the model sees"),
        (["--region", "0,0,8"], "a region is four numbers x0,y0,x1,y1"),
        (["--target-image", "missing.png"], "missing.png"),
    ],
)
def test_bad_targets_stop_before_anything_is_written(tmp_path, capsys, extra, message):
    model = vitlens.save_pretrained(tiny(num_classes=5), tmp_path / "model")
    out = tmp_path / "out"
    assert _explain(["--model", model, "--image", _photo(tmp_path / "cat.png"), "--out", out, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------ high-norm tokens
def test_high_norm_tokens_flag_the_patches_whose_norm_stands_out():
    model = tiny(num_classes=5)
    x = torch.randn(2, 3, 16, 16) * 0.1
    x[1, :, 4:8, 8:12] = 50.0  # image 1, patch (1, 2): a token far larger than the others
    found = explain.high_norm_tokens(model, x)
    assert found.norms.shape == found.high.shape == (2, 3, 4, 4)
    with torch.no_grad():
        tokens = [step.tokens for step in model.iter_blocks(x)]
    torch.testing.assert_close(found.norms[:, -1].flatten(1), tokens[-1][:, 1:].norm(dim=-1))
    assert not found.high[0].any()
    assert found.high[1, :, 1, 2].all() and found.high[1].sum() == 3  # that patch, at every layer
    with pytest.raises(ValueError, match="ratio must be above 1"):
        explain.high_norm_tokens(model, x, ratio=0.5)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("rule", ["gae", "grad_rollout"])
def test_bounded_memory_explanations_equal_todays(layout, rule):
    model = tiny(**LAYOUTS[layout], rope="axial") if layout == "registers" else tiny(**LAYOUTS[layout])
    x = torch.randn(3, 3, 16, 16)
    method = explain.gae if rule == "gae" else explain.grad_rollout
    targets = [None, explain.norm_target(model)] if model.config.num_classes else [explain.norm_target(model)]
    for target in targets:
        torch.testing.assert_close(
            method(model, x, target, bounded=True), method(model, x, target), atol=1e-5, rtol=1e-5
        )


def test_bounded_explanations_recomputed_a_few_rows_at_a_time_are_the_same():
    model = tiny(num_classes=5, rel_pos_bias=True, pos_embed="none")
    x = torch.randn(2, 3, 16, 16)
    for method in (explain.gae, explain.grad_rollout):
        torch.testing.assert_close(method(model, x, bounded=3), method(model, x), atol=1e-5, rtol=1e-5)
    pooled = tiny(**LAYOUTS["attention pool"], rope="axial", pos_embed="none")
    target = explain.norm_target(pooled, region=(0, 0, 8, 8))
    torch.testing.assert_close(
        explain.gae(pooled, x, target, bounded=5), explain.gae(pooled, x, target), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize(
    "kind",
    [
        dict(k_bias=False, rope="axial", mlp_layer="swiglu"),  # EVA: q and v biases, the projection's own path
        dict(attn_layer="diff"),
        dict(block_type="parallel"),
        dict(num_parallel=2),
        dict(num_kv_heads=2),
    ],
    ids=["eva", "diff", "parallel", "branches", "grouped-kv"],
)
def test_bounded_explanations_project_each_layer_once_and_still_equal_todays(kind):
    """Recomputed two rows at a time (9 chunks a layer), q/k/v projected once per layer: the same numbers."""
    model = tiny(num_classes=5, **kind)
    x = torch.randn(2, 3, 16, 16)
    projections = [m.qkv for m in model.modules() if hasattr(m, "qkv")]
    calls = []
    hooks = [p.register_forward_hook(lambda *_: calls.append(1)) for p in projections]
    for method in (explain.gae, explain.grad_rollout):
        expected = method(model, x)
        calls.clear()
        torch.testing.assert_close(method(model, x, bounded=2), expected, atol=1e-5, rtol=1e-5)
        if kind.get("k_bias", True):  # EVA's projection reads qkv.weight itself: no module call to count
            assert len(calls) == 2 * len(projections)  # the forward, then once in the backward, per layer
    for hook in hooks:
        hook.remove()
