import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_writes_the_head_grid(tmp_path):
    pytest.importorskip("skimage")
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "vitlens", "demo", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    png = out / "heads_last_layer.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
