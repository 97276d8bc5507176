"""Benchmark results as JSON and markdown tables, written whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..atomic import write_text


def to_markdown(report: dict[str, Any]) -> str:
    """The results as markdown tables: one per case, one row per (mode, contender)."""
    m = report["machine"]
    out = [
        "# vitlens speed",
        "",
        f"Machine: {m.get('cpu', m['platform'])}, {m['threads']} threads, torch {m['torch']}, device {m['device']}, "
        f"CPU allocator: {m.get('allocator', 'system default')}; "
        f"matmul peak {report['matmul_peak_gflops']:.0f} GFLOP/s ({report['dtype']}), "
        "the best of the per-case measurements in the same process.",
        f"Peers: timm {m.get('timm', '-')}, transformers {m.get('transformers', '-')}, "
        f"torchvision {m.get('torchvision', '-')}, vit-pytorch {m.get('vit_pytorch', '-')}.",
        "",
        "Median over repeats, [min-max]; *vs vitlens* is the peer's time / vitlens's time "
        "(> 1: vitlens is faster). Maps rows: `vitlens (plain)` is vitlens without maps in the same rotation.",
        "",
    ]
    for case in report["cases"]:
        c = case["case"]
        out += [
            f"## {c['name']}: {c['model']}, batch {c['batch']}" + (f", {c['img_size']} px" if c["img_size"] else ""),
            "",
        ]
        out += [f"Matmul peak measured just before this case: {case['matmul_peak_gflops']:.0f} GFLOP/s.", ""]
        if case.get("skipped_modes"):
            out += [f"Modes not run: {', '.join(f'{k} ({v})' for k, v in case['skipped_modes'].items())}.", ""]
        if case.get("skipped_peers"):
            out += [f"Not measured: {', '.join(f'{k} ({v})' for k, v in case['skipped_peers'].items())}.", ""]
        for mode, rows in case["modes"].items():
            if mode == "memory":
                out += ["| memory (one forward, own process) | peak RSS MiB | forward MiB |", "| --- | ---: | ---: |"]
                out += [
                    f"| {k} | {v['peak_bytes'] / 2**20:.1f} | {v['forward_bytes'] / 2**20:.1f} |"
                    for k, v in rows.items()
                ]
            elif mode == "explain":
                out += [
                    "| explanation | batched ms/img | batch-1 loop ms/img | speed-up |",
                    "| --- | ---: | ---: | ---: |",
                ]
                out += [
                    f"| {k} | {v['batched_ms_per_image']:.2f} | {v['loop_ms_per_image']:.2f} | {v['speedup']:.1f}x |"
                    for k, v in rows.items()
                ]
            else:
                out += [f"| {mode} | ms | img/s | GFLOP/s | % peak | vs vitlens |", "| --- | " + "---: | " * 5]
                out += [_markdown_row(k, v) for k, v in rows.items()]
            out.append("")
        if case.get("notes"):
            out += [f"- {k}: {v}" for k, v in case["notes"].items()] + [""]
    return "\n".join(out)


def _markdown_row(name: str, v: dict[str, float]) -> str:
    spread = f"{v['median_ms']:.1f} [{v['min_ms']:.1f}-{v['max_ms']:.1f}]"
    return (
        f"| {name} | {spread} | {v['images_per_s']:.1f} | {v['gflops']:.0f} | {v['pct_of_peak']:.0f} "
        f"| {v['vitlens_speedup']:.3f} |"
    )


def write_results(report: dict[str, Any], directory: str | Path, stem: str = "speed") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` atomically (temp file + rename)."""
    directory = Path(directory)
    paths = []
    for suffix, text in ((".json", json.dumps(report, indent=2)), (".md", to_markdown(report))):
        path = directory / f"{stem}{suffix}"
        write_text(path, text + "\n")
        paths.append(path)
    return paths[0], paths[1]
