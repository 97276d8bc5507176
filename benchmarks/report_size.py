"""Size and speed of the attention explorer for a ViT-B/16 at 224 (12 layers x 12 heads x 197² maps per image).

One command (about a minute on 2 CPU cores)::

    .venv/bin/python benchmarks/report_size.py     # -> benchmarks/results/report_size.{md,json}

Builds the report for a random-init ViT-B/16 on 4 photos (scikit-image's bundled ones, through the
model's own pre-processing), then opens it in headless Chromium and times: page load to the first
map drawn, a switch of layer (first time: that layer's chunk is inflated), a hover over a new patch
(data already in memory), and a switch of image. Random weights give nearly uniform maps, which
compress better than a trained model's, so the raw (uncompressed) size is reported too: it is the
upper bound on what a trained model's report can weigh.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import vitlens

RESULTS = Path(__file__).parent / "results"


def photos() -> list:
    from PIL import Image
    from skimage import data

    return [Image.fromarray(f()) for f in (data.chelsea, data.astronaut, data.coffee, data.rocket)]


def build(path: Path) -> dict:
    torch.manual_seed(0)
    model = vitlens.create_model("vit_base_patch16_224").eval()
    images = photos()
    start = time.perf_counter()
    vitlens.viz.report.build(model, images, path, names=["chelsea", "astronaut", "coffee", "rocket"])
    seconds = time.perf_counter() - start
    depth, heads, tokens, patches = 12, 12, 197, 196
    raw_per_image = depth * heads * tokens * (patches + 4) + depth * tokens * (patches + 4)
    size = path.stat().st_size
    return {
        "model": "vit_base_patch16_224 (random init)",
        "images": len(images),
        "build_seconds": round(seconds, 1),
        "file_bytes": size,
        "file_mb_per_image": round(size / len(images) / 1e6, 2),
        "raw_mb_per_image": round(raw_per_image / 1e6, 2),
        "raw_base64_mb_per_image": round(raw_per_image * 4 / 3 / 1e6, 2),
    }


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def timed(page, action) -> float:
    """Milliseconds from ``action(page)`` until the explorer has drawn the result."""
    before = page.evaluate("window.vitlens.renders")
    start = time.perf_counter()
    action(page)
    page.wait_for_function(f"window.vitlens.renders > {before}")
    return (time.perf_counter() - start) * 1000


def time_one_visit(browser, path: Path) -> dict[str, list[float]]:
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    start = time.perf_counter()
    page.goto(path.as_uri())
    page.wait_for_function("Number(document.body.dataset.renders) >= 1")
    times = {"load": [(time.perf_counter() - start) * 1000]}
    page.locator("#vl-layer").focus()
    times["layer_switch_first"] = [timed(page, lambda pg: pg.keyboard.press("ArrowLeft"))]
    page.keyboard.press("ArrowRight")
    page.wait_for_function("window.vitlens.state.layer === 11")
    times["layer_switch_cached"] = [timed(page, lambda pg: pg.keyboard.press("ArrowLeft"))]
    box = page.locator("#vl-stage").bounding_box()
    cell_w, cell_h = box["width"] / 14, box["height"] / 14
    points = [(box["x"] + (3 + 4 * k + 0.5) * cell_w, box["y"] + (5 + 3 * k + 0.5) * cell_h) for k in range(3)]
    times["hover"] = [timed(page, lambda pg, xy=xy: pg.mouse.move(*xy)) for xy in points]
    times["image_switch"] = [timed(page, lambda pg: pg.select_option("#vl-image", "2"))]
    page.close()
    return times


def browse(path: Path, repeats: int = 5) -> dict:
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for _ in range(repeats):
            for key, values in time_one_visit(browser, path).items():
                times.setdefault(key, []).extend(values)
        browser.close()
    return {f"{key}_ms_median": round(statistics.median(values)) for key, values in times.items()} | {
        "repeats": repeats
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS), help="folder for report_size.{md,json} and the report itself")
    parser.add_argument("--repeats", type=int, default=5, help="page loads to time (default: 5)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    html = out / "report_vit_b16_4_images.html"
    result = {**build(html), **browse(html, args.repeats), "torch": torch.__version__}
    html.unlink()  # tens of megabytes; the numbers are what is kept
    (out / "report_size.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# Attention explorer: ViT-B/16 at 224, 4 images", "", "| measure | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in result.items()]
    (out / "report_size.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
