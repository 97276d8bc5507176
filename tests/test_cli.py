import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_trains_evaluates_and_draws(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "vitlens", "demo", "--out", str(out), "--epochs", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(2):  # a second run replaces the demo's own folder instead of refusing
        proc = subprocess.run(command, capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout
    for png in ("curves.png", "confusion.png", "attention/heads_digit0.png", "attention/heads_digit5.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "last" / "model.safetensors").exists() and (out / "metrics.jsonl").exists()


def test_a_missing_optional_package_names_the_extra(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from vitlens.commands.main import main

    image = tmp_path / "a.png"
    Image.new("RGB", (16, 16)).save(image)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails as if absent
    code = main(["explain", "--model", "vit_digits", "--image", str(image), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("vitlens explain: error:") and "pip install 'vitlens[viz]'" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_errors_of_every_kind_end_in_one_line_and_exit_2(tmp_path, capsys):
    from vitlens.commands.main import main

    cases = [
        (["convert", str(tmp_path / "absent"), str(tmp_path / "out")], "vitlens convert: error: no such checkpoint"),
        (["eval", "--model", str(tmp_path / "absent"), "--data", "digits"], "vitlens eval: error: no such checkpoint"),
        (["train", "--data", "nope", "--out", str(tmp_path / "run")], "vitlens train: error: unknown data source"),
        (["train", "--set", "depth=0", "--out", str(tmp_path / "run")], "ViTConfig.depth must be >= 1"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


def test_train_flags_are_the_config_fields():
    import dataclasses

    from vitlens.commands.main import build_parser
    from vitlens.training import TrainConfig

    parser = build_parser()
    args = parser.parse_args(["train", "--batch-size", "8", "--no-strict", "--compile", "--set", "depth=3"])
    for f in dataclasses.fields(TrainConfig):
        assert hasattr(args, f.name), f.name
    defaults = TrainConfig()
    assert args.batch_size == 8 and args.compile is True and args.model_overrides == [("depth", 3)]
    assert args.lr == defaults.lr and args.augment == defaults.augment and args.progress is None
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--augment", "mixup"])  # choices come from the config too
