"""The ``vitlens`` command line: the only module that parses arguments.

Each sub-command is a ``_cmd_<name>(args)`` function registered in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_demo(args: argparse.Namespace) -> int:
    """Build a small ViT, run it on a bundled photo, save the last layer's per-head class-token maps."""
    import torch

    from . import create_model
    from .plot import head_grid

    try:
        from skimage import data as skdata
    except ImportError as e:  # pragma: no cover - the demo extra installs it
        raise SystemExit(f"the demo needs scikit-image ({e}); run `make demo` or pip install 'vitlens[train]'") from e

    out = Path(args.out)
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
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitlens", description="A Vision Transformer whose attention you can see.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the demo on bundled data and write pictures")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.set_defaults(func=_cmd_demo)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
