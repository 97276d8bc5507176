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
