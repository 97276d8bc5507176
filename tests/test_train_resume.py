"""A run killed with SIGKILL mid-epoch and resumed ends bit-identical to a run never stopped (CPU)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import vitlens

pytest.importorskip("torchvision")
pytest.importorskip("sklearn")

TINY = ["--set=img_size=8", "--set=patch_size=2", "--set=embed_dim=32", "--set=depth=1", "--set=num_heads=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def command(out, *extra):
    return [
        sys.executable,
        "-m",
        "vitlens",
        "train",
        "--out",
        str(out),
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--log-every",
        "2",
        "--device",
        "cpu",
        "--seed",
        "7",
        *TINY,
        *extra,
    ]


def records(out):
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    straight = subprocess.Popen(
        command(tmp_path / "straight"), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    killed = subprocess.Popen(
        command(tmp_path / "killed"), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait for epoch 2 to be under way, then kill without warning
        seen = records(tmp_path / "killed")
        if any(r["kind"] == "step" and r["epoch"] == 2 for r in seen):
            break
        assert killed.poll() is None, killed.stderr.read()
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    seen = records(tmp_path / "killed")
    finished = max((r["epoch"] for r in seen if r["kind"] == "epoch"), default=0)
    assert finished == 1 and any(r["kind"] == "step" and r["epoch"] == 2 for r in seen), "not killed mid-epoch 2"

    resumed = subprocess.run(
        [sys.executable, "-m", "vitlens", "train", "--resume", str(tmp_path / "killed"), "--device", "cpu"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "epoch 2/3" in resumed.stdout and "epoch 1/3" not in resumed.stdout
    assert straight.wait(timeout=300) == 0, straight.stderr.read()

    a = vitlens.load(tmp_path / "straight" / "last").state_dict()
    b = vitlens.load(tmp_path / "killed" / "last").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    state_a = torch.load(tmp_path / "straight" / "last" / "train_state.pt", weights_only=False)
    state_b = torch.load(tmp_path / "killed" / "last" / "train_state.pt", weights_only=False)
    assert all(torch.equal(state_a["model"][k], state_b["model"][k]) for k in state_a["model"])
    # the metrics file holds each step once: the killed epoch's lines were replaced, not duplicated
    steps = [r["step"] for r in records(tmp_path / "killed") if r["kind"] == "step"]
    assert steps == sorted(set(steps)) and steps == [
        r["step"] for r in records(tmp_path / "straight") if r["kind"] == "step"
    ]
