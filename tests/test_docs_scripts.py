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


def test_the_attention_guides_figures_draw_on_an_untrained_model(tmp_path):
    """docs/make_figures.py trains the benchmark's model; its figure functions are checked here on random weights."""
    pytest.importorskip("sklearn")
    pytest.importorskip("captum")
    import torch

    spec = importlib.util.spec_from_file_location("make_figures", DOCS / "make_figures.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # puts benchmarks/ on the path, for the benchmark's model
    import localization

    torch.manual_seed(0)
    model = localization.vitlens.VisionTransformer(localization.benchmark_config()).eval()
    data = script.make_cluttered_digits(2, 32, seed=7, split="test")
    with torch.no_grad():
        out = model(script.normalize(data.images), return_attention=True)
    layout = model.token_layout(data.images)
    script.methods_figure(model, data.images, data.boxes, tmp_path / "methods.png")
    script.attention_matrix_figure(out.attentions[0][0, 0], layout, data.images[0], tmp_path / "matrix.png")
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["matrix.png", "methods.png"]
