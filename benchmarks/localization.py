"""How well does each explanation point at the object? A localization benchmark on cluttered digits.

One command (about fifteen minutes on a busy 2-core CPU, half of it training the model, which is then cached)::

    .venv/bin/python benchmarks/localization.py            # -> benchmarks/results/localization.{md,json}

1. Train a small ViT (32x32 canvas, 4x4 patches, 4 layers) on cluttered digits; the trained
   weights are cached in ``runs/localization/model.pt`` (``--retrain`` ignores the cache).
2. On held-out images (test split: source digits never seen in training) compute every
   method's map for the predicted class, plus a random and a centre baseline, and score:
   * pointing game — is the map's maximum inside the digit's box (higher is better);
   * energy in box — the fraction of the (positive) map inside the box (higher is better);
   * deletion AUC — blank the most relevant patches first, 4 at a time, and average the
     predicted class's probability along the way (lower is better: the map found what matters).
3. Peak memory of rollout and GAE with and without streaming, each in a fresh subprocess on a
   ViT-S/16 at 384x384 (Linux: the peak resident size is reset before the call and read after).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import vitlens
from vitlens import explain
from vitlens.data.cluttered import make_cluttered_digits

ROOT = Path(__file__).resolve().parent
CACHE = ROOT.parent / "runs" / "localization" / "model.pt"
CANVAS = 32


def benchmark_config() -> vitlens.ViTConfig:
    """The small ViT of this benchmark: 8x8 patch grid, class token, 4 layers x 4 heads."""
    return vitlens.ViTConfig(
        img_size=CANVAS, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4,
        mlp_ratio=2.0, image_mean=(0.5,), image_std=(0.5,), labels=[str(i) for i in range(10)],
    )  # fmt: skip


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Canvas pixels in [0, 1] -> the model's input range."""
    return (images - 0.5) / 0.5


def train_model(epochs: int = 14, n_train: int = 8000, seed: int = 0, log=print) -> vitlens.VisionTransformer:
    """Train the benchmark ViT: AdamW, one-cycle schedule, a fresh draw of images every epoch.

    A short curriculum gets a ViT off the chance-level plateau sooner on this small budget:
    epoch e has min(e, 4) clutter fragments per image, so the first epoch shows clean digits.
    """
    torch.manual_seed(seed)
    model = vitlens.VisionTransformer(benchmark_config())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    batch = 128
    steps = epochs * math.ceil(n_train / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    for epoch in range(epochs):
        clutter = min(epoch, 4)
        data = make_cluttered_digits(n_train, CANVAS, seed=seed + 100 + epoch, split="train", num_fragments=clutter)
        model.train()
        order = torch.randperm(n_train)
        total, start = 0.0, time.perf_counter()
        for i in range(0, n_train, batch):
            idx = order[i : i + batch]
            loss = F.cross_entropy(model(normalize(data.images[idx])), data.labels[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        log(f"epoch {epoch + 1}/{epochs}: loss {total / n_train:.3f} ({time.perf_counter() - start:.0f} s)")
    return model.eval()


def load_or_train(retrain: bool = False, log=print) -> vitlens.VisionTransformer:
    """The cached benchmark model, or a freshly trained one (then cached, written atomically)."""
    if CACHE.exists() and not retrain:
        saved = torch.load(CACHE, map_location="cpu", weights_only=True)
        model = vitlens.VisionTransformer(vitlens.ViTConfig.from_dict(saved["config"]))
        model.load_state_dict(saved["state_dict"])
        return model.eval()
    model = train_model(log=log)
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=CACHE.parent, delete=False, suffix=".tmp") as f:
        torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict()}, f)
    os.replace(f.name, CACHE)
    return model


# ----------------------------------------------------------------------------- methods
Method = Callable[[vitlens.VisionTransformer, torch.Tensor], torch.Tensor]


def _random(model, images):
    g = torch.Generator().manual_seed(int(images.sum().item() * 1000) % (2**31))
    return torch.rand(images.shape[0], *model.token_layout(images).grid, generator=g)


def _centre(model, images):
    gh, gw = model.token_layout(images).grid
    ys, xs = torch.meshgrid(torch.arange(gh) - (gh - 1) / 2, torch.arange(gw) - (gw - 1) / 2, indexing="ij")
    return (-(ys**2 + xs**2) / (gh * gw / 8)).exp().expand(images.shape[0], gh, gw)


METHODS: dict[str, Method] = {
    "raw attention (last layer, head mean)": lambda m, x: explain.cls_attention(m, x).mean(dim=1),
    "rollout (mean)": lambda m, x: explain.rollout(m, x),
    "rollout (max, discard 0.9)": lambda m, x: explain.rollout(m, x, head_fusion="max", discard_ratio=0.9),
    "gradient rollout": lambda m, x: explain.grad_rollout(m, x),
    "GAE (Chefer et al.)": lambda m, x: explain.gae(m, x),
    "random": _random,
    "centre": _centre,
}


# ----------------------------------------------------------------------------- scores
def pointing_game(heat: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """1.0 where the pixel maximum of the upsampled map lies inside the box, else 0.0."""
    pixels = explain.upsample(heat, CANVAS)
    flat = pixels.flatten(1).argmax(dim=1)
    y, x = flat // CANVAS, flat % CANVAS
    return ((x >= boxes[:, 0]) & (x < boxes[:, 2]) & (y >= boxes[:, 1]) & (y < boxes[:, 3])).float()


def box_masks(boxes: torch.Tensor) -> torch.Tensor:
    """(n, S, S) boolean masks of the half-open boxes."""
    r = torch.arange(CANVAS)
    inside_y = (r[None, :] >= boxes[:, 1:2]) & (r[None, :] < boxes[:, 3:4])
    inside_x = (r[None, :] >= boxes[:, 0:1]) & (r[None, :] < boxes[:, 2:3])
    return inside_y[:, :, None] & inside_x[:, None, :]


def energy_in_box(heat: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Share of the positive part of the upsampled map that falls inside the box."""
    pixels = explain.upsample(heat, CANVAS).clamp_min(0)
    return (pixels * box_masks(boxes)).flatten(1).sum(1) / pixels.flatten(1).sum(1).clamp_min(1e-12)


@torch.no_grad()
def deletion_auc(model, images: torch.Tensor, heat: torch.Tensor, classes: torch.Tensor, per_step: int = 4):
    """Mean probability of ``classes`` while blanking patches in order of decreasing heat (trapezoid AUC)."""
    layout = model.token_layout(images)
    p, (gh, gw) = layout.patch_size, layout.grid
    noise = torch.rand(heat.shape, generator=torch.Generator().manual_seed(0)) * 1e-6  # break ties at random
    order = (heat.float().cpu() + noise).flatten(1).argsort(dim=1, descending=True)
    keep = torch.ones(images.shape[0], gh * gw)
    probs = []
    for k in range(0, gh * gw + 1, per_step):
        if k:
            keep.scatter_(1, order[:, k - per_step : k], 0.0)
        mask = keep.view(-1, 1, gh, gw).repeat_interleave(p, 2).repeat_interleave(p, 3)
        logits = model(normalize(images * mask))
        probs.append(logits.softmax(-1).gather(1, classes[:, None])[:, 0])
    curve = torch.stack(probs, dim=1)
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), dim=1)


def evaluate(model, n_test: int = 1000, batch: int = 250, log=print) -> dict:
    data = make_cluttered_digits(n_test, CANVAS, seed=12345, split="test")
    with torch.no_grad():
        logits = torch.cat([model(normalize(data.images[i : i + batch])) for i in range(0, n_test, batch)])
    predicted = logits.argmax(1)
    results = {"accuracy": (predicted == data.labels).float().mean().item(), "n_test": n_test, "methods": {}}
    log(f"test accuracy {results['accuracy']:.3f} on {n_test} images")
    for name, method in METHODS.items():
        scores: dict[str, list[torch.Tensor]] = {"pointing": [], "energy": [], "deletion": []}
        elapsed = 0.0
        for i in range(0, n_test, batch):
            x, boxes, cls = data.images[i : i + batch], data.boxes[i : i + batch], predicted[i : i + batch]
            start = time.perf_counter()
            heat = method(model, normalize(x)).detach().float().cpu()
            elapsed += time.perf_counter() - start
            scores["pointing"].append(pointing_game(heat, boxes))
            scores["energy"].append(energy_in_box(heat, boxes))
            scores["deletion"].append(deletion_auc(model, x, heat, cls))
        row = {k: torch.cat(v).mean().item() for k, v in scores.items()}
        row["ms_per_image"] = 1000 * elapsed / n_test
        results["methods"][name] = row
        log(f"{name:40s} pointing {row['pointing']:.3f}  energy {row['energy']:.3f}  deletion {row['deletion']:.3f}")
    return results


# ----------------------------------------------------------------------------- memory
_MEMORY_CHILD = """
import sys, torch, vitlens
from vitlens import explain

def mib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

torch.manual_seed(0)
torch.set_num_threads(1)
method, streaming = sys.argv[1], sys.argv[2] == "1"
model = vitlens.create_model("vit_small_patch16_224", img_size=384).eval()
images = torch.randn(4, 3, 384, 384)
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current resident size
before = mib("VmRSS")
getattr(explain, method)(model, images, streaming=streaming)
print(mib("VmHWM") - before)
"""


def peak_memory(log=print) -> dict:
    """Peak resident memory (MiB) a call adds, each call in its own fresh process (Linux /proc)."""
    rows = {}
    for method in ("rollout", "gae"):
        for streaming in (False, True):
            out = subprocess.run(
                [sys.executable, "-c", _MEMORY_CHILD, method, str(int(streaming))],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            key = f"{method}{' (streaming)' if streaming else ''}"
            rows[key] = float(out.stdout.strip().splitlines()[-1])
            log(f"{key:22s} peak +{rows[key]:.0f} MiB")
    return rows


# ----------------------------------------------------------------------------- report
def to_markdown(results: dict) -> str:
    lines = [
        "# Localization on cluttered digits",
        "",
        f"Small ViT (32x32 canvas, 4x4 patches, 4 layers x 4 heads), test accuracy "
        f"**{results['accuracy']:.1%}** on {results['n_test']} held-out images (unseen source digits). "
        "Maps are for the predicted class. Produced by `.venv/bin/python benchmarks/localization.py`; "
        "ms / image is one thread on a shared 2-core CPU (noisy).",
        "",
        "| method | pointing game ↑ | energy in box ↑ | deletion AUC ↓ | ms / image |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results["methods"].items():
        lines.append(
            f"| {name} | {r['pointing']:.3f} | {r['energy']:.3f} | {r['deletion']:.3f} | {r['ms_per_image']:.2f} |"
        )
    if results.get("memory_mib"):
        lines += [
            "",
            "Peak memory a call adds (peak resident size minus the size before it, fresh process each) "
            "on ViT-S/16 at 384x384, batch 4 (12 layers x 6 heads x 577 x 577 maps: 366 MiB in float32):",
            "",
            "| call | peak MiB |",
            "| --- | ---: |",
        ]
        lines += [f"| `{k}` | {v:.0f} |" for k, v in results["memory_mib"].items()]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true", help="train again even if runs/localization/model.pt exists")
    parser.add_argument("--n-test", type=int, default=1000, help="held-out images to score (default 1000)")
    parser.add_argument("--skip-memory", action="store_true", help="do not run the ViT-S/16 memory measurement")
    parser.add_argument("--out", default=str(ROOT / "results"), help="folder for localization.md / .json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # on a shared 2-core machine one thread is several times faster
    model = load_or_train(args.retrain)
    results = evaluate(model, n_test=args.n_test)
    if not args.skip_memory:
        results["memory_mib"] = peak_memory()
    out = Path(args.out)
    write_atomic(out / "localization.json", json.dumps(results, indent=2) + "\n")
    write_atomic(out / "localization.md", to_markdown(results))
    print(to_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
