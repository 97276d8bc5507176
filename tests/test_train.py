"""Training: short runs per data source, checkpoints, refusal to clobber, NaN stop, eval."""

import json
import os
import subprocess
import sys

import pytest
import torch

import vitlens
from vitlens.commands.main import main
from vitlens.training import NonFiniteLossError, TrainConfig, resume, train
from vitlens.training import loop as train_module
from vitlens.training.loop import prepare_output
from vitlens.training.state import STATE_KEYS, read_state, resolve_checkpoint, write_checkpoint

from .payload import Payload

pytest.importorskip("torchvision")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# a model small enough that an epoch of digits takes a fraction of a second here
TINY = {"img_size": 8, "patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2}


def tiny_config(tmp_path, **kw):
    base = dict(
        model_overrides=TINY,
        out=str(tmp_path / "run"),
        epochs=2,
        batch_size=16,
        lr=3e-3,
        warmup_epochs=0,
        augment="none",
        ema=0.0,
        progress=False,
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and a shared machine stays usable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_digits_run_learns_and_writes_every_artifact(tmp_path):
    result = train(tiny_config(tmp_path, epochs=3, ema=0.9, augment="affine"))
    out = result.out
    assert result.last.top1 > 0.5 and result.epochs == 3  # chance is 0.1
    for name in ("curves.png", "confusion.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3] and all(r["images_per_s"] > 0 for r in epochs)
    assert any(r["kind"] == "step" for r in records)
    model = vitlens.load(out / "last")  # the exported weights are the EMA, readable by vitlens.load
    assert model.config.labels == [str(i) for i in range(10)]
    state = read_state(out / "last")
    assert set(state) >= {"model", "optimizer", "scheduler", "ema", "rng", "epoch", "step"} and state["epoch"] == 3
    ema_weights = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, ema_weights[name])
    saved = json.loads((out / "eval.json").read_text())
    assert saved["top1"] == pytest.approx(result.last.top1) and len(saved["per_class"]) == 10


def test_fake_data_and_image_folder_runs(tmp_path):
    result = train(
        tiny_config(
            tmp_path / "fake",
            data="fake",
            epochs=1,
            batch_size=32,
            augment="randaugment",
            mixup=0.2,
            cutmix=1.0,
            model_overrides={**TINY, "in_chans": 3},
        )
    )
    assert result.last.count == 64 and (result.out / "last" / "model.safetensors").exists()

    from PIL import Image

    root = tmp_path / "folder"
    for label, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (root / label).mkdir(parents=True)
        for i in range(20):
            Image.new("RGB", (10 + i % 3, 12), tuple(max(0, c - 3 * i) for c in colour)).save(root / label / f"{i}.png")
    Image.new("L", (9, 9), 100).save(root / "red" / "grey.png")  # grey: converted
    result = train(
        tiny_config(
            tmp_path / "f",
            data=f"imagefolder:{root}",
            epochs=4,
            batch_size=8,
            lr=5e-3,
            augment="crop-flip",
            model_overrides={**TINY, "in_chans": 3},
        )
    )
    assert result.last.classes == ["blue", "red"] and result.last.count == 4
    assert result.last.top1 == 1.0  # two flat colours are easy


def test_output_folder_holding_a_run_is_refused_unless_asked(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.md").write_text("mine")
    prepare_output(out, overwrite=False)  # a folder without a run is fine
    (out / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(FileExistsError, match="stopped before its first checkpoint.*--overwrite"):
        prepare_output(out, overwrite=False)
    (out / "last").mkdir()
    (out / "last" / "train_state.pt").write_bytes(b"")
    with pytest.raises(FileExistsError, match="already holds a training run.*--resume.*--overwrite"):
        prepare_output(out, overwrite=False)
    prepare_output(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.md"]  # only the run's own files go
    with pytest.raises(ValueError, match="unknown data source"):
        train(tiny_config(tmp_path / "bad", data="nope"))
    assert not (tmp_path / "bad").exists()  # a run that cannot start leaves nothing behind


def full_state(epoch: int) -> dict:
    """A training state with every key a checkpoint holds (the values do not matter here)."""
    return {k: {} for k in STATE_KEYS} | {"epoch": epoch, "step": 0, "best_top1": 0.0}


def test_interrupted_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    model = vitlens.create_model("vit_digits", **TINY)
    path = write_checkpoint(tmp_path / "last", model, full_state(epoch=1))
    before = {k: v.clone() for k, v in vitlens.load(path).state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    def broken_save(obj, f, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(tmp_path / "last", model, full_state(epoch=2))
    monkeypatch.undo()
    assert read_state(path)["epoch"] == 1
    for k, v in vitlens.load(path).state_dict().items():
        assert torch.equal(v, before[k])
    assert [p.name for p in tmp_path.iterdir()] == ["last"]  # no temporary folder left behind


def test_a_swap_cut_between_its_two_renames_falls_back_to_the_old_folder(tmp_path):
    model = vitlens.create_model("vit_digits", **TINY)
    path = write_checkpoint(tmp_path / "last", model, full_state(epoch=1))
    path.rename(tmp_path / ".last.old")  # the state right after the first rename of a swap
    assert resolve_checkpoint(path) == tmp_path / ".last.old" and read_state(path)["epoch"] == 1


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = train_module.loss_fn

    def poisoned(logits, targets, smoothing):
        calls["n"] += 1
        loss = real(logits, targets, smoothing)
        return loss * float("nan") if calls["n"] == 100 else loss  # in epoch 2 (89 steps per epoch)

    monkeypatch.setattr(train_module, "loss_fn", poisoned)
    config = tiny_config(tmp_path, epochs=3)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan .*epoch 2, step 100.*last good checkpoint"):
        train(config)
    state = read_state(tmp_path / "run" / "last")
    assert state["epoch"] == 1 and state["step"] == 89
    assert all(torch.isfinite(v).all() for v in vitlens.load(tmp_path / "run" / "last").state_dict().values())


@pytest.mark.slow
def test_cli_train_then_eval(tmp_path):
    out = tmp_path / "cli"
    base = [sys.executable, "-m", "vitlens"]
    sets = [f"--set={k}={v}" for k, v in TINY.items()]
    proc = subprocess.run(
        [*base, "train", "--out", str(out), "--epochs", "1", "--batch-size", "16", *sets],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1/1" in proc.stdout and "best top-1" in proc.stdout
    again = subprocess.run(
        [*base, "train", "--out", str(out), "--epochs", "1", *sets], capture_output=True, text=True, env=ENV
    )
    assert again.returncode == 2 and "already holds a training run" in again.stderr
    proc = subprocess.run(
        [*base, "eval", "--model", str(out / "last"), "--data", "digits", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["count"] == 360 and 0.0 <= report["top1"] <= report["top5"] <= 1.0
    assert sum(map(sum, report["confusion"])) == 360
    assert (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert f"top-1 {report['top1']:.2%}" in proc.stdout
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "two" / name).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / "two" / name / "x.png")
    bad = subprocess.run(
        [*base, "eval", "--model", str(out / "last"), "--data", f"imagefolder:{tmp_path / 'two'}"],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert bad.returncode == 2 and "the model has 10 output classes but" in bad.stderr


def test_eval_reads_other_layouts_and_agrees(tmp_path):
    from vitlens.checkpoint import convert
    from vitlens.training.evaluate import evaluate_checkpoint

    run = train(tiny_config(tmp_path, epochs=1))
    hf_dir = convert(run.out / "last", tmp_path / "hf", "hf")  # Hugging Face layout, read back by vitlens.load
    ours = evaluate_checkpoint(run.out / "last", "digits", out=tmp_path / "a")
    theirs = evaluate_checkpoint(hf_dir, "digits", out=tmp_path / "b")
    assert theirs.top1 == ours.top1 == run.last.top1
    assert torch.equal(theirs.confusion, ours.confusion)
    assert json.loads((tmp_path / "b" / "eval.json").read_text())["count"] == 360


def test_bf16_autocast_on_cpu_trains_with_other_numbers(tmp_path):
    fp32 = train(tiny_config(tmp_path / "fp32", epochs=1))
    bf16 = train(tiny_config(tmp_path / "bf16", epochs=1, amp="bf16"))
    assert bf16.last.top1 > 0.5 and fp32.last.top1 > 0.5
    a = vitlens.load(fp32.out / "last").state_dict()
    b = vitlens.load(bf16.out / "last").state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # autocast really ran in bf16
    assert all(v.dtype == torch.float32 for v in b.values())  # the weights stay fp32


def test_compiled_training_runs_the_compiled_forward_and_matches_eager(tmp_path, monkeypatch):
    compiled = []
    real_compile = torch.compile

    def spy(model, *args, **kwargs):
        compiled.append(model)
        return real_compile(model, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    eager = train(tiny_config(tmp_path / "eager", epochs=1))
    assert compiled == []
    fast = train(tiny_config(tmp_path / "compiled", epochs=1, compile=True))
    assert len(compiled) == 1 and isinstance(compiled[0], vitlens.VisionTransformer)
    a = vitlens.load(eager.out / "last").state_dict()
    b = vitlens.load(fast.out / "last").state_dict()  # plain key names, no compile wrapper prefix
    assert a.keys() == b.keys()
    for k in a:  # same run up to the compiled kernels' rounding
        torch.testing.assert_close(b[k], a[k], atol=2e-3, rtol=1e-3)
    assert read_state(fast.out / "last")["train_config"]["compile"] is True


def test_resume_never_runs_code_stored_in_the_run_folder(tmp_path, capsys):
    result = train(tiny_config(tmp_path, epochs=1))
    state_file = result.out / "last" / "train_state.pt"
    state = torch.load(state_file, weights_only=True)  # what vitlens writes reads back weights-only
    assert state["rng"]["numpy"]["keys"].dtype == torch.int64 and state["epoch"] == 1
    marker = tmp_path / "payload-ran"
    torch.save({**state, "train_config": Payload(marker)}, state_file)
    with pytest.raises(ValueError, match=r"train_state\.pt: not a vitlens training state that can be read safely"):
        resume(result.out)
    assert main(["train", "--resume", str(result.out)]) == 2
    err = capsys.readouterr().err
    assert "vitlens train: error:" in err and "never executes" in err and str(state_file) in err
    assert not marker.exists()


def test_a_state_file_without_its_keys_is_refused_by_name(tmp_path):
    result = train(tiny_config(tmp_path, epochs=1))
    state_file = result.out / "last" / "train_state.pt"
    torch.save({"epoch": 1}, state_file)
    with pytest.raises(ValueError, match=r"train_state\.pt: not a vitlens training state; it lacks model, optimizer"):
        resume(result.out)
