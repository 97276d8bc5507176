"""One pre-processing rule: every load path gives the tensor the source library's own transform gives.

A timm ViT (crop 0.9) and a DeiT (crop 0.875, ImageNet mean/std), and a Hugging Face ViT with its
ViTImageProcessor (squash) or a BiT-style processor (short side + centre crop), are loaded by every
path vitlens has; on non-square photos the tensor from ``vitlens.transforms_for`` equals timm's
``create_transform(**resolve_data_config(...))`` or the processor's PIL backend, and stays so
through ``save_pretrained`` -> ``load`` and ``convert`` to each layout.
"""

from __future__ import annotations

import json

import pytest
import torch

import vitlens
from vitlens.checkpoint import convert, export, preprocessing
from vitlens.data.sources import build_dataset

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
pytest.importorskip("torchvision")
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from skimage import data  # noqa: E402
from timm.data import create_transform, resolve_data_config  # noqa: E402


@pytest.fixture(scope="module")
def photos():
    """Non-square photos: chelsea (451 x 300), a tall crop of it, and one whose centre-crop margin is odd."""
    chelsea = Image.fromarray(data.chelsea())
    return {
        "chelsea": chelsea,
        "tall": chelsea.crop((40, 0, 290, 300)),  # 250 x 300
        "odd": Image.fromarray(data.astronaut()).crop((0, 0, 270, 250)),  # 270 x 250
    }


def assert_same(ours, theirs, photo):
    assert ours.shape == theirs.shape, photo
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0, msg=lambda m: f"{photo}: {m}")


def pil_processor(folder):
    """The PIL backend of the image processor a Hugging Face folder names."""
    kind = json.loads((folder / "preprocessor_config.json").read_text())["image_processor_type"]
    return getattr(transformers, f"{kind}Pil").from_pretrained(folder)


def timm_reference(model):
    return create_transform(**resolve_data_config(model=model))


def timm_paths(name, tmp_path):
    """The same timm weights read by every timm path: the live model, a named file, timm's Hub layout."""
    from timm.models._hub import save_for_hf

    source = timm.create_model(name, pretrained=False, depth=1).eval()
    file = tmp_path / f"{name}.safetensors"  # the name (and its tag) in the file name
    save_file(source.state_dict(), str(file))
    save_for_hf(source, tmp_path / "timm_folder", safe_serialization=True)
    return source, {
        "from_timm": vitlens.from_timm(source),
        "named file": vitlens.load(file),
        "timm hub layout": vitlens.load(tmp_path / "timm_folder"),
        "preset=": vitlens.load(file.rename(tmp_path / "weights.safetensors"), preset=name),
    }


TIMM_RECIPES = [
    ("vit_small_patch16_224", 0.9, "center"),
    ("deit_tiny_patch16_224", 0.9, "center"),
    ("vit_base_patch16_224_miil.in21k_ft_in1k", 0.875, "center"),
    ("vit_base_patch16_clip_384.openai_ft_in12k_in1k", 0.95, "squash"),
]


@pytest.mark.parametrize("name, crop_pct, crop_mode", TIMM_RECIPES)
def test_timm_models_see_timms_pixels_by_every_path(tmp_path, photos, name, crop_pct, crop_mode):
    source, models = timm_paths(name, tmp_path)
    reference = timm_reference(source)
    for path, model in models.items():
        c = model.config
        assert (c.crop_pct, c.crop_mode, c.crop_rounding) == (crop_pct, crop_mode, "round"), path
        for photo, image in photos.items():
            assert_same(vitlens.transforms_for(model)(image), reference(image), f"{path} / {photo}")
    # and after vitlens's own save, and after conversion to every layout that carries pre-processing
    model = models["from_timm"]
    vitlens.save_pretrained(model, tmp_path / "saved")
    export(model, tmp_path / "as_timm", "timm")
    convert(tmp_path / "timm_folder", tmp_path / "converted")
    folders = ["saved", "as_timm", "converted"]
    if model.config.pre_norm:  # CLIP's layout: transformers' ViT has no norm before the blocks
        with pytest.raises(ValueError, match="Hugging Face vit model cannot hold this model: it has pre_norm"):
            export(model, tmp_path / "as_hf", "hf")
        assert not (tmp_path / "as_hf").exists()
    else:
        export(model, tmp_path / "as_hf", "hf")
        folders.append("as_hf")
    for folder in folders:
        back = vitlens.load(tmp_path / folder)
        # a Hugging Face folder is read as transformers reads it, which floors an odd crop margin that
        # timm rounds; elsewhere (and on even margins) both agree: see the next test
        theirs = pil_processor(tmp_path / folder) if folder == "as_hf" else reference
        for photo, image in photos.items():
            expected = (
                theirs(image) if theirs is reference else theirs(images=image, return_tensors="pt")["pixel_values"][0]
            )
            assert_same(vitlens.transforms_for(back)(image), expected, f"{folder} / {photo}")
        with torch.no_grad():
            x = reference(photos["chelsea"])[None]
            torch.testing.assert_close(back(x), source(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "name", ["vit_base_patch16_224_miil.in21k_ft_in1k", "vit_base_patch16_clip_384.openai_ft_in12k_in1k"]
)
def test_a_timm_folder_written_by_vitlens_is_timms_own(tmp_path, photos, name):
    source = timm.create_model(name, pretrained=False, depth=1).eval()
    export(vitlens.from_timm(source), tmp_path / "t", "timm")
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    rebuilt = timm.create_model(
        config["architecture"],
        pretrained=False,
        num_classes=config["num_classes"],
        pretrained_cfg_overlay=config["pretrained_cfg"],
        **config["model_args"],
    ).eval()
    from safetensors.torch import load_file

    rebuilt.load_state_dict(load_file(str(tmp_path / "t" / "model.safetensors")))
    x = timm_reference(source)(photos["chelsea"])[None]
    assert_same(timm_reference(rebuilt)(photos["tall"]), timm_reference(source)(photos["tall"]), "tall")
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), source(x), atol=1e-5, rtol=1e-5)


def test_a_timm_model_exported_to_hugging_face_is_prepared_alike_by_transformers(tmp_path, photos):
    source = timm.create_model("vit_small_patch16_224", pretrained=False, depth=1).eval()
    export(vitlens.from_timm(source), tmp_path / "hf", "hf")
    processor = pil_processor(tmp_path / "hf")
    for photo in ("chelsea",):  # even crop margins (248 x 372 -> 224): floor and round agree
        hf = processor(images=photos[photo], return_tensors="pt")["pixel_values"][0]
        assert_same(hf, timm_reference(source)(photos[photo]), photo)
    back = vitlens.load(tmp_path / "hf")
    assert (back.config.crop_mode, back.config.crop_rounding) == ("center", "floor")
    hf = processor(images=photos["odd"], return_tensors="pt")["pixel_values"][0]
    assert_same(vitlens.transforms_for(back)(photos["odd"]), hf, "odd")  # the folder is read as transformers does


def hf_vit(tmp_path, processor):
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    model = transformers.ViTForImageClassification(config).eval()
    model.save_pretrained(tmp_path / "hf")
    processor.save_pretrained(tmp_path / "hf")
    return model


HF_PROCESSORS = {
    "vit squash": lambda: transformers.ViTImageProcessorPil(size={"height": 32, "width": 32}),
    "bit crop": lambda: transformers.BitImageProcessorPil(size={"shortest_edge": 40}, crop_size=32),
    "deit squash+crop": lambda: transformers.DeiTImageProcessorPil(size={"height": 40, "width": 40}, crop_size=32),
}


@pytest.mark.parametrize("kind", list(HF_PROCESSORS))
def test_hugging_face_models_see_their_processors_pixels_by_every_path(tmp_path, photos, kind):
    processor = HF_PROCESSORS[kind]()
    source = hf_vit(tmp_path, processor)
    models = {
        "folder": vitlens.load(tmp_path / "hf"),
        "from_hf with its processor": vitlens.from_hf(source, image_processor=processor),
        "from_hf with its processor's dict": vitlens.from_hf(source, image_processor=processor.to_dict()),
    }
    vitlens.save_pretrained(models["folder"], tmp_path / "saved")
    convert(tmp_path / "hf", tmp_path / "back_to_hf", "hf")
    models["saved"] = vitlens.load(tmp_path / "saved")
    models["converted to hf"] = vitlens.load(tmp_path / "back_to_hf")
    for path, model in models.items():
        assert model.config.crop_rounding == "floor", path
        for photo, image in photos.items():
            theirs = processor(images=image, return_tensors="pt")["pixel_values"][0]
            assert_same(vitlens.transforms_for(model)(image), theirs, f"{path} / {photo}")


def test_a_folder_without_a_processor_gets_transformers_vit_defaults(tmp_path, photos):
    hf_vit(tmp_path, transformers.ViTImageProcessorPil(size={"height": 32, "width": 32}))
    (tmp_path / "hf" / "preprocessor_config.json").unlink()
    c = vitlens.load(tmp_path / "hf").config
    assert (c.crop_mode, c.interpolation, c.image_mean, c.image_std) == ("squash", "bilinear", (0.5,) * 3, (0.5,) * 3)


def test_the_crop_rule_reads_back_what_it_writes():
    for crop_pct in (0.875, 0.9, 0.95, 1.0):
        for mode in ("center", "squash"):
            config = vitlens.get_config("vit_small_patch16_224", crop_pct=crop_pct, crop_mode=mode)
            back = preprocessing.from_hf(preprocessing.to_hf(config))
            assert back.pop("input_size") == (224, 224)
            # the same resize: floor(224 / crop_pct) pixels, whatever the stored fraction
            assert int(224 / back["crop_pct"]) == int(224 / crop_pct), (crop_pct, mode)
            assert back["crop_mode"] == mode and back["interpolation"] == config.interpolation
            assert preprocessing.from_timm(preprocessing.to_timm(config))["crop_pct"] == crop_pct


def test_evaluation_data_go_through_the_models_own_transform(tmp_path, photos):
    for label in ("cat", "person"):
        (tmp_path / "set" / "val" / label).mkdir(parents=True)
        (tmp_path / "set" / "train" / label).mkdir(parents=True)
        for split in ("train", "val"):
            photos["chelsea" if label == "cat" else "odd"].save(tmp_path / "set" / split / label / "a.png")
    config = vitlens.get_config("deit_tiny_patch16_224", num_classes=2)  # crop 0.875, ImageNet mean/std
    val = build_dataset(f"imagefolder:{tmp_path / 'set'}", "val", config)
    expected = vitlens.transforms_for(config)(Image.open(tmp_path / "set" / "val" / "cat" / "a.png"))
    assert torch.equal(val[0][0], expected)
    train = build_dataset(f"imagefolder:{tmp_path / 'set'}", "train", config, augment="none")
    assert torch.equal(train[0][0], expected)  # training without augmentation: the same pixels


def test_an_hf_crop_that_keeps_unequal_fractions_is_refused():
    bad = {"size": {"height": 40, "width": 50}, "do_center_crop": True, "crop_size": {"height": 32, "width": 32}}
    with pytest.raises(ValueError, match="keeps different fractions of the two sides"):
        preprocessing.from_hf(bad)
