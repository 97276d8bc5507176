"""Draw the pictures of docs/targets.md: CLIP text prompts, SigLIP's pool heads, a DINOv2 backbone.

    python docs/target_pictures.py --out docs/pictures      # needs the Hub (pretrained weights)
    python docs/target_pictures.py --out /tmp/p --offline   # random weights, for a quick check

Models: OpenCLIP ViT-B-16 (LAION-2B), SigLIP B/16 through timm, DINOv2-S/14 with and without
registers. Images: scikit-image's astronaut, chelsea (a cat) and coffee.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import vitlens
from vitlens import explain, viz
from vitlens.viz.readout import display_image

PROMPTS = ("a woman", "a rocket", "a flag")


def photos():
    from PIL import Image
    from skimage import data

    return {name: Image.fromarray(getattr(data, name)()) for name in ("astronaut", "chelsea", "coffee")}


def clip_model(offline: bool):
    import open_clip

    if offline:
        cfg = open_clip.get_model_config("ViT-B-16")
        cfg["vision_cfg"]["layers"] = cfg["text_cfg"]["layers"] = 2
        return vitlens.from_open_clip(open_clip.CLIP(**cfg))
    clip, _, _ = open_clip.create_model_and_transforms("ViT-B-16", pretrained="laion2b_s34b_b88k")
    return vitlens.from_open_clip(clip, tokenizer=open_clip.get_tokenizer("ViT-B-16"))


def dino_models(offline: bool):
    if offline:
        return {
            "no registers": vitlens.create_model("vit_small_patch14_dinov2", depth=2, img_size=224),
            "4 registers": vitlens.create_model("vit_small_patch14_reg4_dinov2", depth=2, img_size=224),
        }
    return {
        "no registers": vitlens.load("timm/vit_small_patch14_dinov2.lvd142m"),
        "4 registers": vitlens.load("timm/vit_small_patch14_reg4_dinov2.lvd142m"),
    }


def draw_clip(out: Path, offline: bool) -> None:
    model = clip_model(offline)
    image = photos()["astronaut"]
    x = vitlens.transforms_for(model)(image)[None]
    targets = [explain.text_target(model, p) for p in PROMPTS]
    maps = explain.per_target(explain.gae, model, x, targets)[0]  # (prompts, gh, gw)
    pixels = display_image(model, x[0])
    viz.panel_grid(maps, [f"GAE: '{p}'" for p in PROMPTS], pixels, out / "clip_prompts.png", "CLIP ViT-B/16")


def draw_dino(out: Path, offline: bool) -> None:
    image = photos()["chelsea"]
    for name, model in dino_models(offline).items():
        x = vitlens.transforms_for(model)(image)[None]
        pixels, stem = display_image(model, x[0]), name.replace(" ", "_")
        heads = explain.cls_attention(model, x)[0]
        viz.head_grid(heads, pixels, path=out / f"dino_{stem}_heads.png", title=f"DINOv2-S/14, {name}")
        found = explain.high_norm_tokens(model, x)
        picture = viz.overlay(pixels, heads.mean(0), size=448, marks=found.high[0, -1])
        picture.save(out / f"dino_{stem}_artifacts.png")
        h, w = x.shape[-2:]
        box = (w * 0.3, h * 0.25, w * 0.5, h * 0.45)  # the cat's face in the 224 crop
        like = explain.similarity_map(model, x, box)[0]
        viz.overlay(pixels, like, size=448).save(out / f"dino_{stem}_similarity.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "pictures")
    parser.add_argument("--offline", action="store_true", help="random weights: check the script, not the models")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    draw_clip(args.out, args.offline)
    draw_dino(args.out, args.offline)
    print(f"wrote {', '.join(sorted(p.name for p in args.out.glob('*.png')))} into {args.out}")


if __name__ == "__main__":
    main()
