"""Hostile but realistic inputs: a clear error (or the right result), and nothing written or lost.

One test per kind of input (they follow the list in docs/refusals.md): names that would leave the
output folder, integer weights, configs that disagree with the weights or have the wrong types,
class names that do not fit, non-finite numbers, 16-bit images, two configs that disagree,
messages instead of tracebacks, the Python API's edges, and what interrupted runs leave behind.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import vitlens
from vitlens import explain
from vitlens.checkpoint import CheckpointError
from vitlens.commands.main import main

pytest.importorskip("torchvision")
pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")
from safetensors.torch import load_file, save_file  # noqa: E402


def photo(path: Path, size=(20, 24), seed=0) -> Path:
    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")  # names like "...png" have no suffix PIL sees
    return path


def tiny(**kw) -> vitlens.VisionTransformer:
    return vitlens.create_model("vit_cifar", img_size=16, depth=2, num_classes=3, **kw).eval()


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return vitlens.save_pretrained(tiny(), tmp_path / "model")


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# 1 ------------------------------------------------------------------------------------------------
def test_image_names_never_take_the_output_somewhere_else(tmp_path, model_dir):
    images = tmp_path / "in"
    for name in ("...png", "..png", ".hidden.png", "explain.json.png"):
        photo(images / name)
    out = tmp_path / "work" / "out"
    (tmp_path / "work" / "keep.txt").parent.mkdir(parents=True)
    (tmp_path / "work" / "keep.txt").write_text("mine")
    before = files_under(tmp_path / "work")
    assert (
        main(["explain", "--model", str(model_dir), "--image", str(images), "--out", str(out), "--method", "rollout"])
        == 0
    )
    assert files_under(tmp_path / "work") - before == {"out"} | {f"out/{p}" for p in files_under(out)}
    assert (tmp_path / "work" / "keep.txt").read_text() == "mine"
    summary = json.loads((out / "explain.json").read_text())
    names = [record["name"] for record in summary["images"]]
    assert len(set(names)) == 4 and all(not n.startswith(".") and "/" not in n for n in names)
    for n in names:
        assert (out / n / "rollout.png").resolve().parent.parent == out.resolve()


# 2 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_weights_stored_as_integers_are_refused_by_name(tmp_path, model_dir, dtype):
    state = load_file(str(model_dir / "model.safetensors"))
    if dtype == torch.int32:  # the same bytes, read as I32
        state["blocks.0.attn.qkv.weight"] = state["blocks.0.attn.qkv.weight"].view(torch.int32)
    else:  # values truncated to integers
        state["blocks.0.attn.qkv.weight"] = state["blocks.0.attn.qkv.weight"].to(torch.int64)
    metadata = {"config": (model_dir / "config.json").read_text()}
    save_file(state, str(model_dir / "model.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match=rf"blocks\.0\.attn\.qkv\.weight \(576, 192\) is stored as {dtype}"):
        vitlens.load(model_dir)


# 3 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["config.json", "metadata"])
def test_a_config_that_disagrees_with_the_weights_is_refused_before_building(tmp_path, model_dir, where):
    config = json.loads((model_dir / "config.json").read_text())
    config["depth"] = 100000
    if where == "config.json":
        (model_dir / "config.json").write_text(json.dumps(config))
    else:
        (model_dir / "config.json").unlink()
        state = load_file(str(model_dir / "model.safetensors"))
        save_file(state, str(model_dir / "model.safetensors"), metadata={"config": json.dumps(config)})
    with pytest.raises(
        CheckpointError, match=r"config disagrees with its weights: depth=100000 \(the weights hold 2\)"
    ):
        vitlens.load(model_dir)


# 4 ------------------------------------------------------------------------------------------------
def test_class_names_are_validated_at_the_start(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--set", "labels=5", "--epochs", "1", "--out", str(out)]) == 2
    assert "ViTConfig.labels must be a list of strings or null, got 5" in capsys.readouterr().err
    assert main(["train", "--set", 'labels=["a", "b"]', "--epochs", "1", "--out", str(out)]) == 2
    assert "labels names 2 class(es) but the head has num_classes=10" in capsys.readouterr().err
    assert not out.exists()


# 5 ------------------------------------------------------------------------------------------------
def test_non_finite_numbers_stop_explain_and_report_with_where_they_began(tmp_path, model_dir, capsys):
    state = load_file(str(model_dir / "model.safetensors"))
    state["blocks.1.mlp.fc1.weight"][0, 0] = float("nan")
    save_file(state, str(model_dir / "model.safetensors"), metadata={"config": (model_dir / "config.json").read_text()})
    image = photo(tmp_path / "in" / "cat.png")
    out = tmp_path / "out"
    assert main(["explain", "--model", str(model_dir), "--image", str(image), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{image}: the numbers stopped being finite in block 1" in err
    assert not (out / "explain.json").exists() and not (out / "cat").exists()
    assert main(["report", "--model", str(model_dir), "--image", str(image), "--out", str(tmp_path / "r.html")]) == 2
    assert "cat.png: the numbers stopped being finite in block 1" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
    with pytest.raises(ValueError, match="ViTConfig.norm_eps must be a finite number, got nan"):
        vitlens.ViTConfig(norm_eps=float("nan"))


# 6 ------------------------------------------------------------------------------------------------
def test_sixteen_bit_images_are_refused_by_every_command(tmp_path):
    from vitlens.data.sources import build_dataset

    root = tmp_path / "set"
    for label in ("a", "b"):
        photo(root / label / "ok.png")
        photo(root / label / "ok2.png", seed=1)
    Image.fromarray(np.full((24, 20), 40000, dtype=np.uint16)).save(root / "a" / "deep.png")
    assert Image.open(root / "a" / "deep.png").mode.startswith("I")
    config = vitlens.get_config("vit_cifar", img_size=16, num_classes=2)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable file\(s\).*deep\.png"):
        data = build_dataset(f"imagefolder:{root}", "train", config)
    assert all(p.name != "deep.png" for p, _ in data.base.samples)
    with pytest.raises(ValueError, match="deep.png has image mode 'I;16'.*8-bit"):
        build_dataset(f"imagefolder:{root}", "train", config, strict=True)


# 7 ------------------------------------------------------------------------------------------------
def test_an_edited_config_json_wins_over_the_header_and_says_so(tmp_path, model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    config["labels"] = ["cat", "dog", "bird"]
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match=r"config.json and the config in model.safetensors's header differ in labels"):
        model = vitlens.load(model_dir)
    assert model.config.labels == ["cat", "dog", "bird"]
    alone = tmp_path / "alone"
    alone.mkdir()
    (model_dir / "model.safetensors").rename(alone / "model.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file alone: its header's config, nothing to disagree with
        assert vitlens.load(alone / "model.safetensors").config.labels is None


# 8 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("depth", 4.5, r"ViTConfig.depth must be an integer, got 4.5 \(float\)"),
        ("num_heads", "4", r"ViTConfig.num_heads must be an integer, got '4' \(str\)"),
        ("img_size", None, "ViTConfig.img_size must be an integer or a list of 2 integers, got None"),
        ("img_size", "16", "ViTConfig.img_size must be an integer or a list of 2 integers, got '16'"),
        ("crop_pct", 0, r"ViTConfig.crop_pct \(the part of the resized image kept\) must be > 0, got 0.0"),
    ],
)
def test_config_values_of_the_wrong_kind_are_named(tmp_path, model_dir, field, value, message):
    config = json.loads((model_dir / "config.json").read_text())
    config[field] = value
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="its vitlens config is not valid: " + message):
        vitlens.load(model_dir)


def test_wrong_kinds_on_the_command_line_and_in_files_are_one_line(tmp_path, model_dir, capsys):
    assert main(["train", "--set", "depth=1.5", "--out", str(tmp_path / "run")]) == 2
    assert "ViTConfig.depth must be an integer, got 1.5" in capsys.readouterr().err
    # a header whose config is not JSON
    state = load_file(str(model_dir / "model.safetensors"))
    save_file(state, str(tmp_path / "bad.safetensors"), metadata={"config": "{not json"})
    with pytest.raises(
        CheckpointError, match=r"bad\.safetensors: the config in its safetensors header is not valid JSON"
    ):
        vitlens.load(tmp_path / "bad.safetensors")
    # a decompression bomb
    big = tmp_path / "big.png"
    Image.new("L", (1, 1)).save(big)
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 0.25  # a 1-pixel image is now 4x over the limit, as a 30000x30000 one is by default
    try:
        assert main(["explain", "--model", str(model_dir), "--image", str(big), "--out", str(tmp_path / "o")]) == 2
    finally:
        Image.MAX_IMAGE_PIXELS = old
    assert "big.png is too large to read safely" in capsys.readouterr().err
    # --top-k -1 stops before any picture
    image = photo(tmp_path / "in" / "a.png")
    assert (
        main(
            ["explain", "--model", str(model_dir), "--image", str(image), "--top-k", "-1", "--out", str(tmp_path / "o")]
        )
        == 2
    )
    assert "top-k must be a whole number >= 1" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_a_full_disk_is_a_sentence_and_keeps_what_was_there(tmp_path, model_dir, monkeypatch, capsys):
    from vitlens.training.state import STATE_KEYS, read_state, write_checkpoint

    model = tiny()
    state = {k: {} for k in STATE_KEYS} | {"epoch": 1, "step": 0, "best_top1": 0.0}
    write_checkpoint(tmp_path / "last", model, state)

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"cannot write the training state into .*last: .* \(is the disk full\?\)"):
        write_checkpoint(tmp_path / "last", model, {**state, "epoch": 2})
    monkeypatch.undo()
    assert read_state(tmp_path / "last")["epoch"] == 1
    import safetensors.torch

    monkeypatch.setattr(
        safetensors.torch, "save_file", lambda *a, **k: (_ for _ in ()).throw(Exception("No space left"))
    )
    assert main(["convert", str(model_dir), str(tmp_path / "converted")]) == 2
    assert "cannot write" in capsys.readouterr().err and not (tmp_path / "converted" / "model.safetensors").exists()


def tiny_run(tmp_path: Path, epochs: int):
    """A finished run of a 1-block model on the digits (a second or two)."""
    from vitlens.training import TrainConfig, train

    model = {"img_size": 8, "patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2}
    config = TrainConfig(
        model_overrides=model, out=str(tmp_path / "run"), epochs=epochs, batch_size=64, augment="none", progress=False
    )
    return train(config)


@pytest.mark.parametrize("content", [b"", os.urandom(256), None])
def test_resume_from_a_broken_state_file_is_a_sentence(tmp_path, content):
    from vitlens.training import resume

    result = tiny_run(tmp_path, epochs=1)
    state_file = result.out / "last" / "train_state.pt"
    if content is None:
        torch.save({"epoch": 1}, state_file)
        match = "not a vitlens training state; it lacks model"
    else:
        state_file.write_bytes(content)
        match = "not a vitlens training state that can be read safely"
    with pytest.raises(ValueError, match=match):
        resume(result.out)


def test_a_broken_metrics_line_is_dropped_on_resume_with_a_warning(tmp_path):
    from vitlens.training import resume

    result = tiny_run(tmp_path, epochs=2)
    metrics = result.out / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"kind": "step", "st')  # a line cut short by a kill
    state = result.out / "last" / "train_state.pt"
    saved = torch.load(state, weights_only=True)
    torch.save({**saved, "epoch": 1}, state)  # as if the second epoch had to be redone
    with pytest.warns(UserWarning, match=r"dropped unreadable line\(s\)"):
        resume(result.out)
    assert all(json.loads(line) for line in metrics.read_text().splitlines())


# 9 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw", [{}, dict(class_token=False, global_pool="map"), dict(class_token=False, global_pool="avg")]
)
def test_an_empty_batch_gives_empty_maps(kw):
    model = tiny(**kw)
    x = torch.zeros(0, 3, 16, 16)
    assert model(x).shape == (0, 3)
    for fn in (explain.rollout, explain.gae, explain.grad_rollout, explain.cls_attention):
        assert fn(model, x).shape[0] == 0
    assert explain.rollout(model, x, streaming=True).shape == (0, 4, 4)


def test_targets_and_layer_requests_of_the_wrong_kind_are_refused():
    model = tiny()
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match="target class indices must be ints, got 3.5|got 3.5"):
        explain.gae(model, x, target=3.5)
    with pytest.raises(ValueError, match="not a bool"):
        explain.gae(model, x, target=True)
    with pytest.raises(ValueError, match="return_attention takes True, False, a layer index or a sequence"):
        model(x, return_attention=1.5)
    with pytest.raises(ValueError, match="return_attention takes True, False, a layer index or a sequence"):
        model(x, return_attention={0: 1})
    with pytest.raises(ValueError, match="the maps hold NaN or infinity"):
        explain.cls_attention(model, torch.full((1, 3, 16, 16), float("nan")), threshold=0.6)


# 10 -----------------------------------------------------------------------------------------------
def test_what_interrupted_runs_leave_is_cleaned_or_read(tmp_path, capsys):
    from vitlens.training.state import STATE_KEYS, write_checkpoint

    model = tiny()
    state = {k: {} for k in STATE_KEYS} | {"epoch": 1, "step": 0, "best_top1": 0.0}
    (tmp_path / ".last.abc123.tmp").mkdir()  # what a killed write leaves
    write_checkpoint(tmp_path / "last", model, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    (tmp_path / "last").rename(tmp_path / ".last.old")  # caught between the two renames of a swap
    with pytest.warns(UserWarning, match="is being replaced; reading the previous checkpoint"):
        back = vitlens.load(tmp_path / "last")
    assert torch.equal(back.head.weight, model.head.weight)
    # a run killed before its first checkpoint: both commands give the way out
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text("{}")
    (run / "metrics.jsonl").write_text("")
    assert main(["train", "--resume", str(run)]) == 2
    assert "stopped before its first checkpoint" in (err := capsys.readouterr().err) and "--overwrite" in err
    assert main(["train", "--out", str(run), "--epochs", "1"]) == 2
    assert "stopped before its first checkpoint" in (err := capsys.readouterr().err) and "--overwrite" in err
