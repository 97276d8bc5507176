"""``vitlens demo``: the main job on bundled data, writing pictures into one folder."""

from __future__ import annotations

from pathlib import Path

import torch

from .model import create_model
from .plot import head_grid


def run_demo(out: Path) -> None:
    """Build a small ViT, run it on a bundled photo, save the last layer's per-head class-token maps."""
    try:
        from skimage import data as skdata
    except ImportError as e:  # pragma: no cover - the demo extra installs it
        raise SystemExit(f"the demo needs scikit-image ({e}); run `make demo` or pip install 'vitlens[train]'") from e

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = create_model("vit_cifar", img_size=64, patch_size=8).eval()
    photo = torch.from_numpy(skdata.chelsea()).permute(2, 0, 1).float() / 255.0
    image = torch.nn.functional.interpolate(photo[None], size=(64, 64), mode="bilinear", antialias=True)
    with torch.no_grad():
        result = model((image - 0.5) / 0.5, return_attention=[-1])
    layout = model.token_layout(image)
    cls_maps = result.attentions[-1][0, :, layout.class_index, layout.patch_slice].reshape(-1, *layout.grid)
    path = out / "heads_last_layer.png"
    head_grid(cls_maps, image[0], path=path, title="class-token attention, last layer (untrained model)")
    print(f"wrote {path}")
