"""Make every picture in docs/attention.md from the project's own code (reproducible).

    .venv/bin/python docs/make_figures.py      # -> docs/images/*.png, and the numbers the guide quotes

Uses the small ViT of the localization benchmark (trained on cluttered digits, cached in
runs/localization/model.pt; trained first if missing, a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from vitlens import explain
from vitlens.viz import plot

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"
sys.path.insert(0, str(HERE.parent / "benchmarks"))

from localization import load_or_train, make_cluttered_digits, normalize  # noqa: E402


def enlarged(image: torch.Tensor, size: int):
    """A small canvas scaled up without smoothing, for viewing."""
    from PIL import Image

    pixels = (plot.to_numpy_image(image) * 255).round().astype("uint8")
    return Image.fromarray(pixels).resize((size, size), Image.NEAREST)


def attention_matrix_figure(attn: torch.Tensor, layout, image: torch.Tensor, path: Path) -> None:
    """Left: one head's full (N, N) weights, rows summing to 1. Right: the class token's row on the image."""
    plt = plot.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.8))
    im = left.imshow(attn.numpy(), cmap="viridis")
    left.axhline(layout.num_prefix_tokens - 0.5, color="w", lw=0.8)
    left.axvline(layout.num_prefix_tokens - 0.5, color="w", lw=0.8)
    left.set_title(
        f"layer 0, head 0: weights ({attn.shape[0]} x {attn.shape[1]})\nrow = query, column = key", fontsize=9
    )
    left.set_xlabel("key token (0 = class token, then 64 patches)")
    left.set_ylabel("query token")
    fig.colorbar(im, ax=left, fraction=0.046)
    cls_row = attn[layout.class_index, layout.patch_slice].reshape(layout.grid)
    right.imshow(plot.overlay(image, cls_row, size=256))
    right.set_title("row 0 (class token) over the 8 x 8 patches", fontsize=9)
    right.axis("off")
    fig.tight_layout()
    plot.save_figure(fig, path)


def methods_figure(model, images: torch.Tensor, boxes: torch.Tensor, path: Path) -> None:
    """Rows: test images with their box; columns: each explanation method's overlay."""
    plt = plot.pyplot()
    x = normalize(images)
    maps = {
        "raw attention\n(last layer)": explain.cls_attention(model, x).mean(1),
        "rollout": explain.rollout(model, x),
        "gradient rollout": explain.grad_rollout(model, x),
        "GAE": explain.gae(model, x),
        "AttnLRP": explain.attnlrp(model, x),
        "CP-LRP": explain.cp_lrp(model, x),
        "occlusion": explain.occlusion(model, x, baseline=-1.0),
    }
    signed = {"AttnLRP", "CP-LRP", "occlusion"}  # drawn with 0 in the middle: red for the class, blue against
    fig, axes = plt.subplots(len(images), len(maps) + 1, figsize=(2.1 * (len(maps) + 1), 2.1 * len(images)))
    for r, image in enumerate(images):
        x0, y0, x1, y1 = (int(v) for v in boxes[r])
        scale = 256 / image.shape[-1]
        axes[r, 0].imshow(enlarged(image, 256))
        for c, (name, heat) in enumerate(maps.items(), start=1):
            axes[r, c].imshow(plot.overlay(image, heat[r], size=256, signed=name in signed))
            if r == 0:
                axes[r, c].set_title(name, fontsize=9)
        for ax in axes[r]:
            ax.add_patch(
                plt.Rectangle((x0 * scale, y0 * scale), (x1 - x0) * scale, (y1 - y0) * scale, fill=False, ec="c", lw=1)
            )
            ax.axis("off")
    axes[0, 0].set_title("input + box", fontsize=9)
    fig.tight_layout()
    plot.save_figure(fig, path)


def main() -> int:
    torch.set_num_threads(1)
    IMAGES.mkdir(parents=True, exist_ok=True)
    model = load_or_train()
    data = make_cluttered_digits(256, 32, seed=7, split="test")
    x = normalize(data.images)
    layout = model.token_layout(x)
    with torch.no_grad():
        out = model(x, return_attention=True)
    print(
        f"input {tuple(x.shape)} -> logits {tuple(out.logits.shape)}; block output (tokens) "
        f"{tuple(out.features.shape)}; attention per layer {tuple(out.attentions[0].shape)}"
    )
    print(f"row sums of layer 0: min {out.attentions[0].sum(-1).min():.6f} max {out.attentions[0].sum(-1).max():.6f}")

    pick = 0
    attention_matrix_figure(out.attentions[0][pick, 0], layout, data.images[pick], IMAGES / "attention_matrix.png")
    for layer in (0, len(model.blocks) - 1):
        maps = explain.cls_attention_from(out.attentions[layer][pick : pick + 1], layout)[0]
        plot.head_grid(
            maps,
            enlarged(data.images[pick], 128),
            path=IMAGES / f"heads_layer{layer}.png",
            title=f"class-token attention per head, layer {layer}",
        )

    distance = explain.attention_distance(out.attentions, layout, renormalize=True)
    uniform = explain.maps.patch_distances(layout.grid, layout.patch_size).mean().item()
    fig = plot.distance_plot(distance, title="mean attention distance (256 test images)")
    fig.axes[0].axhline(uniform, ls="--", lw=0.8, color="grey")
    fig.axes[0].annotate("uniform attention", (0, uniform), xytext=(0, 3), textcoords="offset points", fontsize=7)
    fig.axes[0].set_ylim(0, uniform * 1.3)
    plot.save_figure(fig, IMAGES / "attention_distance.png")
    print(f"mean attention distance (px, renormalized over patches; uniform attention: {uniform:.2f} px)")
    for i, row in enumerate(distance):
        print(f"  layer {i}: " + "  ".join(f"{v:5.2f}" for v in row.tolist()))
    entropy = explain.attention_entropy(out.attentions, layout, renormalize=True)
    fig = plot.distance_plot(entropy, title="attention entropy per head", ylabel="entropy (nats)")
    fig.axes[0].axhline(torch.log(torch.tensor(64.0)).item(), ls="--", lw=0.8, color="grey")
    fig.axes[0].set_ylim(0, 4.6)
    plot.save_figure(fig, IMAGES / "attention_entropy.png")
    print("entropy (nats; uniform over 64 patches = 4.16):")
    for i, row in enumerate(entropy):
        print(f"  layer {i}: " + "  ".join(f"{v:5.2f}" for v in row.tolist()))

    per_layer = explain.rollout_per_layer([a[pick : pick + 1] for a in out.attentions], layout)[0]
    plot.layer_grid(
        per_layer, enlarged(data.images[pick], 128), path=IMAGES / "rollout_layers.png", title="rollout through layer l"
    )
    methods_figure(model, data.images[:4], data.boxes[:4], IMAGES / "methods.png")
    print(f"wrote {sorted(p.name for p in IMAGES.glob('*.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
