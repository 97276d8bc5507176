"""What glibc's default malloc settings cost a CPU forward pass, with and without maps.

Runs the same model in fresh processes, alternately with the C library's defaults and with
``vitlens.tune_cpu_allocator()``, and prints the median time and minor page faults per forward:

    .venv/bin/python benchmarks/allocator_effect.py                      # ViT-Ti/16, batch 8
    .venv/bin/python benchmarks/allocator_effect.py --model vit_cifar --batch 128
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

_CHILD = r"""
import json, resource, sys, time, torch
import vitlens
spec = json.loads(sys.argv[1])
tuned = vitlens.tune_cpu_allocator() if spec["tune"] else False
torch.set_num_threads(spec["threads"])
torch.manual_seed(0)
model = vitlens.create_model(spec["model"]).eval()
x = torch.randn(spec["batch"], model.config.in_chans, *model.config.img_hw)
times = {"plain": [], "maps": []}
faults = {"plain": 0, "maps": 0}
with torch.inference_mode():
    for _ in range(2):
        model(x); model(x, return_attention=True)
    for _ in range(spec["repeats"]):
        for mode in ("plain", "maps"):
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            out = model(x, return_attention=mode == "maps")
            del out
            times[mode].append(time.perf_counter() - t0)
            faults[mode] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
print(json.dumps({"tuned": tuned, "times": times, "faults": {k: v / spec["repeats"] for k, v in faults.items()}}))
"""


def run_child(model: str, batch: int, threads: int, repeats: int, tune: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    spec = {"model": model, "batch": batch, "threads": threads, "repeats": repeats, "tune": tune}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(spec)], capture_output=True, text=True, check=False, env=env
    )
    if proc.returncode:
        raise SystemExit(f"the measurement process failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_tiny_patch16_224", help="preset (default vit_tiny_patch16_224)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10, help="timed forwards per mode and process")
    parser.add_argument("--rounds", type=int, default=2, help="process pairs (default, tuned), alternated")
    args = parser.parse_args(argv)

    results: dict[str, dict[str, list[float]]] = {}
    faults: dict[str, dict[str, list[float]]] = {}
    for _ in range(args.rounds):
        for label, tune in (("glibc defaults", False), ("tuned", True)):
            got = run_child(args.model, args.batch, args.threads, args.repeats, tune)
            if tune and not got["tuned"]:
                print("tune_cpu_allocator() had no effect here (not glibc, or MALLOC_*/LD_PRELOAD set)")
            for mode in ("plain", "maps"):
                results.setdefault(label, {}).setdefault(mode, []).extend(got["times"][mode])
                faults.setdefault(label, {}).setdefault(mode, []).append(got["faults"][mode])
    print(f"{args.model}, batch {args.batch}, {args.threads} threads; median ms per forward (page faults)")
    print(f"{'allocator':16s} {'plain':>18s} {'all maps':>18s} {'maps speed ÷ plain':>19s}")
    for label, modes in results.items():
        plain, maps = (statistics.median(modes[m]) * 1e3 for m in ("plain", "maps"))
        fp, fm = (statistics.mean(faults[label][m]) for m in ("plain", "maps"))
        print(f"{label:16s} {plain:8.1f} ({fp:7.0f}) {maps:8.1f} ({fm:7.0f}) {plain / maps:19.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
