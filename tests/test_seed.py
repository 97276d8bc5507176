import pytest
import torch

from vitlens.seed import VIT, MultiHeadAttention


@pytest.mark.parametrize("heads", [1, 2, 4, 8])
def test_seed_vit_runs_with_any_number_of_heads(heads):
    model = VIT(32, 4, 3, 10, 128, heads, 2, 256, 0.1).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    out = model(x, return_attention=True)
    assert [a.shape for a in out.attentions] == [(2, heads, 64, 64)] * 2
    torch.testing.assert_close(out.logits, model(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("heads", [1, 2, 4, 8])
def test_seed_attention_outputs_tokens_and_weights_on_request(heads):
    mha = MultiHeadAttention(d_model=128, num_heads=heads)
    x = torch.randn(3, 10, 128)
    y = mha(x)
    assert y.shape == (3, 10, 128)
    y2, w = mha(x, return_attention=True)
    torch.testing.assert_close(y, y2, atol=1e-5, rtol=0)
    assert w.shape == (3, heads, 10, 10)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, heads, 10))


def test_seed_model_keeps_the_page_architecture():
    model = VIT(32, 4, 3, 10, 128, 8, 6, 256, 0.1)
    c = model.config
    assert (c.class_token, c.global_pool, c.pos_embed, c.norm_layer, c.act_layer, c.hidden_dim) == (
        False,
        "avg",
        "none",
        "none",
        "relu",
        256,
    )
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    normed = VIT(32, 4, 3, 10, 128, 8, 6, 256, 0.1, layer_norm=True, pos_embed="learn")
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in normed.modules()) == 2 * 6 + 1
    assert normed.pos_embed.shape == (1, 64, 128)


def test_seed_errors():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        MultiHeadAttention(100, 3)
    with pytest.raises(ValueError, match=r"tokens of shape \(batch, seq_len, 16\)"):
        MultiHeadAttention(16, 2)(torch.randn(2, 16))
    with pytest.raises(ValueError, match="img_dim \\(30\\) must be divisible by patch_dim \\(4\\)"):
        VIT(30, 4, 3, 10, 128, 8, 6, 256, 0.1)
