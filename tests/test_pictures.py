"""``vitlens explain``: image discovery, the pictures and numbers it writes, bad input, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vitlens
from vitlens.commands.main import main
from vitlens.data.files import collect_image_paths, unique_stems

from .report_helpers import peaked_model

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")
PNG = b"\x89PNG\r\n\x1a\n"


def _photo(path: Path, size=(40, 52), mode="RGB", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


@pytest.fixture
def model_dir(tmp_path):
    model = peaked_model(image_mean=(0.4, 0.45, 0.5), image_std=(0.2, 0.25, 0.3), crop_pct=0.9)
    return vitlens.save_pretrained(model, tmp_path / "model")


def test_images_come_from_files_folders_and_globs_in_a_stable_order(tmp_path):
    a = _photo(tmp_path / "pics" / "b.png")
    b = _photo(tmp_path / "pics" / "sub" / "a.jpg")
    (tmp_path / "pics" / "notes.txt").write_text("not an image")
    c = _photo(tmp_path / "other" / "c.png")
    found = collect_image_paths([str(c), tmp_path / "pics", str(tmp_path / "*" / "c.png")])
    assert found == [c, a, b]
    with pytest.raises(FileNotFoundError, match="no such image file or folder: .*missing.png"):
        collect_image_paths([tmp_path / "missing.png"])
    with pytest.raises(FileNotFoundError, match="no files match the pattern .*\\*.gif"):
        collect_image_paths([str(tmp_path / "*.gif")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="folder .*empty holds no image files"):
        collect_image_paths([tmp_path / "empty"])
    assert unique_stems([Path("x/cat.png"), Path("y/cat.jpg"), Path("dog one.png")]) == ["cat", "cat-2", "dog_one"]
    # names that would leave the output folder, hide in it, fold onto each other or onto the run's own files
    hostile = [Path("...png"), Path("..png"), Path(".png"), Path(".hidden.png"), Path("Cat.png"), Path("cat.png")]
    assert unique_stems(hostile + [Path("explain.json.png")], reserved=("explain.json",)) == [
        "image",
        "image-2",
        "png",
        "hidden",
        "Cat",
        "cat-2",
        "explain.json-2",
    ]


def test_explain_writes_pictures_and_numbers_that_match_vitlens_explain(tmp_path, model_dir, capsys):
    cat = _photo(tmp_path / "in" / "cat.png")
    _photo(tmp_path / "in" / "grey.png", mode="L", seed=1)
    out = tmp_path / "out"
    assert (
        main(
            [
                "explain",
                "--model",
                str(model_dir),
                "--image",
                str(tmp_path / "in"),
                "--out",
                str(out),
                "--layer",
                "1",
                "--top-k",
                "3",
            ]
        )
        == 0
    )
    assert "explained 2 image(s)" in capsys.readouterr().out
    summary = json.loads((out / "explain.json").read_text())
    assert summary["methods"] == ["cls", "rollout", "grad-rollout", "gae", "attnlrp"]
    assert summary["model"]["layer"] == 1
    assert [r["name"] for r in summary["images"]] == ["cat", "grey"]
    for name in ("cat", "grey"):
        files = sorted(p.name for p in (out / name).iterdir())
        expected = ["attnlrp.png", "cls.png", "distance.png", "gae.png", "grad-rollout.png", "heads_layer1.png"]
        assert files == [*expected, "rollout.png"]
        assert all((out / name / f).read_bytes()[:8] == PNG for f in files)

    # the numbers are those of the model on its own pre-processing of the file
    model = vitlens.load(model_dir).eval()
    x = vitlens.transforms_for(model)(Image.open(cat))[None]
    record = summary["images"][0]
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    assert [t["index"] for t in record["top"]] == probs.topk(3).indices.tolist()
    assert record["top"][0]["prob"] == pytest.approx(float(probs.max()), abs=1e-4)
    assert record["target"]["index"] == int(probs.argmax())
    gae = vitlens.explain.gae(model, x)[0]
    assert record["maps"]["gae"]["max"] == pytest.approx(float(gae.max()), rel=1e-4)
    peak = int(gae.flatten().argmax())
    assert record["maps"]["gae"]["peak"] == [peak // 4, peak % 4]
    rollout = vitlens.explain.rollout(model, x)[0]
    assert record["maps"]["rollout"]["mean"] == pytest.approx(float(rollout.mean()), rel=1e-4)
    cls = vitlens.explain.cls_attention(model, x, layer=1)[0].mean(0)
    assert record["maps"]["cls"]["max"] == pytest.approx(float(cls.max()), rel=1e-4)
    assert record["maps"]["cls"]["file"] == "cat/cls.png"
    with torch.no_grad():
        out_maps = model(x, return_attention=True).attentions
    distance = vitlens.explain.attention_distance(out_maps, model.token_layout(x))
    np.testing.assert_allclose(record["attention_distance"], distance.numpy(), rtol=1e-4)


def test_methods_and_target_can_be_chosen(tmp_path, model_dir):
    _photo(tmp_path / "cat.png")
    out = tmp_path / "out"
    assert (
        main(
            [
                "explain",
                "--model",
                str(model_dir),
                "--image",
                str(tmp_path / "cat.png"),
                "--out",
                str(out),
                "--method",
                "gae,rollout",
                "--method",
                "gae",
                "--target",
                "4",
            ]
        )
        == 0
    )
    record = json.loads((out / "explain.json").read_text())["images"][0]
    assert list(record["maps"]) == ["gae", "rollout"]
    assert record["target"] == {"kind": "class", "index": 4, "label": "class 4"}
    assert record["maps"]["gae"]["target"] == record["target"]
    assert record["maps"]["rollout"]["target"] == {"kind": "attention", "label": "where the class token looks"}
    assert sorted(p.name for p in (out / "cat").iterdir()) == [
        "distance.png",
        "gae.png",
        "heads_layer2.png",
        "rollout.png",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "5"], "target class 5 does not exist: the model has 5 classes (0..4)"),
        (["--method", "saliency"], "unknown explanation method(s) ['saliency']; choose from cls, rollout"),
        (["--layer", "3"], "layer index 3 is out of range for a 3-layer model"),
    ],
)
def test_bad_options_stop_before_anything_is_written(tmp_path, model_dir, capsys, args, message):
    _photo(tmp_path / "cat.png")
    out = tmp_path / "out"
    assert (
        main(["explain", "--model", str(model_dir), "--image", str(tmp_path / "cat.png"), "--out", str(out), *args])
        == 2
    )
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_methods_a_model_cannot_explain_are_refused_up_front(tmp_path):
    from vitlens.commands.explain import explain_files

    _photo(tmp_path / "cat.png")
    pooled = peaked_model(class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="method 'cls' needs a class token"):
        explain_files(pooled, [tmp_path / "cat.png"], tmp_path / "out", ["rollout", "cls"])
    with pytest.raises(ValueError, match="needs a classifier, and this model has none"):
        explain_files(peaked_model(num_classes=0), [tmp_path / "cat.png"], tmp_path / "out", ["gae"], target=1)
    with pytest.raises(ValueError, match="compares every patch with a region: give --region"):
        explain_files(peaked_model(), [tmp_path / "cat.png"], tmp_path / "out", ["similarity"])
    assert not (tmp_path / "out").exists()
    records = explain_files(pooled, [tmp_path / "cat.png"], tmp_path / "out", ["rollout"], progress=False)
    assert list(records[0]["maps"]) == ["rollout"] and "heads_layer2" not in records[0]["pictures"]


def test_a_bad_image_anywhere_stops_the_run_with_nothing_written(tmp_path, model_dir, capsys):
    _photo(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "b.png").write_bytes(PNG + b"truncated")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint16)).save(tmp_path / "deep.png")
    out = tmp_path / "out"
    base = ["explain", "--model", str(model_dir), "--out", str(out), "--image"]
    assert main([*base, str(tmp_path / "in")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "deep.png")]) == 2
    assert "has image mode 'I" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "nope.png")]) == 2
    assert "no such image file or folder" in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "taken").write_text("a file, not a folder")
    assert main([*base[:-3], "--out", str(tmp_path / "taken" / "out"), "--image", str(tmp_path / "in" / "a.png")]) == 2
    assert "cannot write to the output folder" in capsys.readouterr().err


def test_report_command_writes_one_html_file(tmp_path, model_dir, capsys):
    _photo(tmp_path / "in" / "a.png")
    _photo(tmp_path / "in" / "b.png", seed=2)
    out = tmp_path / "r" / "report.html"
    pattern = str(tmp_path / "in" / "*.png")
    assert main(["report", "--model", str(model_dir), "--image", pattern, "--out", str(out)]) == 0
    assert "2 image(s)" in capsys.readouterr().out
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and '"name":"a.png"' in html and '"name":"b.png"' in html
    assert (
        main(
            [
                "report",
                "--model",
                str(model_dir),
                "--image",
                str(tmp_path / "in"),
                "--target",
                "9",
                "--out",
                str(tmp_path / "x.html"),
            ]
        )
        == 2
    )
    assert "target class 9 does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


@pytest.mark.slow
def test_torchrun_with_two_processes_writes_what_one_process_writes(tmp_path, model_dir):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    for i in range(3):
        _photo(tmp_path / "in" / f"{i}.png", seed=i)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["explain", "--model", str(model_dir), "--image", str(tmp_path / "in"), "--method", "rollout,gae"]
    single = subprocess.run(
        [sys.executable, "-m", "vitlens", *common, "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert single.returncode == 0, single.stderr
    multi = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "vitlens", *common, "--out", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert multi.returncode == 0, multi.stderr
    one = {p.relative_to(tmp_path / "one"): p.read_bytes() for p in (tmp_path / "one").rglob("*") if p.is_file()}
    two = {p.relative_to(tmp_path / "two"): p.read_bytes() for p in (tmp_path / "two").rglob("*") if p.is_file()}
    assert sorted(one) == sorted(two) and len(one) == 3 * 4 + 1
    assert all(one[k] == two[k] for k in one)
