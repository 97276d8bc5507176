"""Where the time of an all-layer maps forward goes: vitlens's maps path and timm's, op by op.

    .venv/bin/python benchmarks/maps_profile.py                        # ViT-S/16, batch 8, allocator tuned
    .venv/bin/python benchmarks/maps_profile.py --system-allocator     # glibc's defaults
    .venv/bin/python benchmarks/maps_profile.py --model vit_tiny_patch16_224 --batch 8

Both models hold the same weights; timm's maps come from ``timm.utils.AttentionExtract`` on its
unfused attention (``q * scale @ kᵀ → softmax → @ v``), as in ``make bench``. Each is profiled with
``torch.profiler`` over ``--repeats`` forwards after a warm-up; the table gives each aten op's own
CPU time per forward and the wall time of both, measured in turn, and of vitlens without maps, with the
CPU model: the numbers to compare when the maps path is slower on one kind of CPU than on another.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

from vitlens import create_model, tune_cpu_allocator
from vitlens.bench import interleaved_times, machine_info
from vitlens.bench.contenders import timm_contender

RESULTS = Path(__file__).parent / "results"


def op_times(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """Each aten op's own CPU time, ms per call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    per_op: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        per_op[event.key] += event.self_cpu_time_total / 1e3 / repeats
    return per_op


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="profiled forwards per library")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timed rounds")
    parser.add_argument("--rows", type=int, default=14, help="ops shown, the costliest first")
    parser.add_argument("--system-allocator", action="store_true", help="keep glibc's malloc defaults")
    parser.add_argument("--stem", default="maps_profile")
    args = parser.parse_args(argv)
    if not args.system_allocator:
        tune_cpu_allocator()
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    timm_maps = timm_contender(model, args.model).maps_all
    x = torch.randn(args.batch, model.config.in_chans, *model.config.img_hw)
    fns = {
        "vitlens maps": lambda: model(x, return_attention=True),
        "timm maps": lambda: timm_maps(x),
        "vitlens plain": lambda: model(x),
    }
    with torch.inference_mode():
        for fn in fns.values():
            fn(), fn()
        ops = {name: op_times(fns[name], args.repeats) for name in ("vitlens maps", "timm maps")}
        wall = {name: statistics.median(t) * 1e3 for name, t in interleaved_times(fns, args.rounds).items()}
    info = machine_info(torch.device("cpu"))
    ours, theirs, ours_ms = ops["vitlens maps"], ops["timm maps"], wall["vitlens maps"]
    shown = sorted(set(ours) | set(theirs), key=lambda k: -(ours.get(k, 0.0) + theirs.get(k, 0.0)))[: args.rows]
    lines = [
        f"# All-layer maps, op by op: {args.model}, batch {args.batch}",
        "",
        f"Machine: {info.get('cpu', '?')}, {info['threads']} threads, torch {info['torch']}, timm "
        f"{info.get('timm', '?')}; CPU allocator: {info['allocator']}. Own CPU time per forward "
        f"({args.repeats} profiled forwards each); wall time: median of {args.rounds} rounds, the order rotated.",
        "",
        "| aten op | vitlens ms | timm ms |",
        "| --- | ---: | ---: |",
        *(f"| `{k}` | {ours.get(k, 0.0):.1f} | {theirs.get(k, 0.0):.1f} |" for k in shown),
        f"| all ops | {sum(ours.values()):.1f} | {sum(theirs.values()):.1f} |",
        "",
        f"Wall ms per forward: vitlens maps {ours_ms:.1f}, timm maps {wall['timm maps']:.1f}, vitlens plain "
        f"{wall['vitlens plain']:.1f} (maps speed ÷ own plain {wall['vitlens plain'] / ours_ms:.3f}, "
        f"÷ timm's maps {wall['timm maps'] / ours_ms:.3f}).",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
