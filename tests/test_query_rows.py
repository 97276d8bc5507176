"""Query-row maps: model(x, return_attention=..., queries=...) gives exactly the chosen rows of the full maps."""

from __future__ import annotations

import pytest
import torch

from vitlens import explain

from .conftest import perturbed_vit


def tiny(**kw):
    cfg = dict(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=3, num_heads=4, num_classes=5)
    return perturbed_vit(**{**cfg, **kw})


MODELS = {
    "class token": {},
    "registers": dict(reg_tokens=2),
    "distilled": dict(distilled=True),
    "attention pool": dict(class_token=False, global_pool="map", num_classes=0),
    "rotary": dict(rope="axial", pos_embed="none"),
    "relative bias": dict(rel_pos_bias=True, pos_embed="none"),
    "differential": dict(attn_layer="diff", qk_norm=True),
    "differential parallel": dict(attn_layer="diff", block_type="parallel", init_values=0.1),
    "parallel branches": dict(num_parallel=2, init_values=0.1),
    "rotary mixed": dict(rope="mixed", pos_embed="none"),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("queries", ["cls", "prefix", [0, 5, 9], 7, torch.tensor([3, 1])])
@pytest.mark.parametrize("grad", [False, True])
def test_query_rows_equal_the_full_maps_rows(name, queries, grad):
    model = tiny(**MODELS[name])
    x = torch.randn(2, 3, 16, 16)
    layout = model.token_layout(x)
    index = model.query_indices(queries, layout)
    with torch.set_grad_enabled(grad):
        full = model(x, return_attention=True)
        rows = model(x, return_attention=[0, -1], queries=queries)
    torch.testing.assert_close(rows.logits, full.logits, atol=1e-5, rtol=0)
    assert rows.attentions[1] is None
    if index.numel() == 0:  # 'cls' or 'prefix' without such tokens: the pool's map is the readout
        assert rows.attentions[0] is None and rows.attentions[2] is None and rows.pool_attention is not None
        return
    heads = 4 * model.config.num_parallel  # parallel branches: their heads side by side
    for layer in (0, 2):
        assert rows.attentions[layer].shape == (2, heads, index.numel(), layout.num_tokens)
        torch.testing.assert_close(rows.attentions[layer], full.attentions[layer][:, :, index], atol=1e-6, rtol=0)


def test_bad_queries_are_named():
    model = tiny()
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="queries takes 'all', 'cls', 'prefix' or token indices; got 'class'"):
        model(x, return_attention=True, queries="class")
    with pytest.raises(ValueError, match=r"query token indices must lie in 0..16 for this input; got \[17\]"):
        model(x, return_attention=True, queries=[17])
    with pytest.raises(ValueError, match="token indices \\(integers\\), got a torch.float32 tensor"):
        model(x, return_attention=True, queries=torch.tensor([0.0]))


def test_class_token_maps_and_dino_masks_come_from_the_class_row():
    model = tiny(reg_tokens=1)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        full = model(x, return_attention=True)
    layout = model.token_layout(x)
    want = explain.cls_attention_from(full.attentions[-1], layout)
    torch.testing.assert_close(explain.cls_attention(model, x), want, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        explain.cls_attention(model, x, threshold=0.6), explain.cls_attention_from(full.attentions[-1], layout, 0.6)
    )


@pytest.mark.parametrize("name", ["class token", "registers", "attention pool", "rotary"])
@pytest.mark.parametrize("fusion", ["mean", "max"])
def test_rollout_of_the_readout_row_equals_rollout(name, fusion, monkeypatch):
    from vitlens.explain import maps

    monkeypatch.setattr(maps, "CHUNK_BYTES", 4 * 2 * 4 * 5)  # five rows at a time
    model = tiny(**MODELS[name])
    x = torch.randn(2, 3, 16, 16)
    for start in (0, 1):
        want = explain.rollout(model, x, head_fusion=fusion, start_layer=start)
        got = explain.rollout(model, x, head_fusion=fusion, start_layer=start, rows=True)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="discard_ratio ranks a whole matrix"):
        explain.rollout(model, x, discard_ratio=0.5, rows=True)


@pytest.mark.parametrize("name", ["differential", "differential parallel", "parallel branches", "rotary mixed"])
def test_a_layer_recomputed_for_a_few_rows_gives_those_rows(name):
    """``run_block(rows=...)``, what bounded-memory explanations recompute: the rows' output and map rows."""
    model = tiny(**MODELS[name])
    x = torch.randn(2, 3, 16, 16)
    grid = model.token_layout(x).grid
    tokens = model.embed(x)
    with torch.no_grad():
        full, maps = model.run_block(1, tokens, grid, need_weights=True)
        rows = torch.tensor([0, 6, 11])
        part, part_maps = model.run_block(1, tokens, grid, need_weights=True, rows=rows)
    torch.testing.assert_close(part, full[:, rows], atol=1e-6, rtol=0)
    torch.testing.assert_close(part_maps, maps[:, :, rows], atol=1e-6, rtol=0)
