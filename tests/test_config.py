import pytest

import vitlens
from vitlens import ViTConfig


def test_json_round_trip_keeps_every_field():
    cfg = vitlens.get_config("vit_small_patch14_reg4_dinov2", num_classes=7, img_size=(224, 168))
    again = ViTConfig.from_json(cfg.to_json())
    assert again == cfg
    assert again.img_size == (224, 168)


def test_json_round_trip_through_a_file(tmp_path):
    cfg = vitlens.get_config("vit_digits")
    path = tmp_path / "config.json"
    path.write_text(cfg.to_json())
    assert ViTConfig.from_json(path) == cfg


def test_presets_have_timm_numbers():
    s = vitlens.get_config("vit_small_patch16_224")
    assert (s.embed_dim, s.depth, s.num_heads, s.patch_size, s.grid_size) == (384, 12, 6, 16, (14, 14))
    d = vitlens.get_config("vit_small_patch14_reg4_dinov2")
    assert (d.reg_tokens, d.no_embed_class, d.init_values, d.img_size) == (4, True, 1e-5, 518)
    assert vitlens.get_config("deit_tiny_distilled_patch16_224").num_prefix_tokens == 2
    assert vitlens.get_config("vit_giant_patch14_dinov2").hidden_dim == 8192


def test_pretrained_tag_is_accepted():
    assert vitlens.get_config("vit_small_patch16_224.augreg_in21k").embed_dim == 384


def test_unknown_preset_lists_close_names():
    with pytest.raises(ValueError, match="close names: vit_small_patch16_224"):
        vitlens.create_model("vit_smal_patch16_224")


def test_unknown_field_suggests_the_right_one():
    with pytest.raises(ValueError, match="did you mean 'embed_dim'"):
        ViTConfig.from_dict({"embed_dims": 3})


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(global_pool="max"), "global_pool must be one of"),
        (dict(embed_dim=100, num_heads=3), "divisible by num_heads"),
        (dict(class_token=False), "global_pool='token' needs class_token=True"),
        (dict(img_size=10, patch_size=16), "smaller than one 16-pixel patch"),
        (dict(act_layer="tanh"), "act_layer must be one of"),
    ],
)
def test_bad_config_values_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        ViTConfig(**kw)


def test_list_models_filters():
    assert "vit_cifar" in vitlens.list_models()
    assert all("dinov2" in n for n in vitlens.list_models("*dinov2*"))
    assert len(vitlens.list_models("*dinov2*")) == 8
