"""How well does each explanation point at the object, and how faithful is it? A benchmark on cluttered digits.

One command (under twenty minutes on a 2-core CPU, about seven of them training the model, which is then cached)::

    .venv/bin/python benchmarks/localization.py  # -> benchmarks/results/localization.{md,json,_curves.png}

1. Train a small ViT (32x32 canvas, 4x4 patches, 4 layers) on cluttered digits; the trained
   weights are cached in ``runs/localization/model.pt`` (``--retrain`` ignores the cache).
2. On held-out images (test split: source digits never seen in training) compute every
   method's map for the predicted class, plus a random and a centre baseline, and score:
   * pointing game — is the map's maximum inside the digit's box (higher is better);
   * energy in box — the fraction of the (positive) map inside the box (higher is better);
   * deletion AUC — blank the most relevant patches first, 4 at a time, and average the
     predicted class's probability along the way (lower is better: the map found what matters);
   * insertion AUC — start from a blank canvas and put the most relevant patches back first
     (higher is better);
   * ROAD (Rong et al., ICML 2022, through ``grad-cam``'s metrics): the class probability after
     removing the least relevant pixels minus after removing the most relevant, each imputed by
     noisy linear infilling rather than blanked, at 20/40/60/80%, halved (higher is better).
3. The cost of each method per image on a ViT-S/16 at 224x224 (batch 1, random weights): time and
   peak memory, each method in a fresh subprocess; and the peak memory of rollout and GAE with and
   without streaming on a ViT-S/16 at 384x384, batch 4 (Linux: the peak resident size is reset
   before the call and read after).
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
BLANK = -1.0  # a blank canvas pixel in the model's input range (see normalize)
ROAD_PERCENTILES = (20, 40, 60, 80)


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
    "AttnLRP": lambda m, x: explain.attnlrp(m, x),
    "CP-LRP": lambda m, x: explain.cp_lrp(m, x),
    "Chefer 2021 (LRP x gradient)": lambda m, x: explain.transformer_attribution(m, x),
    "Grad-CAM": lambda m, x: explain.gradcam(m, x),
    "Integrated Gradients (32 steps)": lambda m, x: explain.integrated_gradients(m, x, baseline=BLANK),
    "occlusion (per patch)": lambda m, x: explain.occlusion(m, x, baseline=BLANK),
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
def perturbation_curve(
    model, images: torch.Tensor, heat: torch.Tensor, classes: torch.Tensor, per_step: int = 4, insertion: bool = False
) -> torch.Tensor:
    """Probability of ``classes`` (n, steps + 1) as patches are blanked (or, ``insertion``, put back on a
    blank canvas) in order of decreasing heat, ``per_step`` at a time."""
    layout = model.token_layout(images)
    p, (gh, gw) = layout.patch_size, layout.grid
    noise = torch.rand(heat.shape, generator=torch.Generator().manual_seed(0)) * 1e-6  # break ties at random
    order = (heat.float().cpu() + noise).flatten(1).argsort(dim=1, descending=True)
    shown = torch.full((images.shape[0], gh * gw), 0.0 if insertion else 1.0)
    probs = []
    for k in range(0, gh * gw + 1, per_step):
        if k:
            shown.scatter_(1, order[:, k - per_step : k], 1.0 if insertion else 0.0)
        mask = shown.view(-1, 1, gh, gw).repeat_interleave(p, 2).repeat_interleave(p, 3)
        logits = model(normalize(images * mask))
        probs.append(logits.softmax(-1).gather(1, classes[:, None])[:, 0])
    return torch.stack(probs, dim=1)


def area(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoid area under each curve (n, steps + 1) over [0, 1]."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), dim=1)


def deletion_auc(model, images: torch.Tensor, heat: torch.Tensor, classes: torch.Tensor, per_step: int = 4):
    """Mean probability of ``classes`` while blanking patches in order of decreasing heat (trapezoid AUC)."""
    return area(perturbation_curve(model, images, heat, classes, per_step))


def insertion_auc(model, images: torch.Tensor, heat: torch.Tensor, classes: torch.Tensor, per_step: int = 4):
    """Mean probability of ``classes`` while putting patches back on a blank canvas, most relevant first."""
    return area(perturbation_curve(model, images, heat, classes, per_step, insertion=True))


def road(model, images: torch.Tensor, heat: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``grad-cam``'s ROADCombined on the class probability, at :data:`ROAD_PERCENTILES` (higher is better)."""
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    pixels = explain.upsample(heat.float(), CANVAS).flatten(1)
    low, high = pixels.min(1, keepdim=True).values, pixels.max(1, keepdim=True).values
    cams = ((pixels - low) / (high - low).clamp_min(1e-12)).view(-1, CANVAS, CANVAS).numpy()
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]
    torch.manual_seed(0)  # the imputation's noise
    with torch.no_grad():
        scores = ROADCombined(percentiles=list(ROAD_PERCENTILES))(normalize(images), cams, targets, model)
    return torch.as_tensor(scores, dtype=torch.float32)


def evaluate(model, n_test: int = 1000, n_road: int = 200, batch: int = 250, log=print) -> dict:
    """Every method's scores on ``n_test`` held-out images (ROAD, the slowest, on the first ``n_road``)."""
    data = make_cluttered_digits(n_test, CANVAS, seed=12345, split="test")
    with torch.no_grad():
        logits = torch.cat([model(normalize(data.images[i : i + batch])) for i in range(0, n_test, batch)])
    predicted = logits.argmax(1)
    results = {"accuracy": (predicted == data.labels).float().mean().item(), "n_test": n_test, "methods": {}}
    results["n_road"] = min(n_road, n_test)
    log(f"test accuracy {results['accuracy']:.3f} on {n_test} images")
    for name, method in METHODS.items():
        scores: dict[str, list[torch.Tensor]] = {"pointing": [], "energy": [], "road": []}
        curves: dict[str, list[torch.Tensor]] = {"deletion": [], "insertion": []}
        elapsed = 0.0
        for i in range(0, n_test, batch):
            x, boxes, cls = data.images[i : i + batch], data.boxes[i : i + batch], predicted[i : i + batch]
            start = time.perf_counter()
            heat = method(model, normalize(x)).detach().float().cpu()
            elapsed += time.perf_counter() - start
            scores["pointing"].append(pointing_game(heat, boxes))
            scores["energy"].append(energy_in_box(heat, boxes))
            curves["deletion"].append(perturbation_curve(model, x, heat, cls))
            curves["insertion"].append(perturbation_curve(model, x, heat, cls, insertion=True))
            if i < results["n_road"]:
                j = min(batch, results["n_road"] - i)
                scores["road"].append(road(model, x[:j], heat[:j], cls[:j]))
        row = {k: torch.cat(v).mean().item() for k, v in scores.items()}
        for k, v in curves.items():
            curve = torch.cat(v)
            row[k] = area(curve).mean().item()
            row[f"{k}_curve"] = [round(p, 5) for p in curve.mean(0).tolist()]
        row["ms_per_image"] = 1000 * elapsed / n_test
        results["methods"][name] = row
        log(
            f"{name:32s} pointing {row['pointing']:.3f}  energy {row['energy']:.3f}  deletion {row['deletion']:.3f}"
            f"  insertion {row['insertion']:.3f}  ROAD {row['road']:.3f}  {row['ms_per_image']:.2f} ms/image"
        )
    return results


# ----------------------------------------------------------------------------- memory
# what each measuring child process starts with: a /proc/self/status reader, a seed, one thread
_CHILD_START = """
import sys, time, torch, vitlens
from vitlens import explain

def mib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

torch.manual_seed(0)
torch.set_num_threads(1)
"""
_MEMORY_CHILD = (
    _CHILD_START
    + """method, streaming = sys.argv[1], sys.argv[2] == "1"
model = vitlens.create_model("vit_small_patch16_224", img_size=384).eval()
images = torch.randn(4, 3, 384, 384)
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current resident size
before = mib("VmRSS")
getattr(explain, method)(model, images, streaming=streaming)
print(mib("VmHWM") - before)
"""
)


_COST_CHILD = (
    _CHILD_START
    + """method = explain.ATTRIBUTIONS.get(sys.argv[1]) or getattr(explain, sys.argv[1])
model = vitlens.create_model("vit_small_patch16_224").eval()
image = torch.randn(1, 3, 224, 224)
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current resident size
before = mib("VmRSS")
times = []
for _ in range(2):  # the first call's peak, the second call's time
    start = time.perf_counter()
    method(model, image)
    times.append(time.perf_counter() - start)
    if len(times) == 1:
        peak = mib("VmHWM") - before
print(peak, times[-1])
"""
)
# method (as explain names it) -> the row of the benchmark's table
COSTED = {
    "cls_attention": "raw attention (last layer, head mean)",
    "rollout": "rollout (mean)",
    "grad_rollout": "gradient rollout",
    "gae": "GAE (Chefer et al.)",
    "attnlrp": "AttnLRP",
    "cp-lrp": "CP-LRP",
    "chefer2021": "Chefer 2021 (LRP x gradient)",
    "gradcam": "Grad-CAM",
    "ig": "Integrated Gradients (32 steps)",
    "occlusion": "occlusion (per patch)",
}


def method_costs(log=print) -> dict:
    """Time (of a second call) and peak memory (of the first) per method, ViT-S/16 at 224, batch 1."""
    rows = {}
    for method, name in COSTED.items():
        out = subprocess.run([sys.executable, "-c", _COST_CHILD, method], check=True, capture_output=True, text=True)
        peak, seconds = (float(v) for v in out.stdout.strip().splitlines()[-1].split())
        rows[name] = {"peak_mib": peak, "ms": 1000 * seconds}
        log(f"{name:32s} {1000 * seconds:8.0f} ms  peak +{peak:.0f} MiB")
    return rows


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
def machine() -> str:
    """The CPU model, for the results' header."""
    from vitlens.bench import machine_info

    return machine_info(torch.device("cpu")).get("cpu", "unknown CPU")


def to_markdown(results: dict) -> str:
    lines = [
        "# Localization and faithfulness on cluttered digits",
        "",
        f"Small ViT (32x32 canvas, 4x4 patches, 4 layers x 4 heads), test accuracy "
        f"**{results['accuracy']:.1%}** on {results['n_test']} held-out images (unseen source digits). "
        f"Maps are for the predicted class; ROAD on the first {results.get('n_road', 0)} images. Produced by "
        "`.venv/bin/python benchmarks/localization.py`"
        + (f" on {results['machine']}" if results.get("machine") else "")
        + "; ms / image is one thread (noisy). Curves: `localization_curves.png`.",
        "",
        "| method | pointing game ↑ | energy in box ↑ | deletion AUC ↓ | insertion AUC ↑ | ROAD ↑ | ms / image |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results["methods"].items():
        lines.append(
            f"| {name} | {r['pointing']:.3f} | {r['energy']:.3f} | {r['deletion']:.3f} | {r['insertion']:.3f} "
            f"| {r['road']:.3f} | {r['ms_per_image']:.2f} |"
        )
    if results.get("costs"):
        lines += [
            "",
            "Cost of one call on a ViT-S/16 at 224x224, batch 1, one thread, random weights (time of a second "
            "call; peak memory the first call adds, fresh process each):",
            "",
            "| method | ms | peak MiB |",
            "| --- | ---: | ---: |",
        ]
        lines += [f"| {k} | {v['ms']:.0f} | {v['peak_mib']:.0f} |" for k, v in results["costs"].items()]
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


def plot_curves(results: dict, path: Path) -> None:
    """Mean deletion and insertion curves of every method, side by side, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, kind, better in zip(axes, ("deletion", "insertion"), ("lower", "higher")):
        colours = matplotlib.colormaps["tab20"].colors
        for i, (name, r) in enumerate(results["methods"].items()):
            curve = r[f"{kind}_curve"]
            steps = [k / (len(curve) - 1) for k in range(len(curve))]
            style = "--" if name in ("random", "centre") else "-"
            ax.plot(steps, curve, style, color=colours[i % 20], label=f"{name} ({r[kind]:.3f})", linewidth=1.4)
        ax.set_title(f"{kind}: most relevant patches {'blanked' if kind == 'deletion' else 'shown'} first "
                     f"(area: {better} is better)", fontsize=10)  # fmt: skip
        ax.set_xlabel("fraction of patches")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("probability of the predicted class")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true", help="train again even if runs/localization/model.pt exists")
    parser.add_argument("--n-test", type=int, default=1000, help="held-out images to score (default 1000)")
    parser.add_argument("--n-road", type=int, default=200, help="of those, images scored by ROAD (default 200)")
    parser.add_argument("--skip-memory", action="store_true", help="do not run the ViT-S/16 cost and memory runs")
    parser.add_argument("--out", default=str(ROOT / "results"), help="folder for localization.md / .json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # on a shared 2-core machine one thread is several times faster
    host = machine()
    started = time.perf_counter()
    model = load_or_train(args.retrain)
    trained = time.perf_counter() - started
    started = time.perf_counter()
    results = evaluate(model, n_test=args.n_test, n_road=args.n_road)
    results["machine"] = host
    if not args.skip_memory:
        results["costs"] = method_costs()
        results["memory_mib"] = peak_memory()
    results["seconds"] = {
        "model (training, or the cache)": round(trained),
        "evaluation": round(time.perf_counter() - started),
    }
    out = Path(args.out)
    write_atomic(out / "localization.json", json.dumps(results, indent=2) + "\n")
    write_atomic(out / "localization.md", to_markdown(results))
    plot_curves(results, out / "localization_curves.png")
    print(to_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
