"""How exactly vitlens reproduces timm, Hugging Face and torchvision ViTs at their real sizes.

Each model is built random-init by its own library, saved the way that library saves it, read
back with ``vitlens.load``, and run on the same images. The table lists the largest absolute
difference of logits, of the final features and (Hugging Face, eager attention) of every
layer's attention maps, in float32 on CPU, plus whether the round trip back is bit-exact.
timm and torchvision run fused attention on both sides; the Hugging Face rows compare HF's eager
attention with vitlens's explicit path (the one that returns maps).

    .venv/bin/python benchmarks/interop_exactness.py   # -> benchmarks/results/interop_exactness.md
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import timm
import torch
import torchvision
import transformers
from safetensors.torch import save_file

import vitlens
from vitlens.checkpoint import to_hf_state_dict, to_timm_state_dict, to_torchvision_state_dict


def _max(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def _same(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def timm_rows(tmp: Path, images: torch.Tensor) -> list[tuple]:
    rows = []
    cases = [
        ("vit_tiny_patch16_224", {}, {}),
        ("deit_tiny_distilled_patch16_224", {}, {}),
        ("vit_small_patch14_reg4_dinov2", {"img_size": 224}, {"img_size": 224}),
        ("vit_base_patch16_224", {"global_pool": "avg"}, {"global_pool": "avg"}),
    ]
    for name, kwargs, load_kwargs in cases:
        model = timm.create_model(name, pretrained=False, **kwargs).eval()
        path = tmp / f"{name}.safetensors"
        save_file(model.state_dict(), str(path))
        ours = vitlens.load(path, **load_kwargs)
        with torch.no_grad():
            logits = _max(ours(images), model(images))
            features = _max(ours.forward_features(images), model.forward_features(images))
        label = name + (" (avg pool)" if kwargs.get("global_pool") == "avg" else "")
        rows.append(("timm", label, logits, features, None, _same(to_timm_state_dict(ours), model.state_dict())))
    return rows


def hf_rows(tmp: Path, images: torch.Tensor) -> list[tuple]:
    rows = []
    config = transformers.ViTConfig(attn_implementation="eager")  # ViT-B/16, 224 px
    for cls in (transformers.ViTForImageClassification, transformers.ViTModel):
        model = cls(config).eval()
        folder = tmp / cls.__name__
        model.save_pretrained(folder)
        ours = vitlens.load(folder)
        with torch.no_grad():
            theirs = model(images, output_attentions=True)
            mine = ours(images, return_attention=True)
        maps = max(_max(a, b) for a, b in zip(mine.attentions, theirs.attentions))
        if cls is transformers.ViTModel:
            logits, back = None, None
            features = _max(mine.features, theirs.last_hidden_state)
        else:
            logits, features = _max(mine.logits, theirs.logits), None
            back = _same(to_hf_state_dict(ours), model.state_dict())
        rows.append(("Hugging Face", f"{cls.__name__} (ViT-B/16)", logits, features, maps, back))
    return rows


def torchvision_rows(tmp: Path, images: torch.Tensor) -> list[tuple]:
    model = torchvision.models.vit_b_16().eval()
    with torch.no_grad():  # torchvision starts the head and class token at zero: logits would match trivially
        for p in model.parameters():
            if not p.any():
                p.normal_(std=0.02)
    path = tmp / "vit_b_16-random.pth"
    torch.save(model.state_dict(), path)
    ours = vitlens.load(path)
    with torch.no_grad():
        logits = _max(ours(images), model(images))
    back = _same(to_torchvision_state_dict(ours), model.state_dict())
    return [("torchvision", "vit_b_16", logits, None, None, back)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "interop_exactness.md"))
    args = parser.parse_args()
    torch.manual_seed(0)
    images = torch.randn(2, 3, 224, 224)
    with tempfile.TemporaryDirectory() as tmp:
        rows = timm_rows(Path(tmp), images) + hf_rows(Path(tmp), images) + torchvision_rows(Path(tmp), images)
    fmt = lambda v: "—" if v is None else (("yes" if v else "NO") if isinstance(v, bool) else f"{v:.2e}")
    lines = [
        "# vitlens vs the source libraries: largest absolute difference (fp32, CPU, 2 random images, 224 px)",
        "",
        f"torch {torch.__version__}, timm {timm.__version__}, transformers {transformers.__version__}, "
        f"torchvision {torchvision.__version__}. Written by `benchmarks/interop_exactness.py`.",
        "",
        "| library | model | logits | features | every attention map | weights back bit-exact |",
        "| --- | --- | ---: | ---: | ---: | :---: |",
        *(f"| {lib} | {name} | {fmt(lg)} | {fmt(ft)} | {fmt(mp)} | {fmt(bk)} |" for lib, name, lg, ft, mp, bk in rows),
    ]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
