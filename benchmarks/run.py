"""`make bench`: vitlens against timm, Hugging Face, torchvision and vit-pytorch, in one process.

Runs the standard cases (tiny224, small224, base224, cifar, small512) and writes
``benchmarks/results/speed.json`` (every number, plus the machine) and ``speed.md`` (tables).
``--cases cifar,small224`` runs a subset; ``--device cuda`` runs the suite in bf16 on a GPU.
Every library is timed with ``vitlens.tune_cpu_allocator()`` in effect (glibc keeps freed memory
for reuse); ``--system-allocator`` times them with the C library's defaults instead.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from vitlens.allocator import tune_cpu_allocator
from vitlens.bench import CASES, PEERS, run_suite, write_results

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, from {', '.join(PEERS)}")
    parser.add_argument("--modes", default=None, help="comma-separated: run only these of each case's modes")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per contender and mode (default 5)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=str(RESULTS), help="results folder (default benchmarks/results)")
    parser.add_argument("--stem", default=None, help="file name stem (default speed, or speed_cuda on a GPU)")
    parser.add_argument(
        "--system-allocator",
        action="store_true",
        help="keep the C library's default malloc settings instead of vitlens.tune_cpu_allocator()",
    )
    args = parser.parse_args(argv)

    unknown = [c for c in args.cases.split(",") if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; expected some of {list(CASES)}")
    if not args.system_allocator:
        tune_cpu_allocator()  # the same for every library measured in this process
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    start = time.perf_counter()
    cases = [CASES[c] for c in args.cases.split(",")]
    if args.modes:
        wanted = args.modes.split(",")
        cases = [replace(c, modes=tuple(m for m in c.modes if m in wanted)) for c in cases]
    report = run_suite(
        cases,
        peers=[p for p in args.peers.split(",") if p],
        repeats=args.repeats,
        device=args.device,
        log=lambda line: print(line, flush=True),
    )
    report["seconds"] = time.perf_counter() - start
    stem = args.stem or ("speed_cuda" if args.device.startswith("cuda") else "speed")
    json_path, md_path = write_results(report, args.out, stem)
    print(f"wrote {json_path} and {md_path} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
