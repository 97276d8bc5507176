"""Cluttered digits: shapes, boxes that hold the digit, disjoint splits, determinism."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sklearn")

from vitlens.data.cluttered import ClutteredDigits, make_cluttered_digits, source_digits  # noqa: E402


def test_batch_shapes_ranges_and_boxes():
    b = make_cluttered_digits(64, canvas_size=32, seed=3)
    assert b.images.shape == (64, 1, 32, 32) and b.images.dtype == torch.float32
    assert float(b.images.min()) >= 0.0 and float(b.images.max()) <= 1.0
    assert b.labels.shape == (64,) and set(b.labels.tolist()) <= set(range(10))
    x0, y0, x1, y1 = b.boxes.unbind(1)
    assert ((x0 >= 0) & (x0 < x1) & (x1 <= 32) & (y0 >= 0) & (y0 < y1) & (y1 <= 32)).all()
    for i in range(64):  # the digit (bright ink) lies inside its box
        img, (a, b_, c, d) = b.images[i, 0], b.boxes[i].tolist()
        assert img[b_:d, a:c].max() > 0.5


def test_without_clutter_the_canvas_holds_exactly_one_source_digit_of_the_label():
    digits, labels = source_digits("train", 16)
    b = make_cluttered_digits(6, canvas_size=32, seed=0, num_fragments=0)
    for image, label in zip(b.images[:, 0], b.labels):
        ink = digits[labels == label].sum(dim=(1, 2))
        assert torch.isclose(ink, image.sum(), rtol=1e-5).any()


def test_fragments_never_touch_the_box():
    clean = make_cluttered_digits(32, seed=5, num_fragments=0)
    busy = make_cluttered_digits(32, seed=5, num_fragments=6)
    assert torch.equal(clean.boxes, busy.boxes) and torch.equal(clean.labels, busy.labels)
    for i in range(32):
        x0, y0, x1, y1 = busy.boxes[i].tolist()
        assert torch.equal(busy.images[i, 0, y0:y1, x0:x1], clean.images[i, 0, y0:y1, x0:x1])
    assert busy.images.sum() > clean.images.sum()


def test_splits_use_disjoint_source_digits_and_seeds_repeat():
    train, _ = source_digits("train")
    test, _ = source_digits("test")
    assert len(train) + len(test) == 1797
    same = (train.flatten(1)[:, None] == test.flatten(1)[None]).all(-1)
    # sklearn's digits hold a few exact duplicates; nearly every test digit must be new
    assert same.any(0).float().mean() < 0.01
    a, b = make_cluttered_digits(8, seed=1, split="test"), make_cluttered_digits(8, seed=1, split="test")
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, make_cluttered_digits(8, seed=2).images)


def test_dataset_and_errors():
    ds = ClutteredDigits("test", n=10, canvas_size=40, seed=0, transform=lambda x: x * 2)
    image, label = ds[3]
    assert len(ds) == 10 and image.shape == (1, 40, 40) and isinstance(label, int)
    assert ds.boxes.shape == (10, 4) and float(image.max()) > 1.0
    with pytest.raises(ValueError, match="split must be one of"):
        ClutteredDigits("val", n=2)
    with pytest.raises(ValueError, match="canvas_size"):
        make_cluttered_digits(2, canvas_size=16, digit_size=16)
