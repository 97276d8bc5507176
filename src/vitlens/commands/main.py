"""The ``vitlens`` command line: the parser, one handler per sub-command, and one error boundary.

Each sub-command is a ``_cmd_<name>(args)`` function registered in :func:`build_parser`; the
heavy modules are imported inside them, so ``vitlens --help`` is quick. Every error a handler
raises for a reason the user can act on ends in :func:`main`, which prints one line and exits
non-zero; a missing optional package names the extra that brings it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import typing
from pathlib import Path
from typing import Any

# The optional packages a command may need, by import name, and the extra that installs them.
EXTRAS = {
    "torchvision": "report",
    "PIL": "viz",
    "matplotlib": "viz",
    "numpy": "viz",
    "tqdm": "report",
    "safetensors": "report",
    "sklearn": "train",
    "skimage": "train",
    "timm": "compat",
    "transformers": "compat",
    "huggingface_hub": "compat",
    "open_clip": "clip",
    "pytorch_grad_cam": "methods",
    "captum": "methods",
    "vit_pytorch": "bench",
}
# What each command always needs beyond torch, checked before it starts (not after an hour of training).
REQUIRES = {
    "demo": ("torchvision", "sklearn", "matplotlib", "PIL", "safetensors"),
    "train": ("torchvision", "matplotlib", "safetensors"),
    "eval": ("torchvision", "matplotlib", "safetensors"),
    "explain": ("torchvision", "matplotlib", "PIL", "tqdm", "safetensors"),
    "report": ("torchvision", "matplotlib", "PIL", "numpy", "safetensors"),
    "convert": ("safetensors",),
}
EXIT_ERROR, EXIT_STOPPED, EXIT_INTERRUPTED = 2, 3, 130


class StoppedError(RuntimeError):
    """A run that started and had to stop (e.g. the loss became NaN): exit status 3."""


def _cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default data; see :mod:`vitlens.commands.demo`."""
    from .demo import run_demo

    run_demo(Path(args.out), seed=args.seed, epochs=args.epochs)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    """Train a preset on a data source (also under torchrun); or continue a run with --resume."""
    from ..training import NonFiniteLossError, TrainConfig, resume, train

    try:
        if args.resume:
            result = resume(args.resume, device=args.device)
        else:
            values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
            values["model_overrides"] = dict(values["model_overrides"])
            result = train(TrainConfig(**values))
    except NonFiniteLossError as e:
        raise StoppedError(str(e)) from e
    if result.last is not None and result.out is not None:
        print(f"best top-1 {result.best_top1:.2%}, last {result.last.top1:.2%}, {result.seconds:.0f} s -> {result.out}")
    return 0


def _parse_override(text: str) -> tuple[str, object]:
    """``name=value`` for --set; the value is read as JSON when it parses (numbers, true, lists)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--set expects NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _cmd_eval(args: argparse.Namespace) -> int:
    """Top-1/top-5, per-class accuracy and a confusion matrix of any checkpoint vitlens.load reads."""
    from ..training import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.model,
        args.data,
        out=args.out,
        batch_size=args.batch_size,
        device=args.device,
        data_root=args.data_root,
        strict=args.strict,
    )
    if result is not None:
        worst = sorted(result.per_class.items(), key=lambda kv: kv[1])[:3]
        print(
            f"top-1 {result.top1:.2%}  top-5 {result.top5:.2%}  on {result.count} images; weakest classes: "
            + ", ".join(f"{name} {acc:.1%}" for name, acc in worst)
        )
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    """Read a vitlens / timm / Hugging Face / torchvision checkpoint and write it in another layout."""
    from ..checkpoint import convert

    out = convert(
        args.src,
        args.dst,
        args.to,
        legacy_hf=args.legacy_hf_names,
        preset=args.preset,
        num_heads=args.num_heads,
        strict=not args.no_strict,
        pos_interp=args.pos_interp,
        img_size=args.img_size,
    )
    print(f"wrote {out} ({args.to})")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    """Overlays per method, a head grid, a distance plot and a JSON of numbers per image (torchrun-ready)."""
    from ..data.files import collect_image_paths
    from .explain import explain_files, load_model

    methods = [m for spec in args.method for m in spec.split(",") if m] if args.method else None
    paths = collect_image_paths(args.image)
    model = load_model(args.model)
    records = explain_files(
        model,
        paths,
        Path(args.out),
        methods,
        args.target,
        args.layer,
        args.top_k,
        texts=args.text,
        references=[Path(p) for p in args.target_image],
        region=args.region,
    )
    if records is not None:
        print(f"explained {len(records)} image(s) into {args.out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    """One self-contained HTML attention explorer for a few images."""
    from ..data.files import collect_image_paths
    from ..viz.report import build
    from .explain import load_model

    paths = collect_image_paths(args.image)
    model = load_model(args.model)
    references = [Path(p) for p in args.target_image]
    methods = [m for spec in args.method for m in spec.split(",") if m]
    path = build(
        model,
        paths,
        args.out,
        target=args.target,
        texts=args.text,
        references=references,
        methods=methods,
        top_k=args.top_k,
    )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {len(paths)} image(s))")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    """Speed of a preset against timm, Hugging Face, torchvision and vit-pytorch; see :mod:`vitlens.bench`."""
    import torch

    from ..bench import BenchCase, default_dtype, machine_info, matmul_peak_gflops, run_case, write_results

    modes = tuple(m for m in ",".join(args.modes).split(",") if m)
    case = BenchCase(args.model, args.model, args.batch, args.img_size, *([modes] if modes else []))
    case.build()  # a bad preset, size or mode fails here, before anything is timed
    device = torch.device(args.device)
    dtype = default_dtype(device)
    peak = matmul_peak_gflops(device, dtype)
    result = run_case(case, [p for p in args.peers.split(",") if p], args.repeats, device, dtype, peak)
    if args.out:
        report = {"machine": machine_info(device), "dtype": str(dtype), "matmul_peak_gflops": peak, "cases": [result]}
        json_path, md_path = write_results(report, args.out, stem=args.model)
        print(f"wrote {json_path} and {md_path}")
    return 0


def _parse_region(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    try:
        box = tuple(float(v) for v in parts)
    except ValueError:
        box = ()
    if len(box) != 4:
        raise argparse.ArgumentTypeError(f"a region is four numbers x0,y0,x1,y1 (pixels), got {text!r}")
    return box


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of dataclass ``cls`` that carries ``help`` metadata (``batch_size`` -> ``--batch-size``).

    Types come from the annotations; booleans get ``--x/--no-x``; a ``dict`` field is a repeatable
    ``NAME=VALUE`` flag; ``choices``, ``flag`` and ``metavar`` metadata are passed on.
    """
    types = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        meta, kind = f.metadata, types[f.name]
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        options: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        if "metavar" in meta:
            options["metavar"] = meta["metavar"]
        base = [t for t in typing.get_args(kind) if t is not type(None)] or [kind]
        if typing.get_origin(kind) is dict:
            parser.add_argument(flag, action="append", type=_parse_override, default=[], **options)
        elif base[0] is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, **options)
        else:
            parser.add_argument(flag, type=base[0], default=f.default, choices=meta.get("choices"), **options)


def _add_image_arguments(p: argparse.ArgumentParser) -> None:
    """What ``explain`` and ``report`` share: the model, the images, the targets."""
    p.add_argument("--model", required=True, help="checkpoint folder or file (vitlens, timm, HF), or a preset name")
    p.add_argument("--image", required=True, nargs="+", action="extend", help="image files, folders or glob patterns")
    p.add_argument("--target", type=int, default=None, help="class to explain (default: the prediction)")
    p.add_argument(
        "--text", action="append", default=[], help="explain the similarity to this text (CLIP, SigLIP); repeatable"
    )
    p.add_argument(
        "--target-image",
        action="append",
        default=[],
        metavar="IMAGE",
        help="explain the similarity to this image's embedding; repeatable",
    )
    p.add_argument("--top-k", type=int, default=5, help="how many predictions to list (default: 5)")


def build_parser() -> argparse.ArgumentParser:
    from ..bench.cases import MODES
    from ..bench.contenders import PEERS
    from ..checkpoint.convert import FORMATS
    from ..config import POS_INTERPOLATIONS
    from ..explain import ATTRIBUTIONS
    from ..training.config import TrainConfig
    from .methods import DEFAULT_METHODS, METHODS

    parser = argparse.ArgumentParser(prog="vitlens", description="A Vision Transformer whose attention you can see.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="train vit_digits on the bundled digits, evaluate, draw its attention")
    p.add_argument("--out", default="runs/demo", help="output folder, replaced on each run (default: runs/demo)")
    p.add_argument("--epochs", type=int, help="train for fewer or more epochs than the recipe's")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "train",
        help="train a ViT (runs data-parallel under torchrun)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_dataclass_arguments(p, TrainConfig)
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="accuracy, per-class accuracy and confusion matrix of a checkpoint")
    p.add_argument("--model", required=True, help="checkpoint folder or file that vitlens.load reads")
    p.add_argument("--data", required=True, help="data source, as for train (its held-out split is used)")
    p.add_argument("--data-root", help="where torchvision data sets live")
    p.add_argument("--strict", action="store_true", help="fail on unreadable image files instead of skipping them")
    p.add_argument("--out", help="folder for eval.json and confusion.png (default: the checkpoint folder)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("explain", help="overlays, head grids, distance plots and numbers for image files")
    _add_image_arguments(p)
    p.add_argument(
        "--method",
        action="append",
        help=f"{', '.join(DEFAULT_METHODS)} (the default: all that apply), "
        f"{', '.join(m for m in METHODS if m not in DEFAULT_METHODS)}; repeat or comma-separate",
    )
    p.add_argument(
        "--region",
        type=_parse_region,
        metavar="X0,Y0,X1,Y1",
        help="a box in pixels of the model's input: explain its features, and map what is like it",
    )
    p.add_argument("--layer", type=int, default=-1, help="layer of the per-head grid (default: -1, the last)")
    p.add_argument("--out", required=True, help="output folder: <out>/<image>/*.png and <out>/explain.json")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("report", help="write a self-contained HTML attention explorer")
    _add_image_arguments(p)
    p.add_argument(
        "--method",
        action="append",
        default=[],
        help=f"more views: {', '.join(ATTRIBUTIONS)}; repeat or comma-separate",
    )
    p.add_argument("--out", default="report.html", help="HTML file to write (default: report.html)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("convert", help="convert a checkpoint between vitlens, timm, Hugging Face and torchvision")
    p.add_argument("src", help="checkpoint folder or file (format detected from its keys)")
    p.add_argument("dst", help="output: a folder (vitlens, hf, timm) or a .safetensors / .pth file (timm, torchvision)")
    p.add_argument("--to", default="vitlens", choices=FORMATS, help="output layout (default: vitlens)")
    p.add_argument("--preset", help="timm model name supplying what the weights cannot show (heads, pooling)")
    p.add_argument("--num-heads", type=int, help="number of attention heads, when no config or name says it")
    p.add_argument("--img-size", type=int, help="resample the position embeddings to this image size")
    p.add_argument(
        "--pos-interp",
        choices=POS_INTERPOLATIONS,
        help="resampling rule for --img-size (default: the source library's)",
    )
    p.add_argument("--no-strict", action="store_true", help="load what fits and warn about the rest")
    p.add_argument("--legacy-hf-names", action="store_true", help="write transformers 4.x key names (--to hf)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("bench", help="time a preset against timm, Hugging Face, torchvision (same weights)")
    p.add_argument("--model", default="vit_small_patch16_224", help="preset name (default: vit_small_patch16_224)")
    p.add_argument("--batch", type=int, default=8, help="images per call (default: 8)")
    p.add_argument("--img-size", type=int, help="image size (default: the preset's)")
    p.add_argument(
        "--modes",
        action="append",
        default=[],
        help=f"comma-separated, from {', '.join(MODES)} (default: plain,maps_all,maps_last,train)",
    )
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, from {', '.join(PEERS)} (default: all)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per contender (default: 5)")
    p.add_argument("--device", default="cpu", help="cpu (fp32) or cuda (bf16, flash attention)")
    p.add_argument("--out", help="folder for <model>.json and <model>.md (default: print only)")
    p.add_argument(
        "--system-allocator",
        action="store_true",
        help="time with the C library's default malloc settings (see vitlens.allocator)",
    )
    p.set_defaults(func=_cmd_bench)

    return parser


def _require(modules: tuple[str, ...]) -> None:
    """``ModuleNotFoundError`` for the first of ``modules`` that is not installed."""
    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def _missing_package(error: ModuleNotFoundError, command: str) -> str:
    """What to install for a missing optional package, named by its extra."""
    package = (error.name or "").split(".")[0]
    extra = EXTRAS.get(package)
    if extra is None:
        return f"cannot import {error.name!r} ({error})"
    return f"`vitlens {command}` needs the package {package!r}: pip install 'vitlens[{extra}]'"


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command; every user-facing failure is one ``vitlens CMD: error: ...`` line and exit 2."""
    args = build_parser().parse_args(argv)
    if not getattr(args, "system_allocator", False):
        from ..allocator import tune_cpu_allocator

        tune_cpu_allocator()  # this process is ours: keep freed memory for the next forward
    try:
        _require(REQUIRES.get(args.command, ()))
        return int(args.func(args) or 0)
    except StoppedError as e:
        print(f"vitlens {args.command}: stopped: {e}", file=sys.stderr)
        return EXIT_STOPPED
    except ModuleNotFoundError as e:
        print(f"vitlens {args.command}: error: {_missing_package(e, args.command)}", file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, OSError, RuntimeError, ImportError) as e:  # CheckpointError is a ValueError
        print(f"vitlens {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"vitlens {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
