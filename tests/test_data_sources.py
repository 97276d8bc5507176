"""Data sources: the digits split, checked image folders, torchvision sets, seeded augmentation."""

import pytest
import torch

import vitlens
from vitlens.data.augment import BatchAffine, train_transform
from vitlens.data.sources import build_dataset, open_source
from vitlens.data.transforms import MatchChannels

pytest.importorskip("torchvision")
pytest.importorskip("sklearn")
PIL = pytest.importorskip("PIL.Image")


def write_image(path, mode="RGB", size=(12, 10), value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.new(mode, size, value if mode in ("L", "P") else (value,) * len(mode)).save(path)
    return path


def make_folder(root, classes=("cat", "dog"), per_class=10, mode="RGB"):
    for name in classes:
        for i in range(per_class):
            write_image(root / name / f"{i:02d}.png", mode=mode, value=20 * i)
    return root


def test_digits_split_is_fixed_stratified_and_disjoint():
    train, test = open_source("digits", "train"), open_source("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train[0][0].shape == (1, 8, 8) and float(train[0][0].min()) >= 0.0 and float(train[0][0].max()) <= 1.0
    counts = torch.bincount(torch.tensor(test.targets), minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: 10% +- 1 image of each class
    again = open_source("digits", "test")
    assert torch.equal(again.images, test.images)
    train_rows = {tuple(x.flatten().tolist()) for x in train.images}
    shared = sum(tuple(x.flatten().tolist()) in train_rows for x in test.images)
    assert shared < 10  # only sklearn's few exact duplicate digits can appear on both sides


def test_digits_dataset_is_model_ready():
    cfg = vitlens.get_config("vit_digits")
    data = build_dataset("digits", "train", cfg, augment="affine")
    image, label = data[3]
    assert image.shape == (cfg.in_chans, *cfg.img_hw)
    assert float(image.min()) == pytest.approx(-1.0)  # black background, normalized with mean = std = 0.5
    assert data.classes == [str(i) for i in range(10)] and 0 <= label < 10


def test_image_folder_with_val_folder_and_held_out_split(tmp_path):
    root = make_folder(tmp_path / "a")
    make_folder(root / "val", per_class=3)
    train, val = open_source(f"imagefolder:{root}", "train"), open_source(f"imagefolder:{root}", "val")
    assert train.classes == ["cat", "dog"]  # 'val' is not a class
    assert (len(train), len(val)) == (20, 6)
    plain = make_folder(tmp_path / "b")
    train, val = open_source(f"imagefolder:{plain}", "train"), open_source(f"imagefolder:{plain}", "val")
    assert (len(train), len(val)) == (18, 2)  # every 10th file of each class is held out
    assert not {p for p, _ in train.samples} & {p for p, _ in val.samples}


def test_image_folder_skips_unreadable_files_and_names_them(tmp_path):
    root = make_folder(tmp_path / "f", per_class=4)
    good = write_image(tmp_path / "big.png", size=(64, 64))
    (root / "cat" / "truncated.png").write_bytes(good.read_bytes()[:60])
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.warns(UserWarning, match=r"skipped 3 unreadable file\(s\).*truncated\.png"):
        data = open_source(f"imagefolder:{root}", "train")
    assert len(data.skipped) == 3
    assert all(path.suffix == ".png" and "truncated" not in path.name for path, _ in data.samples)
    with pytest.raises(ValueError, match=r"3 unreadable file\(s\).*strict"):
        open_source(f"imagefolder:{root}", "train", strict=True)


def test_image_folder_empty_class_and_missing_folder_are_errors(tmp_path):
    root = make_folder(tmp_path / "e")
    (root / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable image.*empty"):
        open_source(f"imagefolder:{root}", "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_source(f"imagefolder:{tmp_path / 'nope'}", "train")
    with pytest.raises(ValueError, match="no class sub-folders"):
        open_source(f"imagefolder:{tmp_path / 'e' / 'empty'}", "train")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "RGB"])
def test_grey_palette_and_rgba_images_are_converted(tmp_path, mode):
    root = make_folder(tmp_path / mode, mode=mode, per_class=2)
    rgb = vitlens.get_config("vit_cifar", img_size=16)
    grey = vitlens.get_config("vit_digits")
    for cfg in (rgb, grey):
        image, _ = build_dataset(f"imagefolder:{root}", "train", cfg, augment="crop-flip")[0]
        assert image.shape == (cfg.in_chans, 16, 16) and image.dtype == torch.float32


def test_match_channels_on_tensors():
    assert MatchChannels(3)(torch.rand(1, 4, 4)).shape == (3, 4, 4)
    assert MatchChannels(1)(torch.rand(4, 4, 4)).shape == (1, 4, 4)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        MatchChannels(2)


@pytest.mark.parametrize("augment", ["none", "crop-flip", "randaugment", "trivialaugment"])
def test_fake_data_with_each_augmentation_is_seeded_by_epoch_and_index(augment):
    cfg = vitlens.get_config("vit_cifar")
    data = build_dataset("fake", "train", cfg, augment=augment, seed=3)
    first = data[5][0]
    assert first.shape == (3, 32, 32)
    assert torch.equal(first, data[5][0])  # a pure function of (seed, epoch, index) ...
    state = torch.get_rng_state()
    data.set_epoch(1)
    data[5]
    assert torch.equal(state, torch.get_rng_state())  # ... that leaves the global generator alone
    if augment != "none":
        assert not torch.equal(first, data[5][0])


def test_unknown_source_and_bad_augmentation_are_explained():
    cfg = vitlens.get_config("vit_digits")
    with pytest.raises(ValueError, match="unknown data source 'digit'.*digits"):
        open_source("digit", "train")
    with pytest.raises(ValueError, match="unknown augmentation"):
        train_transform(cfg, augment="mixup")
    with pytest.raises(ValueError, match="split must be"):
        open_source("digits", "validation")


def test_torchvision_set_offline_says_where_to_put_the_files(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    class Offline:
        def __init__(self, root, train=True, download=False):
            if download:
                raise OSError("network is unreachable")
            raise RuntimeError("Dataset not found")

    monkeypatch.setattr(tvd, "CIFAR10", Offline)
    with pytest.raises(RuntimeError, match=r"cifar10 is not in .*cifar-10-batches-py.*network is unreachable"):
        open_source("cifar10", "train", root=tmp_path)


def test_batch_affine_draws_per_index_not_per_batch():
    images = torch.rand(6, 1, 16, 16)
    affine = BatchAffine(6, fill=(-1.0,), seed=0)
    index = torch.arange(6)
    whole = affine(images, index, epoch=2)
    reordered = affine(images[[5, 4, 3, 2, 1, 0]], index.flip(0), epoch=2)
    assert torch.equal(whole, reordered.flip(0))
    assert not torch.equal(whole, affine(images, index, epoch=3))
    still = BatchAffine(6, degrees=0.0, translate=0.0, scale=(1.0, 1.0), fill=(-1.0,))
    torch.testing.assert_close(still(images, index, 0), images, atol=1e-5, rtol=0)


def test_cluttered_digits_source_is_model_ready():
    pytest.importorskip("vitlens.data.cluttered")
    cfg = vitlens.get_config("vit_digits", img_size=32, patch_size=4)
    data = build_dataset("cluttered-digits", "test", cfg)
    image, label = data[0]
    assert len(data) == 2000 and image.shape == (1, 32, 32) and data.classes == [str(i) for i in range(10)]
    assert float(image.min()) == pytest.approx(-1.0) and 0 <= label < 10


def test_whole_set_transform_equals_per_image_transform():
    cfg = vitlens.get_config("vit_cifar", img_size=16)  # grey 8x8 digits -> RGB 16x16
    cached = build_dataset("digits", "test", cfg)
    base, transform = open_source("digits", "test"), vitlens.transforms_for(cfg)
    assert torch.equal(cached.images[:20], torch.stack([transform(base[i][0]) for i in range(20)]))
