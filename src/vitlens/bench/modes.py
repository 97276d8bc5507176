"""What each benchmark mode times: a closure per contender (inference, maps, a training step, bf16)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .contenders import Contender


def train_step_fn(
    forward: Callable[[Tensor], Tensor],
    params: Sequence[nn.Parameter],
    images: Tensor,
    labels: Tensor,
    autocast: torch.dtype | None = None,
) -> Callable[[], None]:
    """Forward + cross-entropy + backward + AdamW step, as a closure to time."""
    opt = torch.optim.AdamW(params, lr=1e-4)
    device_type = images.device.type

    def step() -> None:
        ctx = torch.autocast(device_type, dtype=autocast) if autocast else contextlib.nullcontext()
        with ctx:
            loss = F.cross_entropy(forward(images), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def no_grad_fn(fn: Callable[[Tensor], Any], images: Tensor, autocast: torch.dtype | None = None) -> Callable[[], Any]:
    def call() -> Any:
        ctx = torch.autocast(images.device.type, dtype=autocast) if autocast else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            return fn(images)

    return call


def mode_functions(
    mode: str,
    contenders: Sequence[Contender],
    images: Tensor,
    compile_fn: Callable[[nn.Module], nn.Module] | None = None,
) -> dict[str, Callable[[], Any]]:
    """The closures to time for one mode, keyed by contender (some modes add vitlens variants)."""
    fns: dict[str, Callable[[], Any]] = {}
    labels = torch.randint(0, 2, (images.shape[0],), device=images.device)
    bf16 = torch.bfloat16
    for c in contenders:
        if mode == "plain":
            fns[c.name] = no_grad_fn(c.plain, images)
        elif mode in ("maps_all", "maps_last"):
            fn = getattr(c, mode)
            if fn is not None:
                fns[c.name] = no_grad_fn(fn, images)
            if c.name == "vitlens":
                fns["vitlens (plain)"] = no_grad_fn(c.plain, images)
        elif mode == "plain_bf16" and c.name in ("vitlens", "timm"):
            fns[f"{c.name} bf16"] = no_grad_fn(c.plain, images, autocast=bf16)
            if c.name == "vitlens":
                fns["vitlens fp32"] = no_grad_fn(c.plain, images)
        elif mode == "train" and c.logits is not None:
            fns[c.name] = train_step_fn(c.logits, list(c.model.parameters()), images, labels)
        elif mode == "train_bf16" and c.name in ("vitlens", "timm"):
            fns[f"{c.name} bf16"] = train_step_fn(c.logits, list(c.model.parameters()), images, labels, autocast=bf16)
            if c.name == "vitlens":
                fns["vitlens fp32"] = train_step_fn(c.logits, list(c.model.parameters()), images, labels)
        elif mode == "train_compile" and c.name in ("vitlens", "timm"):
            fns[c.name] = train_step_fn(c.logits, list(c.model.parameters()), images, labels)
            if c.name == "vitlens":
                compiled = (compile_fn or torch.compile)(c.model)
                fns["vitlens compiled"] = train_step_fn(compiled, list(c.model.parameters()), images, labels)
    return fns
