import math

import pytest
import torch

import vitlens
from vitlens import VisionTransformer, ViTConfig

from .conftest import small


def _recompute_maps(model: VisionTransformer, images: torch.Tensor) -> list[torch.Tensor]:
    """softmax(q kᵀ/√d) from each layer's own q and k, captured by a forward hook on qkv."""
    maps = []

    def hook(attn, inputs, output):
        B, N, _ = output.shape
        qkv = output.reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        maps.append(torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(attn.head_dim), dim=-1))

    handles = [b.attn.qkv.register_forward_hook(lambda m, i, o, a=b.attn: hook(a, i, o)) for b in model.blocks]
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    return maps


@pytest.mark.parametrize("name", vitlens.list_models())
def test_every_preset_runs_at_a_small_size(name):
    model = small(name).eval()
    c = model.config
    x = torch.randn(2, c.in_chans, *c.img_hw)
    out = model(x, return_attention=True)
    n = c.num_prefix_tokens + c.grid_size[0] * c.grid_size[1]
    expected = (2, c.num_classes) if c.num_classes else (2, c.embed_dim)
    assert out.logits.shape == expected
    assert len(out.attentions) == c.depth
    assert all(a.shape == (2, c.num_heads, n, n) for a in out.attentions)
    assert out.features.shape == (2, n, c.embed_dim)


@pytest.mark.parametrize(
    "name", ["vit_tiny_patch16_224", "vit_small_patch14_reg4_dinov2", "deit_tiny_distilled_patch16_224"]
)
def test_maps_are_probabilities_equal_to_a_manual_recomputation(name):
    model = small(name, qk_norm=name.startswith("vit_tiny")).eval()
    x = torch.randn(3, 3, *model.config.img_hw)
    with torch.no_grad():
        out = model(x, return_attention=True)
    manual = _recompute_maps(model, x)
    for got, want in zip(out.attentions, manual):
        torch.testing.assert_close(got.sum(-1), torch.ones(got.shape[:-1]), atol=1e-5, rtol=0)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pool, regs", [("token", 0), ("avg", 2)])
def test_fused_and_explicit_paths_agree(pool, regs):
    model = VisionTransformer(
        ViTConfig(
            img_size=32,
            patch_size=4,
            embed_dim=96,
            depth=3,
            num_heads=4,
            num_classes=5,
            global_pool=pool,
            class_token=pool == "token",
            reg_tokens=regs,
            init_values=0.1,
        )
    ).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        full = model(x, return_attention=True)
        last = model(x, return_attention=[-1])
    torch.testing.assert_close(full.logits, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(last.logits, plain, atol=1e-5, rtol=0)


def test_only_requested_layers_are_kept():
    model = small("vit_tiny_patch16_224", depth=4).eval()
    x = torch.randn(1, 3, 64, 64)
    out = model(x, return_attention=[0, -1])
    assert [a is not None for a in out.attentions] == [True, False, False, True]
    assert model(x, return_attention=2).attentions[2] is not None
    assert isinstance(model(x), torch.Tensor)


def test_plain_path_runs_fused_and_stores_nothing(monkeypatch):
    model = small("vit_tiny_patch16_224").eval()
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    model(torch.randn(1, 3, 64, 64))
    assert len(calls) == model.depth
    calls.clear()
    model(torch.randn(1, 3, 64, 64), return_attention=[1])
    assert len(calls) == model.depth - 1


def test_gradients_reach_the_maps():
    model = small("vit_tiny_patch16_224").eval()
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    out = model(x, return_attention=True)
    for a in out.attentions:
        a.retain_grad()
    out.logits[:, 3].sum().backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in out.attentions)
    assert x.grad is not None


def test_layer_scale_registers_and_distillation_layout():
    model = small("deit_tiny_distilled_patch16_224")
    lay = model.token_layout(torch.zeros(1, 3, 64, 48))
    assert (lay.class_index, lay.dist_index, lay.register_indices, lay.grid) == (0, 1, (), (4, 3))
    reg = small("vit_small_patch14_reg4_dinov2")
    lay = reg.token_layout((56, 56))
    assert (lay.num_prefix_tokens, lay.register_indices, lay.patch_slice) == (5, (1, 2, 3, 4), slice(5, 21))
    avg = VisionTransformer(
        ViTConfig(img_size=32, patch_size=8, class_token=False, global_pool="avg", embed_dim=32, num_heads=2, depth=1)
    )
    assert avg.token_layout((32, 32)).class_index is None


@pytest.mark.parametrize(
    "name", ["vit_tiny_patch16_224", "vit_small_patch14_reg4_dinov2", "deit_tiny_distilled_patch16_224"]
)
def test_position_embeddings_resample_to_other_and_non_square_sizes(name):
    model = small(name).eval()
    p = model.config.patch_size
    x = torch.randn(2, 3, 4 * p, 4 * p)
    with torch.no_grad():
        native = model(x)
        # Forcing the resampling code at the native grid must be the identity.
        pos = model.pos_embed
        n = 0 if model.config.no_embed_class else model.num_prefix_tokens
        same = vitlens.layers.resample_pos_embed(pos[:, n:], (4, 4), (4, 4))
        torch.testing.assert_close(same, pos[:, n:], atol=0, rtol=0)
        other = model(torch.randn(2, 3, 6 * p, 3 * p), return_attention=[-1])
    assert native.shape == other.logits.shape
    n_tok = model.num_prefix_tokens + 18
    assert other.attentions[-1].shape[-1] == n_tok


@pytest.mark.parametrize("method", ["timm", "hf", "torchvision"])
def test_resampling_methods_keep_shape_and_differ(method):
    pos = torch.randn(1, 16, 8)
    out = vitlens.layers.resample_pos_embed(pos, (4, 4), (6, 5), method)
    assert out.shape == (1, 30, 8)
    ref = vitlens.layers.resample_pos_embed(pos, (4, 4), (6, 5), "timm")
    assert method == "timm" or not torch.allclose(out, ref)


def test_sincos_and_no_position_models_run_at_any_size():
    for kind in ("sincos2d", "none"):
        model = VisionTransformer(
            ViTConfig(img_size=32, patch_size=8, embed_dim=32, num_heads=2, depth=1, num_classes=3, pos_embed=kind)
        ).eval()
        assert model(torch.randn(1, 3, 48, 24)).shape == (1, 3)
        assert model.pos_embed is None


def test_dropout_and_drop_path_are_active_only_in_training():
    model = small("vit_tiny_patch16_224", drop_rate=0.3, attn_drop_rate=0.3, drop_path_rate=0.5)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model(x))
    # Returned maps are taken before attention dropout: still rows summing to 1.
    out = model(x, return_attention=[0])
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 3, 17), atol=1e-5, rtol=0)


def test_bf16_forward_and_maps():
    model = small("vit_tiny_patch16_224").eval().to(torch.bfloat16)
    x = torch.randn(2, 3, 64, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        out = model(x, return_attention=True)
        plain = model(x)
    assert out.attentions[0].dtype == torch.bfloat16
    torch.testing.assert_close(out.logits.float(), plain.float(), atol=0.05, rtol=0.05)


@pytest.mark.parametrize(
    "shape, match",
    [
        ((1, 1, 64, 64), "expected 3 input channel"),
        ((1, 3, 8, 64), "smaller than one 16x16 patch"),
        ((1, 3, 70, 64), "not divisible by the patch size 16: resize or crop to 64x64, or pad to 80x64"),
        ((3, 64, 64), "expected images of shape \\(B, C, H, W\\)"),
    ],
)
def test_bad_images_raise_clear_errors(shape, match):
    model = small("vit_tiny_patch16_224")
    with pytest.raises(ValueError, match=match):
        model(torch.randn(*shape))


@pytest.mark.parametrize(
    "request_, match", [([5], "out of range for a 2-layer model"), ([-3], "valid: -2..1"), (["a"], "layer indices")]
)
def test_bad_layer_index_is_named(request_, match):
    model = small("vit_tiny_patch16_224")
    with pytest.raises(ValueError, match=match):
        model(torch.randn(1, 3, 64, 64), return_attention=request_)


@pytest.mark.slow
def test_compile_fullgraph_in_both_modes():
    model = small("vit_tiny_patch16_224").eval()
    x = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-5)
        out = compiled(x, return_attention=[-1])
        torch.testing.assert_close(
            out.attentions[-1], model(x, return_attention=[-1]).attentions[-1], atol=1e-5, rtol=1e-5
        )


def test_inference_and_autograd_maps_paths_agree():
    """Without autograd the maps are filled in place; with it they come from the explicit ops."""
    model = small("vit_tiny_patch16_224", num_heads=3, qk_norm=True).eval()
    x = torch.randn(3, 3, *model.config.img_hw)
    with torch.inference_mode():
        fast = model(x, return_attention=True)
    slow = model(x, return_attention=True)
    assert slow.attentions[0].requires_grad and not fast.attentions[0].requires_grad
    torch.testing.assert_close(fast.logits, slow.logits.detach(), atol=1e-5, rtol=0)
    for a, b in zip(fast.attentions, slow.attentions):
        torch.testing.assert_close(a, b.detach(), atol=1e-6, rtol=1e-5)
