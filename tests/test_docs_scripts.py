"""The scripts that draw the documentation's pictures still run (on random weights, offline)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_target_pictures_draws_every_picture_the_page_names(tmp_path):
    pytest.importorskip("open_clip")
    pytest.importorskip("skimage")
    spec = importlib.util.spec_from_file_location("target_pictures", DOCS / "target_pictures.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--out", str(tmp_path), "--offline"])
    stems = ["clip_prompts"] + [
        f"dino_{m}_{k}" for m in ("no_registers", "4_registers") for k in ("heads", "artifacts", "similarity")
    ]
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == sorted(stems)
