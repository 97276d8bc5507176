"""Pictures: overlays, per-head and per-layer grids, the attention-distance plot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")
pytest.importorskip("PIL")

from vitlens.viz import plot  # noqa: E402


def test_overlay_puts_the_hot_colour_where_the_map_is_high():
    image = torch.zeros(1, 32, 32)
    heat = torch.zeros(4, 4)
    heat[0, 3] = 1.0  # top-right patch
    pic = plot.overlay(image, heat, cmap="gray", alpha=1.0)
    arr = np.asarray(pic)
    assert pic.size == (32, 32) and arr.shape == (32, 32, 3)
    assert arr[2, 29].mean() > 200 and arr[29, 2].mean() < 10
    assert plot.overlay(image, heat[None], size=128).size == (128, 128)
    with pytest.raises(ValueError, match="one map"):
        plot.overlay(image, torch.rand(2, 4, 4))


def test_a_signed_overlay_keeps_zero_in_the_middle_red_for_and_blue_against():
    heat = torch.zeros(4, 4)
    heat[0, 0], heat[3, 3] = 2.0, -1.0  # for, against; everything else 0
    arr = np.asarray(plot.overlay(torch.zeros(1, 32, 32), heat, alpha=1.0, signed=True)).astype(int)
    red, blue, middle = arr[1, 1], arr[30, 30], arr[16, 16]
    assert red[0] > 200 and red[2] < 60  # the largest magnitude is the full colour
    assert blue[2] > 200 and blue[0] > 60  # half the magnitude: a paler blue
    assert abs(middle - 255).max() < 40  # 0: bwr's white, however the map's minimum lies


def test_grids_and_distance_plot_write_files(tmp_path):
    image = torch.rand(3, 16, 16)
    fig = plot.head_grid(torch.rand(3, 4, 4), image, path=tmp_path / "heads.png", title="heads")
    assert (tmp_path / "heads.png").stat().st_size > 0
    assert [ax.get_title() for ax in fig.axes if ax.get_title()][:4] == ["input", "head 0", "head 1", "head 2"]
    fig = plot.layer_grid(torch.rand(5, 4, 4), path=tmp_path / "layers.png")
    assert [ax.get_title() for ax in fig.axes][:5] == [f"layer {i}" for i in range(5)]
    d = torch.rand(4, 3) * 10
    d[1] = float("nan")
    fig = plot.distance_plot(d, path=tmp_path / "dist.png", image_size=32)
    offsets = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    assert offsets.shape == (12, 2) and np.isnan(offsets[:, 1]).sum() == 3
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left behind
    with pytest.raises(ValueError, match="layers, heads"):
        plot.distance_plot(torch.rand(3))
    with pytest.raises(ValueError, match="heads, rows, cols"):
        plot.head_grid(torch.rand(4, 4))


def test_overlay_outlines_marked_patches_in_cyan():

    marks = torch.zeros(4, 4, dtype=torch.bool)
    marks[1, 2] = True
    picture = np.asarray(plot.overlay(torch.zeros(3, 64, 64), torch.zeros(4, 4), marks=marks))
    cyan = (picture == (0, 255, 255)).all(-1)
    rows, cols = cyan.nonzero()
    assert rows.min() == 16 and rows.max() == 31 and cols.min() == 32 and cols.max() == 47
    assert not cyan[:16].any() and not cyan[32:].any()
