"""The benchmark cases: a preset, a batch size, an image size, and which modes to time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..factory import create_model
from ..model import VisionTransformer

MODES = ("plain", "maps_all", "maps_last", "train", "train_compile", "plain_bf16", "train_bf16", "explain", "memory")


@dataclass(frozen=True)
class BenchCase:
    """One configuration to measure: a preset, a batch size, an image size, and what to run."""

    name: str
    model: str
    batch: int
    img_size: int | None = None
    modes: tuple[str, ...] = ("plain", "maps_all", "maps_last", "train")
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [m for m in self.modes if m not in MODES]
        if unknown:
            raise ValueError(f"unknown benchmark mode(s) {unknown}; expected some of {list(MODES)}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")

    def build(self) -> VisionTransformer:
        extra = {"img_size": self.img_size} if self.img_size else {}
        return create_model(self.model, **extra, **self.overrides)


CASES: dict[str, BenchCase] = {
    "tiny224": BenchCase("tiny224", "vit_tiny_patch16_224", 8, modes=("plain", "maps_all", "maps_last", "train")),
    "small224": BenchCase(
        "small224",
        "vit_small_patch16_224",
        8,
        modes=("plain", "maps_all", "maps_last", "train", "plain_bf16", "train_bf16", "explain"),
    ),
    "base224": BenchCase("base224", "vit_base_patch16_224", 4, modes=("plain", "maps_all", "maps_last")),
    "cifar": BenchCase(
        "cifar",
        "vit_cifar",
        128,
        modes=("plain", "maps_all", "maps_last", "train", "train_compile", "plain_bf16", "train_bf16", "explain"),
    ),
    "small512": BenchCase("small512", "vit_small_patch16_224", 1, img_size=512, modes=("memory",)),
    # a rotary-embedding model and an attention-pool model, against timm's Eva and VisionTransformer
    "eva02_base224": BenchCase("eva02_base224", "eva02_base_patch14_224", 4, modes=("plain", "maps_all", "maps_last")),
    "siglip_base224": BenchCase(
        "siglip_base224", "vit_base_patch16_siglip_224", 4, modes=("plain", "maps_all", "maps_last")
    ),
}
