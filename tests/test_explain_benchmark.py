"""The localization benchmark's scores, on maps whose answers are known."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import localization as bench  # noqa: E402


def test_pointing_and_energy():
    boxes = torch.tensor([[0, 0, 8, 8], [16, 16, 32, 32]])
    heat = torch.zeros(2, 8, 8)
    heat[0, 0, 0] = 1.0  # inside the first box (top-left patch)
    heat[1, 0, 0] = 1.0  # outside the second box
    assert bench.pointing_game(heat, boxes).tolist() == [1.0, 0.0]
    inside = torch.zeros(2, 8, 8)
    inside[:, 4:, 4:] = 1.0  # the bottom-right quarter: exactly the second box
    energy = bench.energy_in_box(inside, boxes)
    assert energy[1] > 0.9 and energy[0] == 0.0


class Constant(torch.nn.Module):
    """A 'model' whose class-0 probability is the fraction of ink left: deletion order decides the AUC."""

    def token_layout(self, images):
        import vitlens

        return vitlens.create_model("vit_digits", img_size=32, patch_size=4).token_layout(images)

    def forward(self, x):
        ink = (x > -1).float().mean(dim=(1, 2, 3))  # normalize() maps blank pixels to -1
        return torch.stack([torch.log(ink + 1e-9), torch.log(1 - ink + 1e-9)], dim=1)


def test_deletion_auc_rewards_removing_the_ink_first():
    images = torch.zeros(1, 1, 32, 32)
    images[..., :8, :8] = 1.0  # ink in the 2x2 top-left patches
    good = torch.zeros(1, 8, 8)
    good[0, :2, :2] = 1.0
    bad = 1.0 - good
    cls = torch.tensor([0])
    model = Constant()
    assert bench.deletion_auc(model, images, good, cls) < bench.deletion_auc(model, images, bad, cls)


def test_insertion_auc_rewards_showing_the_ink_first():
    images = torch.zeros(1, 1, 32, 32)
    images[..., :8, :8] = 1.0
    good = torch.zeros(1, 8, 8)
    good[0, :2, :2] = 1.0
    cls = torch.tensor([0])
    model = Constant()
    assert bench.insertion_auc(model, images, good, cls) > bench.insertion_auc(model, images, 1.0 - good, cls)
    curve = bench.perturbation_curve(model, images, good, cls, insertion=True)
    assert curve.shape == (1, 17) and curve[0, 0] < 1e-6  # a blank canvas: no ink
    torch.testing.assert_close(curve[0, 1:], torch.full((16,), 64 / 1024))  # all the ink from the first step
