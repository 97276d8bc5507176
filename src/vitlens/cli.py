"""The ``vitlens`` command line: the only module that parses arguments.

Each sub-command is a ``_cmd_<name>(args)`` function registered in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default data; see :mod:`vitlens.demo`."""
    from .demo import run_demo

    run_demo(Path(args.out))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    """Read a vitlens / timm / Hugging Face / torchvision checkpoint and write it in another layout."""
    from .checkpoint import convert

    overrides = {"img_size": args.img_size} if args.img_size else {}
    try:
        out = convert(
            args.src, args.dst, args.to, legacy_hf=args.legacy_hf_names, preset=args.preset,
            num_heads=args.num_heads, strict=not args.no_strict, pos_interp=args.pos_interp, **overrides,
        )
    except (ValueError, OSError) as e:
        print(f"vitlens convert: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({args.to})")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    """Overlays per method, a head grid, a distance plot and a JSON of numbers per image (torchrun-ready)."""
    from .data.files import collect_image_paths
    from .pictures import METHODS, explain_files, load_model

    methods = [m for spec in args.method for m in spec.split(",") if m] if args.method else list(METHODS)
    try:
        paths = collect_image_paths(args.image)
        model = load_model(args.model)
        records = explain_files(model, paths, Path(args.out), methods, args.target, args.layer, args.top_k)
    except (ValueError, OSError) as e:
        print(f"vitlens explain: error: {e}", file=sys.stderr)
        return 2
    if records is not None:
        print(f"explained {len(records)} image(s) into {args.out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    """One self-contained HTML attention explorer for a few images."""
    from .data.files import collect_image_paths
    from .pictures import load_model
    from .report import build

    try:
        paths = collect_image_paths(args.image)
        model = load_model(args.model)
        path = build(model, paths, args.out, target=args.target, top_k=args.top_k)
    except (ValueError, OSError) as e:
        print(f"vitlens report: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {len(paths)} image(s))")
    return 0


def _add_image_arguments(p: argparse.ArgumentParser) -> None:
    """What ``explain`` and ``report`` share: the model, the images, the target class."""
    p.add_argument("--model", required=True, help="checkpoint folder or file (vitlens, timm, HF), or a preset name")
    p.add_argument("--image", required=True, nargs="+", action="extend", help="image files, folders or glob patterns")
    p.add_argument("--target", type=int, default=None, help="class to explain (default: the prediction)")
    p.add_argument("--top-k", type=int, default=5, help="how many predictions to list (default: 5)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitlens", description="A Vision Transformer whose attention you can see.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the demo on bundled data and write pictures")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("explain", help="overlays, head grids, distance plots and numbers for image files")
    _add_image_arguments(p)
    p.add_argument("--method", action="append", help="cls, rollout, grad-rollout, gae; repeat or comma-separate "
                   "(default: all)")
    p.add_argument("--layer", type=int, default=-1, help="layer of the per-head grid (default: -1, the last)")
    p.add_argument("--out", required=True, help="output folder: <out>/<image>/*.png and <out>/explain.json")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("report", help="write a self-contained HTML attention explorer")
    _add_image_arguments(p)
    p.add_argument("--out", default="report.html", help="HTML file to write (default: report.html)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("convert", help="convert a checkpoint between vitlens, timm, Hugging Face and torchvision")
    p.add_argument("src", help="checkpoint folder or file (format detected from its keys)")
    p.add_argument("dst", help="output: a folder for vitlens/hf, a .safetensors or .pth file for timm/torchvision")
    p.add_argument("--to", default="vitlens", choices=("vitlens", "timm", "hf", "torchvision"),
                   help="output layout (default: vitlens)")
    p.add_argument("--preset", help="timm model name supplying what the weights cannot show (heads, pooling)")
    p.add_argument("--num-heads", type=int, help="number of attention heads, when no config or name says it")
    p.add_argument("--img-size", type=int, help="resample the position embeddings to this image size")
    p.add_argument("--pos-interp", choices=("timm", "hf", "torchvision"),
                   help="resampling rule for --img-size (default: the source library's)")
    p.add_argument("--no-strict", action="store_true", help="load what fits and warn about the rest")
    p.add_argument("--legacy-hf-names", action="store_true", help="write transformers 4.x key names (--to hf)")
    p.set_defaults(func=_cmd_convert)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
