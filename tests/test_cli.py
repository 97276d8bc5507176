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
