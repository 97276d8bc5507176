"""AttnLRP, CP-LRP and Chefer et al.'s transformer attribution against a reference built from the rules.

The reference below propagates relevance layer by layer with the rules written out (ε-rule with
ε → 0 on linear steps and sums, identity rule on LayerNorm's division and GELU, the uniform rule
on the two attention products, the softmax rule R_x = x ⊙ (R_s − s Σ R_s)), in float64, without
autograd; vitlens gets the same numbers from one backward pass through the normal forward.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vitlens import explain
from vitlens.explain.lrp import lrp, relevance_rules

from .conftest import perturbed_vit


def tiny(**kw):
    cfg = dict(img_size=16, patch_size=4, in_chans=3, embed_dim=16, depth=2, num_heads=2, num_classes=5)
    torch.manual_seed(0)
    return perturbed_vit(0.05, **{**cfg, **kw})


def zero_biases(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    return model


LAYOUTS = {
    "class token": {},
    "registers": dict(reg_tokens=2),
    "attention pool": dict(class_token=False, global_pool="map"),
    "gated MLP, RMSNorm": dict(mlp_layer="swiglu", act_layer="silu", norm_layer="rmsnorm"),
    "differential attention": dict(attn_layer="diff", reg_tokens=1, global_pool="avg"),
    "parallel branches": dict(num_parallel=2, init_values=0.1),
    "parallel block": dict(block_type="parallel"),
}


# ----------------------------------------------------------------------------- the reference
def linear_rule(x, z, weight, relevance):
    """ε-rule (ε → 0) of z = x Wᵀ + b: R_x = x ⊙ (R_z / z) W."""
    return x * ((relevance / z) @ weight)


def layernorm_rule(x, y, norm, relevance):
    """y = (x − μ)/σ · w + b: the affine part by the ε-rule, the division by σ by the identity rule,
    the centring (a linear map) by the ε-rule."""
    centred = x - x.mean(-1, keepdim=True)
    normed = centred / (centred.square().mean(-1, keepdim=True) + norm.eps).sqrt()
    r_normed = normed * norm.weight * relevance / y
    ratio = r_normed / centred
    return x * (ratio - ratio.mean(-1, keepdim=True))


def sum_rule(a, b, relevance):
    z = a + b
    return a * relevance / z, b * relevance / z


def attention_rule(block, h, relevance):
    """Relevance of the attention's input h (B, N, D) from its output's, its maps' relevance, and what its
    softmax absorbs."""
    attn = block.attn
    B, N, D = h.shape
    heads, d = attn.num_heads, attn.head_dim
    qkv = h @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = (t.reshape(B, N, heads, d).transpose(1, 2) for t in qkv.split(D, -1))
    scores = attn.scale * q @ k.transpose(-2, -1)
    a = scores.softmax(-1)
    o = a @ v
    concat = o.transpose(1, 2).reshape(B, N, D)
    out = concat @ attn.proj.weight.T + attn.proj.bias
    r_concat = linear_rule(concat, out, attn.proj.weight, relevance)
    r_o = r_concat.reshape(B, N, heads, d).transpose(1, 2)
    # O = A V, uniform rule: each term A_ik V_kj gets R_ij · A_ik V_kj / O_ij, half to each factor
    ratio = r_o / o
    r_a = 0.5 * a * (ratio @ v.transpose(-2, -1))
    r_v = 0.5 * v * (a.transpose(-2, -1) @ ratio)
    r_scores = scores * (r_a - a * r_a.sum(-1, keepdim=True))  # the softmax rule
    absorbed = (r_a.sum() - r_scores.sum()).item()
    # S = scale q kᵀ, uniform rule
    ratio = r_scores / scores
    r_q = 0.5 * q * (ratio @ k) * attn.scale
    r_k = 0.5 * k * (ratio.transpose(-2, -1) @ q) * attn.scale
    r_qkv = torch.cat([t.transpose(1, 2).reshape(B, N, D) for t in (r_q, r_k, r_v)], -1)
    return linear_rule(h, qkv, attn.qkv.weight, r_qkv), r_a, absorbed


def mlp_rule(mlp, x, relevance):
    hidden = x @ mlp.fc1.weight.T + mlp.fc1.bias
    act = F.gelu(hidden)
    out = act @ mlp.fc2.weight.T + mlp.fc2.bias
    r_act = linear_rule(act, out, mlp.fc2.weight, relevance)  # the GELU passes it on unchanged
    return linear_rule(x, hidden, mlp.fc1.weight, r_act)


def reference_relevance(model, images, target):
    """The input tokens' relevance (B, N) of a pre-norm ViT with a class token, the logits, what the softmaxes
    absorbed, and each layer's map relevance (B, H, N, N)."""
    with torch.no_grad():
        x0 = model.embed(images)
        inside = []
        x = x0
        for block in model.blocks:
            h1 = block.norm1(x)
            x1 = x + block.attn(h1)[0]
            h2 = block.norm2(x1)
            x2 = x1 + block.mlp(h2)
            inside.append((x, h1, x1, h2))
            x = x2
        final = model.norm(x)
        logits = final[:, 0] @ model.head.weight.T + model.head.bias
        r_logits = torch.zeros_like(logits)
        r_logits[torch.arange(len(images)), target] = logits[torch.arange(len(images)), target]
        r_cls = linear_rule(final[:, 0], logits, model.head.weight, r_logits)
        r_final = torch.zeros_like(final)
        r_final[:, 0] = r_cls
        relevance = layernorm_rule(x, final, model.norm, r_final)
        absorbed, map_relevance = 0.0, []
        for block, (x, h1, x1, h2) in zip(reversed(model.blocks), reversed(inside)):
            mlp_out = block.mlp(h2)
            r_x1, r_mlp = sum_rule(x1, mlp_out, relevance)
            r_h2 = mlp_rule(block.mlp, h2, r_mlp)
            r_x1 = r_x1 + layernorm_rule(x1, h2, block.norm2, r_h2)
            attn_out = x1 - x
            r_x, r_attn = sum_rule(x, attn_out, r_x1)
            r_h1, r_a, lost = attention_rule(block, h1, r_attn)
            absorbed += lost
            map_relevance.insert(0, r_a)
            relevance = r_x + layernorm_rule(x, h1, block.norm1, r_h1)
    return relevance.sum(-1), logits, absorbed, map_relevance


# ----------------------------------------------------------------------------- tests
def test_attnlrp_equals_the_rules_written_out_on_a_two_layer_model():
    model = tiny().double()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    target = [1, 4, 0]
    theirs, _, _, _ = reference_relevance(model, x, target)
    ours = lrp(model, x, target)
    torch.testing.assert_close(ours.tokens[:, 0].double(), theirs, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(explain.attnlrp(model, x, target).double(), theirs[:, 1:].reshape(3, 4, 4))


def test_attnlrp_conserves_the_logit_but_what_the_softmax_rule_absorbs():
    """With zero biases the input tokens' relevance plus the softmaxes' absorption is the logit exactly;
    the absorption itself is the rule's (a uniform map passes nothing to its scores)."""
    model = zero_biases(tiny()).double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    reference, logits, absorbed, _ = reference_relevance(model, x, [2, 2])
    ours = lrp(model, x, 2)
    total = ours.tokens[:, 0].sum()
    torch.testing.assert_close(total + absorbed, logits[:, 2].sum(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(total, reference.sum(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_cp_lrp_conserves_the_score_within_a_millionth(layout):
    """CP-LRP: with constant maps and zero biases every step is conservative, so the input tokens'
    relevance sums to the score, and so does every layer's."""
    model = zero_biases(tiny(**LAYOUTS[layout]))
    x = torch.randn(3, 3, 16, 16)
    relevance = lrp(model, x, [0, 3, 1], rule="cp")
    sums = relevance.tokens.double().sum(-1)  # (B, L + 1)
    expected = relevance.scores.double()[:, None].expand_as(sums)
    torch.testing.assert_close(sums, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["attnlrp", "cp_lrp", "transformer_attribution"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_image_gets_the_same_map_alone_or_in_a_batch(method, layout):
    model = tiny(**LAYOUTS[layout])
    x = torch.randn(3, 3, 16, 16)
    fn = getattr(explain, method)
    batched = fn(model, x, [2, 0, 4])
    assert batched.shape == (3, 4, 4) and torch.isfinite(batched).all()
    alone = torch.cat([fn(model, x[i : i + 1], t) for i, t in enumerate([2, 0, 4])])
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-6)


def test_the_forward_under_the_rules_is_the_models_own():
    model = tiny(mlp_layer="swiglu", act_layer="silu", reg_tokens=1)
    x = torch.randn(2, 3, 16, 16)
    plain = model(x)
    with relevance_rules(model), torch.enable_grad():
        ruled = model(x)
    assert torch.equal(plain, ruled)
    assert all(getattr(m, "relevance_rule", None) is None for m in model.modules())  # every rule undone


def test_transformer_attribution_is_chefers_fold_of_map_relevance_and_gradient():
    """Ā_l = I + mean_h(∇A_l ⊙ R_{A_l})⁺, multiplied, class row over the patches; relevance started at 1."""
    model = tiny().double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    maps, grads, _ = explain.attention_gradients(model, x, [3, 1])
    relevance = lrp(model, x, [3, 1], maps=True)
    product = torch.eye(17, dtype=torch.float64).expand(2, 17, 17)
    for a_rel, grad, scale in zip(relevance.maps, grads, [relevance.scores.abs()] * 2):
        factor = torch.eye(17, dtype=torch.float64) + (grad * a_rel / scale[:, None, None, None]).clamp_min(0).mean(1)
        product = factor @ product
    expected = product[:, 0, 1:].reshape(2, 4, 4)
    torch.testing.assert_close(explain.transformer_attribution(model, x, [3, 1]).double(), expected)


def test_map_relevance_is_what_the_rules_give_each_map():
    model = tiny(reg_tokens=1).double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    *_, theirs = reference_relevance(model, x, [2, 0])
    ours = lrp(model, x, [2, 0], maps=True).maps
    assert len(ours) == 2 and ours[0].shape == (2, 2, 18, 18)
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine.double(), reference, rtol=1e-5, atol=1e-10)


def test_a_cosine_target_is_explained_with_its_norm_held_constant():
    """Gradient x input of a cosine is 0 (it is scale-free); with the norm a constant, CP-LRP conserves it."""
    model = zero_biases(tiny(num_classes=0))
    reference = torch.randn(1, 3, 16, 16)
    target = explain.image_target(model, reference)
    x = torch.randn(2, 3, 16, 16)
    relevance = lrp(model, x, target, rule="cp")
    torch.testing.assert_close(relevance.tokens[:, 0].double().sum(-1), relevance.scores.double(), rtol=1e-5, atol=1e-6)
    assert relevance.scores.abs().min() > 1e-3


def test_a_module_without_a_rule_is_refused_by_name():
    model = tiny()
    model.blocks[0].mlp.act = torch.nn.Tanh()
    with pytest.raises(ValueError, match=r"no rule for Tanh \(blocks.0.mlp.act\)"):
        explain.attnlrp(model, torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="rule must be one of"):
        explain.attnlrp(tiny(), torch.randn(1, 3, 16, 16), rule="gamma")
