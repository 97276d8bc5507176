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

    run_demo(Path(args.out), seed=args.seed, epochs=args.epochs)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    """Train a preset on a data source (also under torchrun); or continue a run with --resume."""
    from .train import NonFiniteLossError, TrainConfig, resume, train

    try:
        if args.resume:
            result = resume(args.resume, device=args.device)
        else:
            overrides = dict(_parse_override(text) for text in args.set)
            config = TrainConfig(
                model=args.model,
                model_overrides=overrides,
                data=args.data,
                data_root=args.data_root,
                strict=args.strict,
                out=args.out,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                min_lr=args.min_lr,
                weight_decay=args.weight_decay,
                warmup_epochs=args.warmup_epochs,
                clip_grad=args.clip_grad,
                label_smoothing=args.label_smoothing,
                augment=args.augment,
                mixup=args.mixup,
                cutmix=args.cutmix,
                ema=args.ema,
                amp=args.amp,
                compile=args.compile,
                seed=args.seed,
                workers=args.workers,
                device=args.device,
                overwrite=args.overwrite,
                log_every=args.log_every,
            )
            result = train(config)
    except NonFiniteLossError as e:
        print(f"vitlens train: stopped: {e}", file=sys.stderr)
        return 3
    except (ValueError, OSError, RuntimeError) as e:
        print(f"vitlens train: error: {e}", file=sys.stderr)
        return 2
    if result.last is not None and result.out is not None:
        print(f"best top-1 {result.best_top1:.2%}, last {result.last.top1:.2%}, {result.seconds:.0f} s -> {result.out}")
    return 0


def _parse_override(text: str) -> tuple[str, object]:
    """``name=value`` for --set; the value is read as JSON when it parses (numbers, true, lists)."""
    import json

    name, sep, value = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"vitlens train: --set expects name=value, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _cmd_eval(args: argparse.Namespace) -> int:
    """Top-1/top-5, per-class accuracy and a confusion matrix of any checkpoint vitlens.load reads."""
    from .evaluate import evaluate_checkpoint

    try:
        result = evaluate_checkpoint(
            args.model,
            args.data,
            out=args.out,
            batch_size=args.batch_size,
            device=args.device,
            data_root=args.data_root,
            strict=args.strict,
        )
    except (ValueError, OSError, RuntimeError) as e:
        print(f"vitlens eval: error: {e}", file=sys.stderr)
        return 2
    if result is not None:
        worst = sorted(result.per_class.items(), key=lambda kv: kv[1])[:3]
        print(
            f"top-1 {result.top1:.2%}  top-5 {result.top5:.2%}  on {result.count} images; weakest classes: "
            + ", ".join(f"{name} {acc:.1%}" for name, acc in worst)
        )
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    """Read a vitlens / timm / Hugging Face / torchvision checkpoint and write it in another layout."""
    from .checkpoint import convert

    overrides = {"img_size": args.img_size} if args.img_size else {}
    try:
        out = convert(
            args.src,
            args.dst,
            args.to,
            legacy_hf=args.legacy_hf_names,
            preset=args.preset,
            num_heads=args.num_heads,
            strict=not args.no_strict,
            pos_interp=args.pos_interp,
            **overrides,
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


def _cmd_bench(args: argparse.Namespace) -> int:
    """Speed of a preset against timm, Hugging Face, torchvision and vit-pytorch; see :mod:`vitlens.bench`."""
    import torch

    from .bench import BenchCase, default_dtype, machine_info, matmul_peak_gflops, run_case, write_results

    modes = tuple(m for m in ",".join(args.modes).split(",") if m)
    try:
        case = BenchCase(args.model, args.model, args.batch, args.img_size)
        if modes:
            case = BenchCase(args.model, args.model, args.batch, args.img_size, modes)
        case.build()  # a bad preset, size or mode fails here, before anything is timed
        device = torch.device(args.device)
        dtype = default_dtype(device)
        peak = matmul_peak_gflops(device, dtype)
        result = run_case(case, [p for p in args.peers.split(",") if p], args.repeats, device, dtype, peak)
    except (ValueError, RuntimeError) as e:
        print(f"vitlens bench: error: {e}", file=sys.stderr)
        return 2
    if args.out:
        report = {"machine": machine_info(device), "dtype": str(dtype), "matmul_peak_gflops": peak, "cases": [result]}
        json_path, md_path = write_results(report, args.out, stem=args.model)
        print(f"wrote {json_path} and {md_path}")
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

    p = sub.add_parser("demo", help="train vit_digits on the bundled digits, evaluate, draw its attention")
    p.add_argument("--out", default="runs/demo", help="output folder, replaced on each run (default: runs/demo)")
    p.add_argument("--epochs", type=int, help="train for fewer or more epochs than the recipe's 30")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)

    from .data.augment import AUGMENTS
    from .train import TrainConfig

    d = TrainConfig()  # the defaults: the vit_digits recipe
    p = sub.add_parser(
        "train",
        help="train a ViT (runs data-parallel under torchrun)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default=d.model, help="preset name")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a model config field, e.g. --set depth=6 (repeatable)",
    )
    p.add_argument(
        "--data",
        default=d.data,
        help="digits, cluttered-digits, imagefolder:PATH, cifar10, cifar100, mnist, fashion-mnist, fake",
    )
    p.add_argument(
        "--data-root", help="where torchvision data sets live (default: $VITLENS_DATA or ~/.cache/vitlens/datasets)"
    )
    p.add_argument("--strict", action="store_true", help="fail on unreadable image files instead of skipping them")
    p.add_argument("--out", default=d.out, help="run folder")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch, split over processes")
    p.add_argument("--lr", type=float, default=d.lr, help="peak AdamW learning rate")
    p.add_argument("--min-lr", type=float, default=d.min_lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--clip-grad", type=float, default=d.clip_grad, help="max gradient norm, 0 = off")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--augment", default=d.augment, choices=AUGMENTS)
    p.add_argument("--mixup", type=float, default=d.mixup, help="MixUp alpha, 0 = off")
    p.add_argument("--cutmix", type=float, default=d.cutmix, help="CutMix alpha, 0 = off")
    p.add_argument("--ema", type=float, default=d.ema, help="EMA decay per step (e.g. 0.999), 0 = off")
    p.add_argument("--amp", default=d.amp, choices=("auto", "bf16", "none"), help="bf16 autocast; auto = on CUDA only")
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward (worth it on GPUs)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workers", type=int, default=d.workers, help="data-loader worker processes")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--log-every", type=int, default=d.log_every, help="steps between metrics.jsonl loss lines")
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
        "--method", action="append", help="cls, rollout, grad-rollout, gae; repeat or comma-separate (default: all)"
    )
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
    p.add_argument(
        "--to",
        default="vitlens",
        choices=("vitlens", "timm", "hf", "torchvision"),
        help="output layout (default: vitlens)",
    )
    p.add_argument("--preset", help="timm model name supplying what the weights cannot show (heads, pooling)")
    p.add_argument("--num-heads", type=int, help="number of attention heads, when no config or name says it")
    p.add_argument("--img-size", type=int, help="resample the position embeddings to this image size")
    p.add_argument(
        "--pos-interp",
        choices=("timm", "hf", "torchvision"),
        help="resampling rule for --img-size (default: the source library's)",
    )
    p.add_argument("--no-strict", action="store_true", help="load what fits and warn about the rest")
    p.add_argument("--legacy-hf-names", action="store_true", help="write transformers 4.x key names (--to hf)")
    p.set_defaults(func=_cmd_convert)

    from .bench import MODES, PEERS

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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not getattr(args, "system_allocator", False):
        from .allocator import tune_cpu_allocator

        tune_cpu_allocator()  # this process is ours: keep freed memory for the next forward
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
