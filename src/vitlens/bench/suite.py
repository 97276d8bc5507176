"""Speed measurements: vitlens against timm, Hugging Face, torchvision and vit-pytorch.

Everything is measured in one process, side by side and *interleaved* (each repeat runs every
contender once, in rotating order), so that a busy or throttled machine slows all of them alike
and the ratios stay meaningful. Each contender gets the same weights (copied from the vitlens
model, and checked: logits must agree before anything is timed), the same threads, the same
dtype and the same input.

``vitlens bench`` runs :func:`run_case` for a user's own preset; ``benchmarks/run.py`` runs the
standard cases in :data:`~vitlens.bench.cases.CASES` and writes ``benchmarks/results/speed.{md,json}``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor

from .. import explain
from ..model import VisionTransformer
from .cases import BenchCase
from .contenders import PEERS, Contender, build_contenders, check_same_outputs
from .memory import measure_memory
from .modes import mode_functions
from .timing import interleaved_times, machine_info, matmul_peak_gflops, native_bf16, summarize


def run_case(
    case: BenchCase,
    peers: Sequence[str] = PEERS,
    repeats: int = 5,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    peak_gflops: float | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure every mode of ``case`` for vitlens and ``peers``; returns a JSON-ready dict."""
    device = torch.device(device)
    torch.manual_seed(0)
    model = case.build().to(device=device, dtype=dtype).eval()
    size = case.img_size or model.config.img_hw[0]
    images = torch.randn(case.batch, model.config.in_chans, size, size, device=device, dtype=dtype)
    flops = model.flops_per_image((size, size))
    result: dict[str, Any] = {
        "case": asdict(case),
        "params": model.num_params(),
        "gflop_per_image": flops / 1e9,
        "modes": {},
    }
    if peak_gflops is None:
        peak_gflops = matmul_peak_gflops(device, dtype)
    result["matmul_peak_gflops"] = peak_gflops
    contenders, skipped = build_contenders(model, peers, timm_name=case.model)
    result["skipped_peers"] = skipped
    result["notes"] = {c.name: c.note for c in contenders if c.note}
    result["max_logit_diff"] = check_same_outputs(contenders, images, atol=1e-4 if dtype == torch.float32 else 0.1)

    bf16_ok = native_bf16(device)
    for mode in case.modes:
        if mode.endswith("_bf16") and not bf16_ok:
            result.setdefault("skipped_modes", {})[mode] = "no native bf16 on this device (autocast would emulate it)"
            log(f"{case.name} / {mode}: skipped, no native bf16 on this device")
            continue
        if mode == "memory":
            result["modes"]["memory"] = _memory_rows(case, contenders, str(device), log)
            continue
        if mode == "explain":
            rows = _explain_rows(model, images, repeats, log)
            if rows:
                result["modes"]["explain"] = rows
            continue
        training = mode.startswith("train")
        for c in contenders:
            c.model.train(training)
        fns = mode_functions(mode, contenders, images)
        if not fns:
            continue
        times = interleaved_times(fns, repeats, warmup=2 if mode == "train_compile" else 1, device=device)
        work = flops * case.batch * (3 if training else 1)
        rows = {}
        for name, ts in times.items():
            row = summarize(ts)
            row["images_per_s"] = case.batch / (row["median_ms"] / 1e3)
            row["gflops"] = work / (row["median_ms"] / 1e3) / 1e9
            row["pct_of_peak"] = 100 * row["gflops"] / peak_gflops
            rows[name] = row
        ref = rows.get("vitlens", next(iter(rows.values())))
        for row in rows.values():
            row["vitlens_speedup"] = row["median_ms"] / ref["median_ms"]
        result["modes"][mode] = rows
        log(_format_mode(case.name, mode, rows))
    for c in contenders:
        c.model.eval()
    return result


def _memory_rows(case: BenchCase, contenders: Sequence[Contender], device: str, log: Callable[[str], None]) -> dict:
    rows: dict[str, dict[str, int]] = {}
    jobs = [
        (c.name, mode)
        for c in contenders
        for mode in ("plain", "maps_last", "maps_all")
        if mode == "plain" or (getattr(c, mode) is not None and not (c.name == "hf" and mode == "maps_last"))
    ]
    jobs += [("vitlens", mode) for mode in ("cls_rows", "rollout", "rollout_stream")]
    for name, mode in jobs:
        row = rows[f"{name} {mode}"] = measure_memory(case, name, mode, device)
        log(
            f"  {case.name} memory {name:12s} {mode:14s} peak {row['peak_bytes'] / 2**20:8.1f} MiB "
            f"forward {row['forward_bytes'] / 2**20:8.1f} MiB"
        )
    return rows


def _explain_rows(model: VisionTransformer, images: Tensor, repeats: int, log: Callable[[str], None]) -> dict:
    """Rollout and GAE per image: batched vs a batch-1 loop of the same function."""
    rows: dict[str, Any] = {}
    for name in ("rollout", "gae"):
        fn = getattr(explain, name)
        loop_n = min(4, images.shape[0])

        def batched(fn=fn) -> Any:
            return fn(model, images)

        def looped(fn=fn, loop_n=loop_n) -> Any:
            return [fn(model, images[i : i + 1]) for i in range(loop_n)]

        times = interleaved_times({"batched": batched, "batch-1 loop": looped}, repeats)
        per_image_batched = statistics.median(times["batched"]) / images.shape[0]
        per_image_loop = statistics.median(times["batch-1 loop"]) / loop_n
        rows[name] = {
            "batched_ms_per_image": per_image_batched * 1e3,
            "loop_ms_per_image": per_image_loop * 1e3,
            "speedup": per_image_loop / per_image_batched,
        }
        log(f"  explain {name}: batched {per_image_batched * 1e3:.2f} ms/img, loop {per_image_loop * 1e3:.2f} ms/img")
    return rows


def _format_mode(case: str, mode: str, rows: dict[str, dict]) -> str:
    lines = [f"{case} / {mode}"]
    for name, r in rows.items():
        lines.append(
            f"  {name:18s} {r['median_ms']:9.2f} ms [{r['min_ms']:.2f}-{r['max_ms']:.2f}]  "
            f"{r['images_per_s']:8.1f} img/s  {r['pct_of_peak']:5.1f}% peak  x{r['vitlens_speedup']:.3f}"
        )
    return "\n".join(lines)


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (the eager baseline users run), bf16 on CUDA (where flash attention needs it)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def run_suite(
    cases: Sequence[BenchCase],
    peers: Sequence[str] = PEERS,
    repeats: int = 5,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run several cases after one matmul-peak measurement; returns the full report."""
    device = torch.device(device)
    dtype = default_dtype(device)
    peak = matmul_peak_gflops(device, dtype)
    log(f"matmul peak: {peak:.0f} GFLOP/s ({dtype}) on {device} with {torch.get_num_threads()} threads")
    report: dict[str, Any] = {
        "machine": machine_info(device),
        "dtype": str(dtype),
        "matmul_peak_gflops": peak,
        "cases": [],
    }
    for case in cases:
        # a fresh peak per case: on a shared machine the available speed drifts during the run
        report["cases"].append(run_case(case, peers, repeats, device, dtype, log=log))
        report["matmul_peak_gflops"] = max(report["matmul_peak_gflops"], report["cases"][-1]["matmul_peak_gflops"])
    return report
