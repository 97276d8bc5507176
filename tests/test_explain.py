"""Explanations against hand computations, row sums, batch independence and token layouts."""

from __future__ import annotations

import math

import pytest
import torch

import vitlens
from vitlens import explain
from vitlens.model import TokenLayout


def layout(prefix: int = 1, grid=(1, 2), cls: bool = True, registers: int = 0, patch: int = 4) -> TokenLayout:
    regs = tuple(range(int(cls), int(cls) + registers))
    return TokenLayout(prefix, 0 if cls else None, None, regs, grid, patch)


def random_attention(b=3, h=2, n=5, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, n, n, generator=g).softmax(-1)


def tiny_model(**kw) -> vitlens.VisionTransformer:
    return vitlens.create_model("vit_digits", img_size=8, **{"depth": 2, **kw}).eval()


# ------------------------------------------------------------------ rollout, by hand
def test_rollout_matches_hand_computation():
    # class token + 1x2 patches; the class token attends [1/2, 1/4, 1/4], patches attend to themselves.
    a = torch.tensor([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])[None, None]
    lay = layout()
    # one layer: (A + I) / 2 -> class row [3/4, 1/8, 1/8]
    assert torch.allclose(explain.rollout_from_attentions([a], lay), torch.tensor([[[0.125, 0.125]]]))
    # two layers: 3/4 * 1/8 + 1/8 * 1 = 7/32 for each patch
    two = explain.rollout_from_attentions([a, a], lay)
    assert torch.allclose(two, torch.full((1, 1, 2), 7 / 32))
    # start_layer=1 skips the first layer
    assert torch.allclose(explain.rollout_from_attentions([a, a], lay, start_layer=1), torch.tensor([[[0.125, 0.125]]]))


def test_head_fusion_max_and_min_by_hand():
    h0 = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    h1 = torch.tensor([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    a = torch.stack([h0, h1])[None]
    # max: class row [.5, .5, .5] + I = [1.5, .5, .5] / 2.5 -> patches 0.2 each
    assert torch.allclose(explain.rollout_from_attentions([a], layout(), head_fusion="max"), torch.full((1, 1, 2), 0.2))
    # min: class row [.5, 0, 0] + I = [1.5, 0, 0] -> patches 0
    assert torch.allclose(explain.rollout_from_attentions([a], layout(), head_fusion="min"), torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="head_fusion must be one of"):
        explain.rollout_from_attentions([a], layout(), head_fusion="median")


def test_discard_ratio_zeroes_lowest_entries_but_keeps_the_diagonal():
    from vitlens.explain.rollout import discard_lowest

    fused = torch.tensor([[[0.1, 0.2, 0.7], [0.3, 0.05, 0.65], [0.4, 0.5, 0.1]]])
    out = discard_lowest(fused, 0.34)  # int(9 * 0.34) = 3 lowest: 0.05 (diagonal, kept), 0.1, 0.1 (diagonal, kept)
    expected = fused.clone()
    expected[0, 0, 0] = 0.1  # diagonal survives
    expected[0, 2, 2] = 0.1
    assert torch.equal(out, expected)
    out = discard_lowest(fused, 0.5)  # 4 lowest: 0.05, 0.1, 0.1, 0.2 -> only 0.2 (off-diagonal) goes
    assert out[0, 0, 1] == 0 and out[0, 1, 1] == 0.05
    with pytest.raises(ValueError, match="discard_ratio"):
        discard_lowest(fused, 1.0)


@pytest.mark.parametrize("fusion,discard", [("mean", 0.0), ("max", 0.9), ("min", 0.5)])
def test_rollout_rows_sum_to_one(fusion, discard):
    maps = [random_attention(seed=s) for s in range(3)]
    r = explain.rollout_matrix(maps, layout(grid=(2, 2)), fusion, discard)
    assert torch.allclose(r.sum(-1), torch.ones(3, 5), atol=1e-6)
    assert (r >= 0).all()


def test_rollout_needs_every_layer():
    maps = [random_attention(), None, random_attention()]
    with pytest.raises(ValueError, match="layer 1 is None"):
        explain.rollout_from_attentions(maps, layout(grid=(2, 2)))
    # but starting after the missing layer is fine
    assert explain.rollout_from_attentions(maps, layout(grid=(2, 2)), start_layer=2).shape == (3, 2, 2)


def test_wrong_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"shape \(batch, heads, 5, 5\)"):
        explain.rollout_from_attentions([torch.rand(1, 2, 4, 4)], layout(grid=(2, 2)))


# ------------------------------------------------------------------ layouts
def test_register_tokens_are_not_patches():
    # class, 2 registers, 1x2 patches; the class token sends most of its attention to registers
    lay = layout(prefix=3, registers=2)
    a = torch.eye(5)[None, None].clone()
    a[0, 0, 0] = torch.tensor([0.1, 0.3, 0.4, 0.15, 0.05])
    cls = explain.cls_attention_from(a, lay)
    assert torch.allclose(cls, torch.tensor([[[[0.15, 0.05]]]]))
    # rollout: (A + I)/2 class row -> patches [0.075, 0.025]
    assert torch.allclose(explain.rollout_from_attentions([a], lay), torch.tensor([[[0.075, 0.025]]]))


def test_no_class_token_reads_the_mean_of_patch_rows():
    lay = layout(prefix=0, cls=False)
    a = torch.tensor([[0.75, 0.25], [0.5, 0.5]])[None, None]
    # cls_attention: mean over patch queries of their patch attention = [0.625, 0.375]
    assert torch.allclose(explain.cls_attention_from(a, lay), torch.tensor([[[[0.625, 0.375]]]]))
    # rollout: (A + I)/2 = [[7/8, 1/8], [1/4, 3/4]] -> column means [9/16, 7/16]
    assert torch.allclose(explain.rollout_from_attentions([a], lay), torch.tensor([[[9 / 16, 7 / 16]]]))


POOLED = dict(class_token=False, global_pool="map")  # SigLIP's layout: an attention pool reads the tokens out


@pytest.mark.parametrize(
    "kw", [dict(reg_tokens=4), dict(class_token=False, global_pool="avg"), dict(distilled=True), POOLED]
)
def test_methods_run_on_every_layout(kw):
    model = tiny_model(**kw)
    x = torch.randn(2, 1, 8, 8)
    for fn in (explain.rollout, explain.gae, explain.grad_rollout):
        assert fn(model, x).shape == (2, 4, 4)
    assert explain.cls_attention(model, x).shape == (2, 4, 4, 4)


# ------------------------------------------------------------------ batch independence and streaming
@pytest.mark.parametrize(
    "method",
    [
        explain.rollout,
        explain.gae,
        explain.grad_rollout,
        lambda m, x: explain.cls_attention(m, x, threshold=0.6),
        lambda m, x: explain.rollout(m, x, head_fusion="max", discard_ratio=0.5),
    ],
)
@pytest.mark.parametrize("kw", [dict(reg_tokens=2), POOLED])
def test_each_image_gets_the_map_it_gets_alone(method, kw):
    model = tiny_model(**kw)
    x = torch.randn(4, 1, 8, 8)
    batched = method(model, x)
    alone = torch.cat([method(model, x[i : i + 1]) for i in range(4)])
    assert torch.allclose(batched, alone, atol=1e-5)


@pytest.mark.parametrize("fn", [explain.rollout, explain.gae, explain.grad_rollout])
@pytest.mark.parametrize("kw", [dict(reg_tokens=1), POOLED])
def test_streaming_gives_the_same_maps(fn, kw):
    model = tiny_model(**kw)
    x = torch.randn(3, 1, 8, 8)
    assert torch.allclose(fn(model, x, streaming=True), fn(model, x), atol=1e-6)


def test_streaming_rollout_with_start_layer():
    model = tiny_model()
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(
        explain.rollout(model, x, start_layer=1, streaming=True), explain.rollout(model, x, start_layer=1), atol=1e-6
    )


def test_model_mode_is_restored():
    model = tiny_model().train()
    explain.rollout(model, torch.randn(1, 1, 8, 8))
    assert model.training


# ------------------------------------------------------------------ gradient methods
def test_gae_matches_hand_computation():
    lay = layout()
    a1 = torch.tensor([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])[None, None]
    g1 = torch.tensor([[1.0, 2.0, -4.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])[None, None]
    # Ā1 = (g1 * a1)+ = [[.5, .5, 0], [0, 1, 0], [0, 0, 1]]; R = I + Ā1 -> class row patches [0.5, 0]
    assert torch.allclose(explain.gae_from([a1], [g1], lay), torch.tensor([[[0.5, 0.0]]]))
    # two heads: mean of the positive parts (a head with negative weights contributes 0, not a negative)
    a2 = torch.cat([a1, a1], dim=1)
    g2 = torch.cat([g1, -g1], dim=1)
    assert torch.allclose(explain.gae_from([a2], [g2], lay), torch.tensor([[[0.25, 0.5]]]))
    # two layers: R = (I + Ā2)(I + Ā1), with Ā2 = 0.5 * identity-like map from layer 2's own gradient
    a_b, g_b = torch.eye(3)[None, None] * 0.5, torch.ones(1, 1, 3, 3)
    r = (torch.eye(3) + 0.5 * torch.eye(3)) @ (torch.eye(3) + torch.tensor([[0.5, 0.5, 0], [0, 1, 0], [0, 0, 1.0]]))
    assert torch.allclose(explain.gae_from([a1, a_b], [g1, g_b], lay), r[0, 1:][None, None])


def test_grad_rollout_matches_hand_computation():
    lay = layout()
    a = torch.tensor([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])[None, None]
    g = torch.tensor([[2.0, 4.0, -4.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])[None, None]
    # (g * a)+ = class row [1, 1, 0]; + I = [2, 1, 0] / 3 -> patches [1/3, 0]
    assert torch.allclose(explain.grad_rollout_from([a], [g], lay), torch.tensor([[[1 / 3, 0.0]]]))


def _own_gradients(model, x, target):
    """Each map's gradient via retain_grad and backward: an independent way to pair maps and gradients."""
    out = model(x, return_attention=True)
    for a in out.attentions:
        a.retain_grad()
    out.logits.gather(1, target[:, None]).sum().backward()
    return [a.detach() for a in out.attentions], [a.grad for a in out.attentions]


def test_gradient_methods_use_each_layers_own_gradient():
    model = tiny_model(depth=3)
    x = torch.randn(2, 1, 8, 8)
    target = torch.tensor([3, 7])
    maps, grads = _own_gradients(model, x, target)
    lay = model.token_layout(x)
    assert torch.allclose(explain.gae(model, x, target=target), explain.gae_from(maps, grads, lay), atol=1e-6)
    assert torch.allclose(
        explain.grad_rollout(model, x, target=target), explain.grad_rollout_from(maps, grads, lay), atol=1e-6
    )
    _, got, _ = explain.attention_gradients(model, x, target)
    for mine, own in zip(got, grads):
        assert torch.allclose(mine, own)
    # the commonly copied pairing (forward-ordered maps with backward-ordered gradients) differs
    assert not torch.allclose(explain.gae_from(maps, grads[::-1], lay), explain.gae_from(maps, grads, lay))


def test_target_defaults_to_prediction_and_is_checked():
    model = tiny_model()
    x = torch.randn(3, 1, 8, 8)
    predicted = model(x).argmax(-1)
    assert torch.allclose(explain.gae(model, x), explain.gae(model, x, target=predicted))
    with pytest.raises(ValueError, match=r"target class 10 does not exist: the model has 10 classes \(0..9\)"):
        explain.gae(model, x, target=10)
    with pytest.raises(ValueError, match="one index per image"):
        explain.grad_rollout(model, x, target=[1, 2])


# ------------------------------------------------------------------ maps, distance, entropy
def test_cls_attention_is_the_class_row_of_the_layer():
    model = tiny_model(reg_tokens=2)
    x = torch.randn(2, 1, 8, 8)
    attn = model(x, return_attention=True).attentions[0]
    expected = attn[:, :, 0, 3:].reshape(2, 4, 4, 4)
    assert torch.allclose(explain.cls_attention(model, x, layer=0), expected)


def test_dino_threshold_keeps_the_top_mass():
    maps = torch.tensor([0.05, 0.5, 0.15, 0.3]).reshape(1, 1, 2, 2)
    # sorted: 0.5 (mass before 0), 0.3 (0.5), 0.15 (0.8) -> at 0.6 keep 0.5 and 0.3
    assert torch.equal(explain.dino_mask(maps, 0.6), torch.tensor([0.0, 1.0, 0.0, 1.0]).reshape(1, 1, 2, 2))
    assert explain.dino_mask(maps, 1.0).sum() == 4
    with pytest.raises(ValueError, match="threshold"):
        explain.dino_mask(maps, 0.0)


def test_attention_distance_by_hand():
    lay = layout(grid=(1, 2), patch=4)
    a = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.25, 0.25], [0.0, 0.5, 0.5]])[None, None]
    # patch 0: 0.25 * 4 px = 1; patch 1: 0.5 * 4 = 2 -> mean 1.5. Renormalized: 2 and 2.
    assert torch.allclose(explain.attention_distance([a], lay), torch.tensor([[1.5]]))
    assert torch.allclose(explain.attention_distance([a], lay, renormalize=True), torch.tensor([[2.0]]))
    assert torch.allclose(explain.attention_distance([a], lay, patch_size=16), torch.tensor([[6.0]]))
    both = explain.attention_distance([None, a], lay)
    assert both.shape == (2, 1) and math.isnan(both[0, 0]) and both[1, 0] == 1.5


def test_attention_entropy_by_hand():
    lay = layout(grid=(1, 2))
    a = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.25, 0.25], [0.0, 0.5, 0.5]])[None, None]
    assert torch.allclose(explain.attention_entropy([a], lay, renormalize=True), torch.tensor([[math.log(2)]]))
    # without renormalizing: patch 0 gives -2 * 0.25 log 0.25 = 0.5 log 4, patch 1 gives log 2
    expected = (0.5 * math.log(4) + math.log(2)) / 2
    assert torch.allclose(explain.attention_entropy([a], lay), torch.tensor([[expected]]))


def test_distance_of_a_model_is_per_layer_and_head():
    model = tiny_model(depth=3)
    x = torch.randn(2, 1, 8, 8)
    out = model(x, return_attention=[0, 2])
    d = explain.attention_distance(out.attentions, model.token_layout(x))
    assert d.shape == (3, 4) and torch.isnan(d[1]).all() and torch.isfinite(d[[0, 2]]).all()
    # a 4x4 grid of 2-px patches: no distance can exceed the grid diagonal
    assert (d[[0, 2]] <= 2 * math.hypot(3, 3)).all()


def test_upsample():
    heat = torch.arange(4.0).reshape(1, 2, 2)
    assert explain.upsample(heat, 8).shape == (1, 8, 8)
    assert explain.upsample(heat[0], (4, 6)).shape == (1, 4, 6)
    assert torch.equal(explain.upsample(heat, 4, mode="nearest")[0, :2, :2], torch.zeros(2, 2))
    assert torch.allclose(explain.upsample(torch.full((2, 3, 3), 0.7), 9), torch.full((2, 9, 9), 0.7))
    with pytest.raises(ValueError, match="rows, cols"):
        explain.upsample(torch.rand(1, 1, 2, 2), 8)


def test_rollout_per_layer_ends_with_the_full_rollout():
    maps = [random_attention(seed=s) for s in range(3)]
    lay = layout(grid=(2, 2))
    per_layer = explain.rollout_per_layer(maps, lay)
    assert per_layer.shape == (3, 3, 2, 2)
    assert torch.allclose(per_layer[:, -1], explain.rollout_from_attentions(maps, lay))
    assert torch.allclose(per_layer[:, 0], explain.rollout_from_attentions(maps[:1], lay))


# ------------------------------------------------------------------ a model with an attention pool
def test_pooled_models_read_out_through_the_pools_query():
    """SigLIP's layout: the class row is the pool's query; rollout and GAE end in its row (no identity)."""
    model = tiny_model(**POOLED, reg_tokens=1)
    x = torch.randn(2, 1, 8, 8)
    lay = model.token_layout(x)
    assert lay.readout == "pool" and lay.class_index is None
    with torch.no_grad():
        out = model(x, return_attention=True)
    pool = out.pool_attention  # (B, heads, 1, N): zero on the register token, which the pool does not read
    assert pool.shape == (2, 4, 1, lay.num_tokens) and torch.all(pool[..., 0] == 0)
    torch.testing.assert_close(pool.sum(-1), torch.ones(2, 4, 1))
    heads = explain.cls_attention(model, x)
    torch.testing.assert_close(heads, pool[:, :, 0, lay.patch_slice].reshape(2, 4, *lay.grid))
    # rollout: the pool's head-mean row times the layers' (A + I) / rows product
    factors = [a.mean(1) + torch.eye(lay.num_tokens) for a in out.attentions]
    product = factors[1] / factors[1].sum(-1, keepdim=True) @ (factors[0] / factors[0].sum(-1, keepdim=True))
    expected = (pool.mean(1) @ product)[:, 0, lay.patch_slice].reshape(2, *lay.grid)
    torch.testing.assert_close(explain.rollout(model, x), expected)
    with pytest.raises(ValueError, match="pass pool_attention=out.pool_attention"):
        explain.rollout_from_attentions(out.attentions, lay)
    # GAE: Chefer's rule, the pool's own (grad * map)+ row last
    with torch.enable_grad():
        out = model(x, return_attention=True)
        score = out.logits.gather(1, out.logits.argmax(1, keepdim=True)).sum()
        maps = [*out.attentions, out.pool_attention]
        grads = torch.autograd.grad(score, maps)
    relevance = torch.eye(lay.num_tokens).expand(2, -1, -1)
    for a, g in zip(maps[:-1], grads[:-1]):
        relevance = relevance + (g * a).clamp_min(0).mean(1) @ relevance
    row = (grads[-1] * maps[-1]).clamp_min(0).mean(1) @ relevance
    torch.testing.assert_close(explain.gae(model, x), row[:, 0, lay.patch_slice].reshape(2, *lay.grid))
