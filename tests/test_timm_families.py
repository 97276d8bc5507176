"""Every ViT timm registers, read by ``vitlens.from_timm``: exact, or refused with its reason.

Each architecture of timm's ``vision_transformer``, ``deit``, ``eva`` and ``beit`` modules is built
at random init with two blocks and a 4x4 patch grid; vitlens's logits and last-layer maps must equal
timm's (timm's maps are its softmax output, read with the fused kernel off), and the weights must
go back to timm's names bit for bit. What vitlens cannot read exactly is listed in ``REFUSED`` with
the words of the error it raises, so that the list can only shrink on purpose.
"""

from __future__ import annotations

import re

import pytest
import torch

import vitlens
from vitlens.checkpoint import to_timm_state_dict

timm = pytest.importorskip("timm")

MODULES = ("vision_transformer", "deit", "eva", "beit")
# name -> what the refusal names (a regular expression matched against the error message)
REFUSED: dict[str, str] = {}
ATOL = 1e-5


def architectures() -> list[str]:
    return sorted(name for module in MODULES for name in timm.list_models(module=module))


def build(name: str):
    """timm's model at a size this CPU runs in milliseconds: two blocks, a 4x4 patch grid."""
    with torch.device("meta"):
        probe = timm.create_model(name, pretrained=False)
    patch = probe.patch_embed.patch_size
    size = (patch[0] * 4, patch[1] * 4)
    extra = {}
    kv_heads = [getattr(getattr(block, "attn", None), "num_kv_heads", None) for block in probe.blocks]
    if any(h is not None for h in kv_heads):  # key/value heads per block (Sapiens2's middle blocks): keep one of each
        extra["num_kv_heads"] = (kv_heads[0], kv_heads[len(kv_heads) // 2])
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, depth=2, img_size=size, **extra).eval()
    with torch.no_grad():  # random init leaves some parameters at 0 or 1; perturb them so that every one counts
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model, size


def last_layer_maps(model, x):
    """timm's last-layer attention maps, read at the input of its attention dropout, fused kernel off.

    A parallel block is its own attention; a ParallelThingsBlock's branches give their heads side by side;
    differential attention's two softmax maps per head are combined into the map that multiplies v,
    A1 - lambda * A2, with timm's own lambda.
    """
    block = model.blocks[-1]
    attns = [branch.attn for branch in block.attns] if hasattr(block, "attns") else [getattr(block, "attn", block)]
    seen = []
    handles = []
    for attn in attns:
        attn.fused_attn = False
        handles.append(attn.attn_drop.register_forward_hook(lambda module, args, out: seen.append(args[0])))
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    assert len(seen) == len(attns)
    if hasattr(attns[0], "lambda_init"):  # differential attention: (B, 2H, N, N) softmax maps, two per head
        seen = [_differential(m, attn._compute_lambda().type_as(m)) for m, attn in zip(seen, attns)]
    return logits, torch.cat(seen, dim=1)


def _differential(probs, lam):
    pairs = probs.view(probs.shape[0], -1, 2, *probs.shape[-2:])
    return pairs[:, :, 0] - lam * pairs[:, :, 1]


@pytest.mark.parametrize("name", architectures())
def test_every_timm_vit_loads_exactly_or_is_refused_with_its_reason(name):
    model, size = build(name)
    x = torch.randn(2, 3, *size)
    if name in REFUSED:
        with pytest.raises((ValueError, vitlens.checkpoint.CheckpointError)) as info:
            vitlens.from_timm(model)
        assert re.search(REFUSED[name], str(info.value)), str(info.value)
        return
    ours = vitlens.from_timm(model)
    with torch.no_grad():
        logits, maps = last_layer_maps(model, x)
        out = ours(x, return_attention=[-1])
    assert (out.logits - logits).abs().max() <= ATOL
    assert (out.attentions[-1] - maps).abs().max() <= ATOL
    state = model.state_dict()
    back = to_timm_state_dict(ours)
    assert sorted(back) == sorted(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.parametrize("name", [n for n in vitlens.list_models() if timm.is_model(n)])
def test_presets_are_timms_definitions(name):
    """A preset holds what timm's definition of that name holds (architecture and pre-processing)."""
    from vitlens.checkpoint.timm_format import config_from_timm_name

    ours, theirs = vitlens.get_config(name), config_from_timm_name(name)
    # fc_norm=None means "timm's rule" (after the pooling for average pooling); compare what it decides
    # and the MLP width as a width (a ratio of 5.33334 and a width of 8192 are the same MLP)
    as_dict = lambda c: {
        **c.to_dict(),
        "fc_norm": c.use_fc_norm,
        "labels": None,
        "mlp_ratio": c.hidden_dim,
        "mlp_dim": 0,
    }
    assert as_dict(ours) == as_dict(theirs)


def test_any_timm_vit_is_a_model_name(tmp_path):
    model = vitlens.create_model("vit_so400m_patch14_siglip_224", depth=1, img_size=56)
    assert (model.config.embed_dim, model.config.global_pool, model.config.depth) == (1152, "map", 1)
    out = model(torch.randn(1, 3, 56, 56), return_attention=True)
    assert out.logits.shape == (1, 1152) and out.pool_attention.shape == (1, 16, 1, 16)
    with pytest.raises(ValueError, match="unknown model preset 'vit_so400m_patch14_siglip_22'.*close names"):
        vitlens.create_model("vit_so400m_patch14_siglip_22")


@pytest.mark.parametrize(
    "name",
    [
        "eva02_tiny_patch14_224",
        "vit_small_patch16_dinov3",
        "vit_pe_core_tiny_patch16_384",
        "vit_base_patch16_rope_reg1_gap_256",
        "vit_small_patch16_rope_mixed_224",
        "vit_small_patch16_rope_mixed_ape_224",
    ],
)
def test_rotary_embeddings_match_timm_at_other_input_sizes(name):
    """timm resizes a rotary model's grid (and its absolute positions) at run time with dynamic_img_size."""
    patch = timm.create_model(name, pretrained=False, depth=1).patch_embed.patch_size[0]
    model = timm.create_model(name, pretrained=False, depth=2, img_size=patch * 4, dynamic_img_size=True).eval()
    ours = vitlens.from_timm(model)
    for rows, cols in ((5, 3), (4, 6)):
        x = torch.randn(2, 3, rows * patch, cols * patch)
        with torch.no_grad():
            logits, maps = last_layer_maps(model, x)
            out = ours(x, return_attention=[-1])
        assert out.attentions[-1].shape[-1] == ours.token_layout(x).num_tokens
        assert (out.logits - logits).abs().max() <= ATOL
        assert (out.attentions[-1] - maps).abs().max() <= ATOL


@pytest.mark.parametrize("name", ["beit_base_patch16_224", "beitv2_base_patch16_224"])
def test_relative_position_tables_resample_as_timm_loads_them_at_another_size(name):
    """timm resamples BEiT's relative position tables when weights load into a model of another size
    (its checkpoint filter); vitlens does the same with img_size=."""
    from timm.models.beit import checkpoint_filter_fn

    small = timm.create_model(name, pretrained=False, depth=2, img_size=64).eval()
    with torch.no_grad():
        for p in small.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    for size in ((96, 96), (80, 48)):
        big = timm.create_model(name, pretrained=False, depth=2, img_size=size).eval()
        big.load_state_dict(checkpoint_filter_fn(small.state_dict(), big))
        ours = vitlens.from_timm(small, img_size=size)
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            logits, maps = last_layer_maps(big, x)
            out = ours(x, return_attention=[-1])
        assert (out.logits - logits).abs().max() <= ATOL, size
        assert (out.attentions[-1] - maps).abs().max() <= ATOL, size
    with pytest.raises(ValueError, match="feed images of that grid, or load the model with img_size="):
        ours(torch.randn(1, 3, 64, 64))


def test_a_parallel_block_model_goes_back_to_timm_as_parallel_scaling_blocks():
    from timm.models.vision_transformer import VisionTransformer

    from vitlens.checkpoint import timm_kwargs, to_timm_state_dict

    cfg = vitlens.ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=3)
    ours = vitlens.VisionTransformer(cfg.replace(block_type="parallel", init_values=0.1)).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for block in ours.blocks:  # one scale on the sum in timm: the two branches' scales agree
            block.ls2.gamma.copy_(block.ls1.gamma)
    theirs = VisionTransformer(**timm_kwargs(ours.config)).eval()
    theirs.load_state_dict(to_timm_state_dict(ours))
    assert type(theirs.blocks[0]).__name__ == "ParallelScalingBlock"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (theirs(x) - ours(x)).abs().max() <= ATOL
    with pytest.raises(ValueError, match="parallel blocks with a gated MLP"):
        timm_kwargs(cfg.replace(block_type="parallel", mlp_layer="swiglu", act_layer="silu"))


NEW_BLOCKS = (
    "vit_small_patch16_18x2_224",
    "vit_dwee_patch16_reg1_gap_256",
    "vit_dpwee_patch16_reg1_gap_256",
    "vit_small_patch16_rope_mixed_224",
)


@pytest.mark.parametrize("name", [*NEW_BLOCKS, "vit_pwee_patch16_reg1_gap_256"])
def test_parallel_and_differential_timm_names_are_model_names(name):
    """``config_from_timm_name`` (what ``create_model`` builds a timm name from) reads parallel blocks'
    own tensor names too, and agrees with reading the live model."""
    from vitlens.checkpoint.timm_format import config_from_timm_name

    model, _ = build(name)
    fields = ("block_type", "attn_layer", "num_parallel", "rope", "rope_grid_indexing", "num_heads", "init_values")
    named, read = config_from_timm_name(name), vitlens.from_timm(model).config
    assert [getattr(named, f) for f in fields] == [getattr(read, f) for f in fields]


@pytest.mark.parametrize("name", NEW_BLOCKS)
def test_parallel_branches_differential_attention_and_rope_mixed_save_load_and_fuse(name, tmp_path):
    """Read from timm, the fused kernel (no maps asked) gives the maps path's logits, and a vitlens
    folder (config.json + weights) loads back to the same config, logits and every layer's maps."""
    model, size = build(name)
    ours = vitlens.from_timm(model)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        want = ours(x, return_attention=True)
        assert (ours(x) - want.logits).abs().max() <= ATOL
        vitlens.save_pretrained(ours, tmp_path / "m")
        back = vitlens.load(tmp_path / "m")
        got = back(x, return_attention=True)
    assert back.config == ours.config
    assert torch.equal(got.logits, want.logits)
    assert all(torch.equal(a, b) for a, b in zip(got.attentions, want.attentions))


@pytest.mark.parametrize(
    "changes, block",
    [
        (dict(attn_layer="diff"), "Block"),
        (dict(attn_layer="diff", block_type="parallel"), "DiffParallelScalingBlock"),
        (dict(num_parallel=3), "ParallelThingsBlock"),
        (dict(num_parallel=2, attn_layer="diff"), "ParallelThingsBlock"),
    ],
)
def test_parallel_branches_and_differential_attention_go_back_to_timm(changes, block):
    """A vitlens model of each new kind builds as timm's ``VisionTransformer`` (``timm_kwargs``) and takes
    ``to_timm_state_dict``'s weights, giving the same logits; a DiffParallelScalingBlock's one output
    projection holds the attention's and the MLP's (their biases summed)."""
    from timm.models.vision_transformer import VisionTransformer

    from vitlens.checkpoint import timm_kwargs

    cfg = vitlens.ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=3)
    ours = vitlens.VisionTransformer(cfg.replace(init_values=0.1, **changes)).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for b in ours.blocks:
            if getattr(b, "parallel", False):  # one scale on the sum in timm's parallel blocks: the two agree
                b.ls2.gamma.copy_(b.ls1.gamma)
    theirs = VisionTransformer(**timm_kwargs(ours.config)).eval()
    theirs.load_state_dict(to_timm_state_dict(ours))
    assert type(theirs.blocks[0]).__name__ == block
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (theirs(x) - ours(x)).abs().max() <= ATOL


def test_differential_attention_with_timms_two_scalar_lambda_is_refused():
    from functools import partial

    from timm.models.vision_transformer import DiffParallelScalingBlock, VisionTransformer

    block = partial(DiffParallelScalingBlock, dual_lambda=True)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=4, block_fn=block)
    with pytest.raises(ValueError, match="differential attention with dual_lambda=True is not supported"):
        vitlens.from_timm(model)
