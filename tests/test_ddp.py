"""Two CPU processes under torchrun (gloo, DDP) end where one process with the same global batch ends."""

import json
import os
import subprocess
import sys

import pytest

import vitlens

pytest.importorskip("torchvision")
pytest.importorskip("sklearn")

TINY = ["--set=img_size=8", "--set=patch_size=2", "--set=embed_dim=32", "--set=depth=1", "--set=num_heads=2"]
# float sums are reordered (two half-batch means averaged vs one full-batch mean), nothing more
TOLERANCE = 1e-4


def run(args, out, env):
    command = [
        *args,
        "-m",
        "vitlens",
        "train",
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--warmup-epochs",
        "0",
        "--lr",
        "3e-3",
        "--device",
        "cpu",
        "--ema",
        "0.9",
        *TINY,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run([sys.executable], tmp_path / "one", env)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    double = run(torchrun, tmp_path / "two", env)
    assert double.stdout.count("epoch 2/2") == 1  # only rank 0 prints
    assert not any((tmp_path / "two" / "last").glob("*rank*"))
    one = vitlens.load(tmp_path / "one" / "last").state_dict()
    two = vitlens.load(tmp_path / "two" / "last").state_dict()
    worst = max((one[k] - two[k]).abs().max().item() for k in one)
    assert worst < TOLERANCE, f"weights differ by up to {worst}"
    untrained = vitlens.create_model("vit_digits", img_size=8, embed_dim=32, depth=1, num_heads=2).state_dict()
    assert max((one[k] - untrained[k]).abs().max().item() for k in one) > 100 * TOLERANCE  # it did train
    top1 = [json.loads((tmp_path / run / "eval.json").read_text())["top1"] for run in ("one", "two")]
    assert abs(top1[0] - top1[1]) <= 1 / 360  # at most one test digit flips
