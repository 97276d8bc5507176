"""The explorer's builder: encoding, embedded numbers, views, Python API and bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import vitlens
from vitlens.viz.report.encode import dequantize_rows, pack_rows, quantize_rows, unpack_rows

from .report_helpers import attention_chunk, embedded, peaked_model

pytest.importorskip("matplotlib")
pytest.importorskip("PIL")


def test_quantize_rows_keeps_each_row_within_half_a_step_of_its_maximum():
    rows = torch.rand(3, 7, 11) ** 4
    codes, scales = quantize_rows(rows)
    assert codes.dtype == np.uint8 and codes.shape == (3, 7, 11) and scales.shape == (3, 7)
    assert (codes.max(axis=-1) == 255).all()
    back = dequantize_rows(codes, scales)
    step = rows.amax(-1, keepdim=True).numpy() / 255
    assert (np.abs(back - rows.numpy()) <= step / 2 + 1e-7).all()


def test_pack_and_unpack_round_trip_and_reject_a_wrong_shape():
    rows = torch.rand(6, 9)
    codes, scales = unpack_rows(pack_rows(rows), 6, 9)
    np.testing.assert_array_equal(codes, quantize_rows(rows)[0])
    np.testing.assert_array_equal(scales, quantize_rows(rows)[1])
    with pytest.raises(ValueError, match="chunk holds 78 bytes, expected 60 for 6 rows of 6"):
        unpack_rows(pack_rows(rows), 6, 6)


def test_report_embeds_every_layer_and_head_of_the_model_within_quantization(tmp_path):
    model = peaked_model()
    images = torch.randn(2, 3, 32, 32)
    path = vitlens.viz.report.build(model, images, tmp_path / "r.html", names=["a", "b"])
    html = path.read_text()
    meta, chunks = embedded(html)
    assert meta["model"] | {"summary": None} == {
        "depth": 3,
        "heads": 2,
        "grid": [4, 4],
        "tokens": 17,
        "prefix": 1,
        "class_index": 0,
        "dist_index": None,
        "register_indices": [],
        "summary": None,
    }
    assert [im["name"] for im in meta["images"]] == ["a", "b"]
    assert [v["id"] for v in meta["views"]] == ["attention", "cls", "rollout", "gae", "grad-rollout"]
    with torch.no_grad():
        out = model(images, return_attention=True)
    for i in range(2):
        for layer in range(3):
            expected = out.attentions[layer][i][..., 1:].numpy()
            got = attention_chunk(meta, chunks, i, layer)
            step = expected.max(-1, keepdims=True) / 255
            assert (np.abs(got - expected) <= step / 2 + 1e-6).all()
    # top predictions are the model's, with the probabilities of its softmax
    probs = out.logits.softmax(-1)
    assert meta["images"][1]["top"][0]["index"] == int(probs[1].argmax())
    assert meta["images"][1]["top"][0]["prob"] == pytest.approx(float(probs[1].max()), abs=1e-4)
    assert len(meta["images"][0]["top"]) == 5
    # no network: nothing is loaded from anywhere
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html)
    assert "@import" not in html and "fetch(" not in html


def test_explanation_views_match_vitlens_explain(tmp_path):
    model = peaked_model()
    images = torch.randn(1, 3, 32, 32)
    meta, chunks = embedded(vitlens.viz.report.render(model, images, target=3).html)
    record = meta["images"][0]
    assert [{k: v for k, v in t.items() if k not in ("gae", "grad-rollout")} for t in record["targets"]] == [
        {"kind": "class", "index": 3, "label": "class 3"}
    ]
    gae = vitlens.explain.gae(model, images, target=3)[0].flatten()
    np.testing.assert_allclose(record["targets"][0]["gae"], (gae / gae.max()).numpy(), atol=1e-4)
    with torch.no_grad():
        out = model(images, return_attention=True)
    layout = model.token_layout(images)
    distance = vitlens.explain.attention_distance(out.attentions, layout)
    np.testing.assert_allclose(record["distance"], distance.numpy(), atol=1e-4)
    # the rollout chunk's class-token rows are vitlens.explain's rollout after each layer
    codes, scales = unpack_rows(chunks["vl-r-0"], 3 * 17, 16)
    rows = dequantize_rows(codes, scales).reshape(3, 17, 16)
    per_layer = vitlens.explain.rollout_per_layer(out.attentions, layout)[0].flatten(1).numpy()
    np.testing.assert_allclose(rows[:, 0], per_layer, atol=per_layer.max() / 255)


def test_names_cannot_break_out_of_the_embedded_data():
    images = torch.randn(1, 3, 32, 32)
    html = vitlens.viz.report.render(peaked_model(), images, names=["</script><!--x"], gradients=False).html
    meta, _ = embedded(html)
    assert meta["images"][0]["name"] == "</script><!--x"
    assert "</script><!--x" not in html


def test_labels_from_the_config_name_the_predictions():
    model = peaked_model(labels=["cat", "dog", "fox", "owl", "eel"])
    meta, _ = embedded(vitlens.viz.report.render(model, torch.randn(1, 3, 32, 32), gradients=False).html)
    top = meta["images"][0]["top"]
    assert {t["label"] for t in top} == {"cat", "dog", "fox", "owl", "eel"}
    assert [v["id"] for v in meta["views"]] == ["attention", "cls", "rollout"]


def test_a_model_without_class_token_has_no_class_token_view():
    model = peaked_model(class_token=False, global_pool="avg", reg_tokens=2)
    meta, chunks = embedded(vitlens.viz.report.render(model, torch.randn(1, 3, 32, 32), gradients=False).html)
    assert meta["model"]["class_index"] is None and meta["model"]["register_indices"] == [0, 1]
    assert "cls" not in [v["id"] for v in meta["views"]]
    assert attention_chunk(meta, chunks, 0, 2).shape == (2, 18, 16)


def test_image_files_get_the_models_own_preprocessing(tmp_path):
    from PIL import Image

    model = peaked_model(image_mean=(0.2, 0.3, 0.4), image_std=(0.1, 0.2, 0.3), crop_pct=0.875)
    picture = Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8))
    picture.save(tmp_path / "cat.png")
    meta, chunks = embedded(vitlens.viz.report.render(model, [tmp_path / "cat.png"]).html)
    x = vitlens.transforms_for(model)(picture)[None]
    with torch.no_grad():
        out = model(x, return_attention=True)
    assert meta["images"][0]["name"] == "cat.png"
    np.testing.assert_allclose(attention_chunk(meta, chunks, 0, 0), out.attentions[0][0][..., 1:].numpy(), atol=0.004)


def test_jupyter_shows_the_report_in_a_sandboxed_frame():
    report = vitlens.viz.report.render(peaked_model(), torch.randn(1, 3, 32, 32), gradients=False)
    shown = report._repr_html_()
    assert shown.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in shown
    assert "<script" not in shown  # the page is escaped inside the attribute, not run in the notebook


def test_bad_input_is_refused_with_a_clear_message_and_nothing_written(tmp_path):
    model = peaked_model()
    good = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"target class 7 does not exist: the model has 5 classes \(0\.\.4\)"):
        vitlens.viz.report.build(model, good, tmp_path / "a.html", target=7)
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, 3, height, width\).*got \(1, 1, 32, 32\)"):
        vitlens.viz.report.build(model, torch.randn(1, 1, 32, 32), tmp_path / "a.html")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match="cannot read .*broken.png as an image"):
        vitlens.viz.report.build(model, [tmp_path / "broken.png"], tmp_path / "a.html")
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), dtype=np.uint16)).save(tmp_path / "deep.png")  # 16-bit grey
    with pytest.raises(ValueError, match="deep.png has image mode 'I.*'; vitlens reads 8-bit images"):
        vitlens.viz.report.build(model, [tmp_path / "deep.png"], tmp_path / "a.html")
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        vitlens.viz.report.build(model, good, tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="cannot write the report to .*file is a file, not a folder"):
        vitlens.viz.report.build(
            model, torch.randn(1, 1, 32, 32), tmp_path / "file" / "sub" / "r.html"
        )  # checked first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.png", "deep.png", "file"]


def test_an_existing_report_is_replaced_whole(tmp_path):
    path = tmp_path / "r.html"
    path.write_text("old")
    vitlens.viz.report.build(peaked_model(), torch.randn(1, 3, 32, 32), path, gradients=False)
    assert path.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_the_report_file_gets_the_usual_permissions(tmp_path):
    import os

    mask = os.umask(0o027)
    try:
        path = vitlens.viz.report.build(peaked_model(), torch.randn(1, 3, 32, 32), tmp_path / "r.html", gradients=False)
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o640


def test_the_demo_writes_an_explorer_for_four_test_digits(tmp_path):
    pytest.importorskip("sklearn")
    from vitlens.commands.demo import explorer

    model_dir = vitlens.save_pretrained(vitlens.create_model("vit_digits"), tmp_path / "last")
    path = explorer(model_dir, tmp_path / "report.html")
    meta, chunks = embedded(path.read_text())
    assert [im["name"] for im in meta["images"]] == ["digit 0", "digit 1", "digit 2", "digit 3"]
    assert len([c for c in chunks if c.startswith("vl-a-")]) == 4 * vitlens.get_config("vit_digits").depth


def test_the_target_selector_offers_each_images_top_classes_then_each_reference():
    model = peaked_model()
    images, reference = torch.randn(2, 3, 32, 32), torch.randn(3, 32, 32)
    meta, _ = embedded(vitlens.viz.report.render(model, images).html)
    for i, record in enumerate(meta["images"]):
        top3 = model(images[i : i + 1])[0].topk(3).indices.tolist()
        assert [t["index"] for t in record["targets"]] == top3
        for t in record["targets"]:
            gae = vitlens.explain.gae(model, images[i : i + 1], target=t["index"])[0].flatten()
            np.testing.assert_allclose(t["gae"], (gae / gae.max()).numpy(), atol=1e-4)
    meta, _ = embedded(vitlens.viz.report.render(model, images, target=1, references=[reference]).html)
    kinds = [(t["kind"], t["label"]) for t in meta["images"][0]["targets"]]
    assert kinds == [("class", "class 1"), ("image", "image 0")]
    score = vitlens.explain.image_target(model, reference)
    gae = vitlens.explain.gae(model, images[1:], target=score)[0].flatten()
    np.testing.assert_allclose(meta["images"][1]["targets"][1]["gae"], (gae / gae.max()).numpy(), atol=1e-4)


def test_a_backbone_report_explains_its_features_and_refuses_text_without_a_tower():
    model = peaked_model(num_classes=0)
    meta, _ = embedded(vitlens.viz.report.render(model, torch.randn(1, 3, 32, 32)).html)
    assert [t["kind"] for t in meta["images"][0]["targets"]] == ["features"]
    assert [v["id"] for v in meta["views"]][-2:] == ["gae", "grad-rollout"]
    with pytest.raises(ValueError, match="a text target needs the model's text tower"):
        vitlens.viz.report.render(model, torch.randn(1, 3, 32, 32), texts=["a cat"])


def test_attribution_views_embed_the_methods_maps_scaled_to_their_maximum():
    pytest.importorskip("captum")
    model = peaked_model()
    images = torch.randn(1, 3, 32, 32)
    meta, _ = embedded(vitlens.viz.report.render(model, images, target=2, methods=["occlusion", "attnlrp"]).html)
    assert [v["id"] for v in meta["views"]][-4:] == ["gae", "grad-rollout", "occlusion", "attnlrp"]
    for method in ("occlusion", "attnlrp"):
        heat = vitlens.explain.ATTRIBUTIONS[method](model, images, target=2)[0].flatten().clamp_min(0)
        np.testing.assert_allclose(meta["images"][0]["targets"][0][method], (heat / heat.max()).numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="beyond GAE and gradient rollout: attnlrp, cp-lrp, .*occlusion"):
        vitlens.viz.report.render(model, images, methods=["lrp"])
