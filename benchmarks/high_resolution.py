"""High resolution: what the maps and explanations of DINOv2-S/14 at 1036 px cost, in memory and time.

    .venv/bin/python benchmarks/high_resolution.py                  # ~25 min on 2 CPU cores
    .venv/bin/python benchmarks/high_resolution.py --size 518 --repeats 2
    .venv/bin/python benchmarks/high_resolution.py --device cuda    # -> high_resolution_cuda.{md,json}

Each mode's peak memory is measured in a fresh process (``python -m vitlens.bench.memory``:
the resident-set high-water mark of one call, minus what the process held before it), the median of
``--memory-repeats`` processes (the allocator moves a single one by ±25 MiB; unbounded GAE, at
19 GB and 90 s, once); times are medians of interleaved calls in one process, every other round in
reverse order, and each speed ratio is the median of the rounds' paired ratios. Modes: plain
inference, the class token's rows of the last layer (``queries="cls"``), the last layer's full
maps, rollout (streamed, and its readout row alone: ``rows=True``), GAE and GAE with bounded memory
(``bounded=True``), AttnLRP (fused attention in its backward: no maps at all). Targets: class rows
<= 1.10x plain memory and >= 0.95x plain speed; bounded GAE <= 3x plain memory. On a GPU the memory
is the CUDA allocator's peak during the call minus what it held before, in float32 as on the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from vitlens import tune_cpu_allocator
from vitlens.bench import BenchCase, machine_info
from vitlens.bench.memory import GRADIENT_MODES, _explanations, measure_memory

MODES = ("plain", "cls_rows", "maps_last", "rollout_stream", "rollout_rows", "gae", "gae_bounded", "attnlrp")
RESULTS = Path(__file__).parent / "results"


def call(model, mode: str, x: torch.Tensor):
    if mode == "plain":
        return model(x)
    if mode == "maps_last":
        return model(x, return_attention=[-1])
    return _explanations()[mode](model, x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1036)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--stem", default=None, help="file name stem (default high_resolution, _cuda on a GPU)")
    parser.add_argument("--memory-repeats", type=int, default=3)
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    device = torch.device(args.device)
    stem = args.stem or ("high_resolution_cuda" if device.type == "cuda" else "high_resolution")
    tune_cpu_allocator()
    case = BenchCase(f"dinov2_s14_{args.size}", "vit_small_patch14_dinov2", 1, args.size, ("plain",))
    memory = {}
    for mode in modes:
        processes = 1 if mode == "gae" else max(1, args.memory_repeats)
        runs = [measure_memory(case, "vitlens", mode, args.device) for _ in range(processes)]
        memory[mode] = sorted(runs, key=lambda r: r["forward_bytes"])[len(runs) // 2]  # the median run
        seen = ", ".join(f"{r['forward_bytes'] / 2**20:.0f}" for r in runs)
        print(f"memory {mode:15s} {memory[mode]['forward_bytes'] / 2**20:9.1f} MiB (runs: {seen})", flush=True)
    torch.manual_seed(0)
    model = case.build().eval().to(device)
    x = torch.randn(1, 3, args.size, args.size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {m: [] for m in modes}
    for round_ in range(args.repeats):
        for mode in modes if round_ % 2 == 0 else modes[::-1]:  # no mode always runs right after another
            with torch.inference_mode(mode not in GRADIENT_MODES):
                sync()
                start = time.perf_counter()
                call(model, mode, x)
                sync()
                times[mode].append(time.perf_counter() - start)
        print("round:", {m: round(t[-1], 2) for m, t in times.items()}, flush=True)
    plain_mem = memory["plain"]["forward_bytes"]
    rows = {
        m: {
            "forward_mib": memory[m]["forward_bytes"] / 2**20,
            "peak_mib": memory[m]["peak_bytes"] / 2**20,
            "memory_vs_plain": memory[m]["forward_bytes"] / plain_mem,
            "seconds": statistics.median(times[m]),
            # paired: each round's plain time over the mode's, so a drifting machine cancels out
            "speed_vs_plain": statistics.median(p / t for p, t in zip(times["plain"], times[m])),
        }
        for m in modes
    }
    info = machine_info(device)
    result = {"machine": info, "case": case.name, "repeats": args.repeats, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"# {case.name}: DINOv2-S/14 at {args.size}x{args.size}, batch 1",
        "",
        f"Machine: {info.get('gpu') or info.get('cpu', '?')}, {info['threads']} CPU threads, torch {info['torch']}; "
        f"{'float32 on the GPU' if device.type == 'cuda' else 'allocator tuned'}; {args.repeats} interleaved rounds, "
        "every other one in reverse order; seconds: the median, "
        "speed × plain: the median of the rounds' plain ÷ mode ratios. Memory: one call in a fresh process, "
        "the high-water mark minus what the process held before the call; the median of "
        f"{args.memory_repeats} processes (unbounded GAE: one).",
        "",
        "| mode | extra memory MiB | × plain | seconds | speed × plain |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for m, r in rows.items():
        lines.append(
            f"| {m} | {r['forward_mib']:.0f} | {r['memory_vs_plain']:.2f} | {r['seconds']:.2f} | "
            f"{r['speed_vs_plain']:.2f} |"
        )
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
