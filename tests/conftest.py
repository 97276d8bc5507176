import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def small(name: str, **kw):
    """A preset shrunk so that a forward pass on this CPU takes milliseconds."""
    import vitlens

    cfg = vitlens.get_config(name)
    size = 2 * cfg.patch_size * 2  # a 4x4 patch grid
    return vitlens.create_model(name, img_size=size, **{"depth": 2, **kw})


def perturbed_vit(scale: float = 0.02, **config):
    """A small random ViT in eval mode whose every weight is nudged off its init (zeros and ones count too)."""
    import vitlens

    model = vitlens.VisionTransformer(vitlens.ViTConfig(**config)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model
