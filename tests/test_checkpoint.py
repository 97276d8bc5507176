"""vitlens's own format, format detection, and every promised error for a bad file."""

import pickle
import warnings

import pytest
import torch

import vitlens
from vitlens.checkpoint import CheckpointError, load, save_pretrained, to_hf_state_dict
from vitlens.commands.main import main as cli_main

from .conftest import small
from .payload import Payload

pytest.importorskip("safetensors")
from safetensors.torch import save_file  # noqa: E402


def _images(model, n=2):
    return torch.randn(n, model.config.in_chans, *model.config.img_hw)


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize(
    "name", ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "vit_small_patch14_reg4_dinov2", "vit_digits"]
)
def test_save_then_load_is_bit_exact(tmp_path, name):
    model = small(name, labels=None).eval()
    save_pretrained(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    back = vitlens.load(tmp_path / "m")
    assert back.config == model.config
    _assert_same_weights(model, back)
    x = _images(model)
    assert torch.equal(back(x), model(x))


def test_the_safetensors_file_alone_carries_its_config(tmp_path):
    model = small("vit_cifar", labels=[f"c{i}" for i in range(10)]).eval()
    save_pretrained(model, tmp_path / "m")
    (tmp_path / "m" / "config.json").unlink()
    back = load(tmp_path / "m" / "model.safetensors")
    assert back.config.labels == [f"c{i}" for i in range(10)]
    _assert_same_weights(model, back)


def test_img_size_override_resamples_positions_with_the_chosen_rule(tmp_path):
    model = small("vit_tiny_patch16_224").eval()  # 64 px, 4x4 grid
    save_pretrained(model, tmp_path / "m")
    for method in ("timm", "hf", "torchvision"):
        bigger = load(tmp_path / "m", img_size=96, pos_interp=method)
        assert bigger.config.img_size == 96 and bigger.config.pos_embed_interp == method
        want = vitlens.layers.resample_pos_embed(model.pos_embed[:, 1:].detach(), (4, 4), (6, 6), method)
        assert torch.equal(bigger.pos_embed[:, 1:], want)
        assert torch.equal(bigger.pos_embed[:, :1], model.pos_embed[:, :1])
        # the model resampled once at load time gives what the original gives when resampling at forward time
        x = torch.randn(1, 3, 96, 96)
        reference = vitlens.VisionTransformer(model.config.replace(pos_embed_interp=method)).eval()
        reference.load_state_dict(model.state_dict())
        torch.testing.assert_close(bigger(x), reference(x), atol=1e-5, rtol=0)


def test_a_timm_state_dict_needs_heads_and_says_which_argument_to_pass(tmp_path):
    model = small("vit_tiny_patch16_224").eval()
    path = tmp_path / "weights.safetensors"
    save_file(model.state_dict(), str(path))
    with pytest.raises(CheckpointError, match=r"num_heads.*num_heads=.*preset=.*vit_tiny_patch16_224") as e:
        load(path)
    assert str(path) in str(e.value)
    with pytest.raises(CheckpointError, match=r"pooling.*global_pool="):
        load(path, num_heads=3)
    back = load(path, num_heads=3, global_pool="token")
    x = _images(model)
    assert torch.equal(back(x), model(x))
    # a preset (or a timm name in the file name) supplies both
    assert torch.equal(load(path, preset="vit_tiny_patch16_224")(x), model(x))
    named = tmp_path / "vit_tiny_patch16_224.augreg_in21k.safetensors"
    save_file(model.state_dict(), str(named))
    assert torch.equal(load(named)(x), model(x))


def test_wrapped_pickles_load_with_weights_only(tmp_path):
    model = small("vit_tiny_patch16_224").eval()
    x = _images(model)
    for wrapper in ("model", "state_dict", "model_ema"):
        path = tmp_path / f"vit_tiny_patch16_224_{wrapper}.pth"
        torch.save({wrapper: model.state_dict(), "epoch": 3}, path)
        assert torch.equal(load(path, preset="vit_tiny_patch16_224")(x), model(x))


def test_a_pickle_with_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"patch_embed.proj.weight": Payload(str(marker))}, f, protocol=2)
    with pytest.raises(CheckpointError, match=r"evil\.pth.*weights-only.*never executes"):
        load(path, num_heads=3)
    assert not marker.exists()


def test_truncated_or_corrupt_files_name_the_file(tmp_path):
    model = small("vit_tiny_patch16_224")
    save_pretrained(model, tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*(truncated|not a readable)"):
        load(tmp_path / "m")
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load(weights)
    pth = tmp_path / "cut.pth"
    torch.save(model.state_dict(), pth)
    pth.write_bytes(pth.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"cut\.pth.*truncated, corrupt"):
        load(pth, num_heads=3)


def test_a_non_vit_state_dict_is_named_as_such(tmp_path):
    path = tmp_path / "resnet.safetensors"
    save_file({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, str(path))
    with pytest.raises(
        CheckpointError, match=r"resnet\.safetensors: not a ViT checkpoint.*conv1\.weight \(64, 3, 7, 7\)"
    ):
        load(path)
    path = tmp_path / "nothing.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match=r"nothing\.pth: holds no tensors"):
        load(path)


def test_mismatched_shapes_and_missing_keys_are_listed(tmp_path):
    model = small("vit_tiny_patch16_224")
    save_pretrained(model, tmp_path / "m")
    state = model.state_dict()
    config_meta = {"config": model.config.to_json()}
    bad = dict(state, **{"blocks.1.mlp.fc2.weight": torch.zeros(192, 10)})
    save_file(bad, str(tmp_path / "m" / "model.safetensors"), metadata=config_meta)
    with pytest.raises(
        CheckpointError,
        match=r"shape mismatch: blocks\.1\.mlp\.fc2\.weight \(192, 10\) in the file vs "
        r"\(192, 768\) in the model",
    ):
        load(tmp_path / "m")
    gone = {k: v for k, v in state.items() if not k.startswith("blocks.1.attn")}
    save_file(gone, str(tmp_path / "m" / "model.safetensors"), metadata=config_meta)
    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors does not fit.*missing keys.*blocks\.1\.attn\.qkv\.weight "
        r"\(576, 192\)",
    ):
        load(tmp_path / "m")
    # strict=False loads the rest and says what it skipped
    with pytest.warns(UserWarning, match=r"strict=False, skipped missing keys.*blocks\.1\.attn\.qkv\.weight"):
        partial = load(tmp_path / "m", strict=False)
    assert torch.equal(partial.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)


def test_another_num_classes_keeps_the_backbone_and_starts_a_new_head(tmp_path):
    model = small("vit_tiny_patch16_224")
    save_pretrained(model, tmp_path / "m")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a new head is asked for, not a mismatch to warn about
        tuned = load(tmp_path / "m", num_classes=7)
    assert tuned.head.out_features == 7 and tuned.config.num_classes == 7 and tuned.config.labels is None
    assert torch.equal(tuned.blocks[1].mlp.fc1.weight, model.blocks[1].mlp.fc1.weight)
    assert torch.equal(tuned.pos_embed, model.pos_embed)
    assert not torch.equal(tuned.head.weight[:7], model.head.weight[:7])  # freshly initialised
    same = load(tmp_path / "m", num_classes=model.config.num_classes)  # the stored head when it fits
    assert torch.equal(same.head.weight, model.head.weight)


def test_missing_paths_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="expected one weight file"):
        load(tmp_path / "empty")


def test_unknown_pos_interp_is_rejected(tmp_path):
    save_pretrained(small("vit_tiny_patch16_224"), tmp_path / "m")
    with pytest.raises(ValueError, match="pos_interp must be one of"):
        load(tmp_path / "m", img_size=96, pos_interp="bilinear")


def test_cli_convert_to_timm_file_and_back(tmp_path, capsys):
    model = small("vit_small_patch14_reg4_dinov2").eval()
    save_pretrained(model, tmp_path / "m")
    dst = tmp_path / "vit_small_patch14_reg4_dinov2.safetensors"
    assert cli_main(["convert", str(tmp_path / "m"), str(dst), "--to", "timm"]) == 0
    assert "wrote" in capsys.readouterr().out
    back = load(dst, img_size=model.config.img_size)
    x = _images(model)
    assert torch.equal(back(x), model(x))
    assert cli_main(["convert", str(dst), str(tmp_path / "x.txt"), "--to", "timm"]) == 2
    assert "safetensors or .pth" in capsys.readouterr().err


def test_hugging_face_layouts_without_transformers(tmp_path):
    from vitlens.checkpoint import export

    model = small("vit_tiny_patch16_224", num_classes=3).eval()
    export(model, tmp_path / "hf", "hf")
    back = load(tmp_path / "hf")
    x = _images(model)
    assert torch.equal(back(x), model(x))
    assert back.config.pos_embed_interp == "hf" and back.config.labels is None  # placeholders dropped
    # a layer that lost its key projection
    state = to_hf_state_dict(model)
    del state["vit.layers.1.attention.k_proj.weight"]
    save_file(state, str(tmp_path / "hf" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"hf/model\.safetensors: missing key.*k projection weight of layer 1"):
        load(tmp_path / "hf")
    # another Hugging Face architecture with look-alike keys
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "swin", "hidden_size": 192}')
    with pytest.raises(CheckpointError, match=r"config\.json: model_type 'swin' is not supported; vitlens reads"):
        load(tmp_path / "hf")
