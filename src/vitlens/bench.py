"""Speed measurements: vitlens against timm, Hugging Face, torchvision and vit-pytorch.

Everything is measured in one process, side by side and *interleaved* (each repeat runs every
contender once, in rotating order), so that a busy or throttled machine slows all of them alike
and the ratios stay meaningful. Each contender gets the same weights (copied from the vitlens
model, and checked: logits must agree before anything is timed), the same threads, the same
dtype and the same input. Peers are optional: a missing library only removes its rows.

``vitlens bench`` runs :func:`run_case` for a user's own preset; ``benchmarks/run.py`` runs the
standard cases in :data:`CASES` and writes ``benchmarks/results/speed.{md,json}``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .allocator import allocator_info, is_tuned
from .model import VisionTransformer, create_model

PEERS = ("timm", "hf", "torchvision", "vit_pytorch")
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
}


# ---------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, device: torch.device | None = None
) -> dict[str, list[float]]:
    """Seconds per call of each function, measured round-robin: repeat r runs every function once.

    The order rotates every repeat so that no contender always runs first (cold caches) or last.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = device or torch.device("cpu")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            _sync(device)
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """Median and range of a list of timings, in milliseconds."""
    return {
        "median_ms": statistics.median(seconds) * 1e3,
        "min_ms": min(seconds) * 1e3,
        "max_ms": max(seconds) * 1e3,
        "repeats": len(seconds),
    }


def matmul_peak_gflops(
    device: torch.device | None = None, dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 5
) -> float:
    """Best observed GFLOP/s of a square matmul: the ceiling the models' matmuls can reach."""
    device = device or torch.device("cpu")
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = interleaved_times({"mm": lambda: torch.mm(a, b)}, repeats, warmup=2, device=device)["mm"]
    return 2 * size**3 / min(times) / 1e9


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
        "allocator": allocator_info(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    for lib in ("timm", "transformers", "torchvision", "vit_pytorch"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            info[lib] = version(lib.replace("_", "-"))
    return info


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run in hardware here (else autocast emulates them, many times slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


# ----------------------------------------------------------------------------- contenders
@dataclass
class Contender:
    """One library's model for one case: plain forward, and maps forward when it has one."""

    name: str
    model: nn.Module
    plain: Callable[[Tensor], Tensor]
    maps_all: Callable[[Tensor], Any] | None = None
    maps_last: Callable[[Tensor], Any] | None = None
    logits: Callable[[Tensor], Tensor] | None = None  # for training: the differentiable forward
    note: str = ""


def _is_plain_vit(model: VisionTransformer) -> bool:
    """True when the config is the original ViT that every peer library can express."""
    c = model.config
    return (
        c.class_token
        and c.global_pool == "token"
        and not c.distilled
        and c.reg_tokens == 0
        and c.pos_embed == "learn"
        and not c.no_embed_class
        and not c.pre_norm
        and c.final_norm
        and not c.use_fc_norm
        and c.init_values is None
        and c.act_layer == "gelu"
        and c.norm_layer == "layernorm"
        and not c.qk_norm
        and c.num_classes > 0
    )


def vitlens_contender(model: VisionTransformer) -> Contender:
    return Contender(
        "vitlens",
        model,
        plain=model,
        maps_all=lambda x: model(x, return_attention=True),
        maps_last=lambda x: model(x, return_attention=[-1]),
        logits=model,
    )


def timm_contender(model: VisionTransformer) -> Contender:
    """timm's VisionTransformer with the same weights; maps through ``timm.utils.AttentionExtract``."""
    from timm.models.vision_transformer import VisionTransformer as TimmViT
    from timm.utils import AttentionExtract

    from .checkpoint import timm_kwargs

    peer = TimmViT(**timm_kwargs(model.config))
    peer.load_state_dict(model.state_dict())
    peer = peer.to(**_placement(model)).train(model.training)
    # AttentionExtract reads the softmax output, which only the unfused path forms: unfuse every
    # block for all maps, only the last one for last-layer maps (the other blocks stay fused).
    unfused_all, unfused_last = copy.deepcopy(peer), copy.deepcopy(peer)
    for blk in unfused_all.blocks:
        blk.attn.fused_attn = False
    unfused_last.blocks[-1].attn.fused_attn = False
    last = len(peer.blocks) - 1
    extract_all = AttentionExtract(unfused_all, names=["*attn.attn_drop"], method="hook")
    extract_last = AttentionExtract(unfused_last, names=[f"blocks.{last}.attn.attn_drop"], method="hook")
    return Contender(
        "timm",
        peer,
        plain=peer,
        maps_all=extract_all,
        maps_last=extract_last,
        logits=peer,
        note="maps: AttentionExtract (hooks on attn_drop; only the blocks asked for run unfused)",
    )


def hf_contender(model: VisionTransformer) -> Contender:
    """Hugging Face ``ViTForImageClassification``: SDPA plain, eager + ``output_attentions`` for maps."""
    from transformers import ViTConfig as HFConfig
    from transformers import ViTForImageClassification

    from .checkpoint import to_hf_config, to_hf_state_dict

    hf_config = HFConfig(**to_hf_config(model.config))
    state = to_hf_state_dict(model)
    placement = _placement(model)

    def build(impl: str) -> nn.Module:
        m = ViTForImageClassification(hf_config)
        m.set_attn_implementation(impl)
        missing, unexpected = m.load_state_dict(state, strict=False)
        if [k for k in missing if "pooler" not in k] or unexpected:
            raise RuntimeError(f"Hugging Face key mismatch: missing {missing}, unexpected {unexpected}")
        return m.to(**placement).train(model.training)

    plain, eager = build("sdpa"), build("eager")

    def maps(x: Tensor) -> Any:
        out = eager(pixel_values=x, output_attentions=True)
        return out.logits, out.attentions

    return Contender(
        "hf",
        plain,
        plain=lambda x: plain(pixel_values=x).logits,
        maps_all=maps,
        maps_last=maps,
        logits=lambda x: plain(pixel_values=x).logits,
        note="maps: attn_implementation='eager' + output_attentions=True (always every layer)",
    )


def torchvision_contender(model: VisionTransformer) -> Contender:
    """torchvision's ``VisionTransformer`` (``nn.MultiheadAttention`` fast path; it cannot return maps)."""
    import torchvision

    c = model.config
    if c.img_hw[0] != c.img_hw[1]:
        raise ValueError("torchvision's VisionTransformer needs square images")
    peer = torchvision.models.VisionTransformer(
        image_size=c.img_hw[0],
        patch_size=c.patch_size,
        num_layers=c.depth,
        num_heads=c.num_heads,
        hidden_dim=c.embed_dim,
        mlp_dim=c.hidden_dim,
        num_classes=c.num_classes,
    )
    from .checkpoint import to_torchvision_state_dict

    state = to_torchvision_state_dict(model)
    peer.load_state_dict(state)
    peer = peer.to(**_placement(model)).train(model.training)
    return Contender("torchvision", peer, plain=peer, logits=peer, note="cannot return attention maps")


def vit_pytorch_contender(model: VisionTransformer) -> Contender:
    """lucidrains' ``vit_pytorch.ViT`` of the same size, maps through its ``Recorder``.

    Its architecture differs (LayerNorms around the patch projection, no qkv bias), so it gets
    its own random weights: same shapes and matmul work, not the same numbers.
    """
    from vit_pytorch import ViT
    from vit_pytorch.recorder import Recorder

    c = model.config
    peer = ViT(
        image_size=c.img_hw,
        patch_size=c.patch_size,
        num_classes=c.num_classes,
        dim=c.embed_dim,
        depth=c.depth,
        heads=c.num_heads,
        mlp_dim=c.hidden_dim,
        channels=c.in_chans,
        dim_head=c.embed_dim // c.num_heads,
    )
    peer = peer.to(**_placement(model)).train(model.training)
    recorder = Recorder(peer)
    return Contender(
        "vit_pytorch",
        peer,
        plain=peer,
        maps_all=recorder,
        logits=peer,
        note="own weights (different layout); maps: Recorder (every layer)",
    )


_BUILDERS = {
    "timm": timm_contender,
    "hf": hf_contender,
    "torchvision": torchvision_contender,
    "vit_pytorch": vit_pytorch_contender,
}


def build_contenders(model: VisionTransformer, peers: Sequence[str]) -> tuple[list[Contender], dict[str, str]]:
    """vitlens plus every peer that is installed and can express this config; and why others are missing."""
    unknown = [p for p in peers if p not in _BUILDERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {unknown}; expected some of {list(PEERS)}")
    contenders = [vitlens_contender(model)]
    skipped: dict[str, str] = {}
    for peer in peers:
        if peer != "timm" and not _is_plain_vit(model):
            skipped[peer] = "this config uses options the library lacks"
            continue
        try:
            contenders.append(_BUILDERS[peer](model))
        except ImportError as err:
            skipped[peer] = f"not installed ({err.name})"
    return contenders, skipped


def _placement(model: nn.Module) -> dict[str, Any]:
    """The device and dtype of ``model``, for moving a peer next to it."""
    p = next(model.parameters())
    return {"device": p.device, "dtype": p.dtype}


def check_same_outputs(contenders: Sequence[Contender], images: Tensor, atol: float = 1e-4) -> dict[str, float]:
    """Largest logit difference of each peer from vitlens; raises if weights were not carried over."""
    with torch.inference_mode():
        ref = contenders[0].plain(images)
        diffs = {}
        for c in contenders[1:]:
            if c.name == "vit_pytorch":  # own weights by design
                continue
            diff = (c.plain(images) - ref).abs().max().item()
            if diff > atol:
                raise RuntimeError(f"{c.name} logits differ from vitlens by {diff:.2e} (> {atol}): weights not copied")
            diffs[c.name] = diff
    return diffs


# ---------------------------------------------------------------------------------- modes
def _train_step_fn(
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


def _no_grad(fn: Callable[[Tensor], Any], images: Tensor, autocast: torch.dtype | None = None) -> Callable[[], Any]:
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
            fns[c.name] = _no_grad(c.plain, images)
        elif mode in ("maps_all", "maps_last"):
            fn = getattr(c, mode)
            if fn is not None:
                fns[c.name] = _no_grad(fn, images)
            if c.name == "vitlens":
                fns["vitlens (plain)"] = _no_grad(c.plain, images)
        elif mode == "plain_bf16" and c.name in ("vitlens", "timm"):
            fns[f"{c.name} bf16"] = _no_grad(c.plain, images, autocast=bf16)
            if c.name == "vitlens":
                fns["vitlens fp32"] = _no_grad(c.plain, images)
        elif mode == "train" and c.logits is not None:
            fns[c.name] = _train_step_fn(c.logits, list(c.model.parameters()), images, labels)
        elif mode == "train_bf16" and c.name in ("vitlens", "timm"):
            fns[f"{c.name} bf16"] = _train_step_fn(c.logits, list(c.model.parameters()), images, labels, autocast=bf16)
            if c.name == "vitlens":
                fns["vitlens fp32"] = _train_step_fn(c.logits, list(c.model.parameters()), images, labels)
        elif mode == "train_compile" and c.name in ("vitlens", "timm"):
            fns[c.name] = _train_step_fn(c.logits, list(c.model.parameters()), images, labels)
            if c.name == "vitlens":
                compiled = (compile_fn or torch.compile)(c.model)
                fns["vitlens compiled"] = _train_step_fn(compiled, list(c.model.parameters()), images, labels)
    return fns


# --------------------------------------------------------------------------------- memory
_MEMORY_SCRIPT = r"""
import json, sys, torch
from vitlens.bench import CASES, BenchCase, build_contenders
spec = json.loads(sys.argv[1])
if spec.get("tune_allocator"):
    from vitlens.allocator import tune_cpu_allocator
    tune_cpu_allocator()
case = BenchCase(**spec["case"])
torch.manual_seed(0)
model = case.build().eval().to(spec["device"])
contenders, _ = build_contenders(model, [spec["peer"]] if spec["peer"] != "vitlens" else [])
c = next(c for c in contenders if c.name == spec["peer"])
if spec["mode"].startswith("rollout"):
    from vitlens.explain import rollout
    fn = lambda x: rollout(model, x, streaming=spec["mode"] == "rollout_stream")
else:
    fn = c.plain if spec["mode"] == "plain" else getattr(c, spec["mode"])
size = case.img_size or model.config.img_hw[0]
x = torch.randn(case.batch, model.config.in_chans, size, size, device=spec["device"])
dev = torch.device(spec["device"])
def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))
try:  # reset the high-water mark to what the process holds now
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
before = status("VmRSS")
if dev.type == "cuda":
    torch.cuda.reset_peak_memory_stats(dev); base = torch.cuda.memory_allocated(dev)
with torch.inference_mode():
    out = fn(x)
if dev.type == "cuda":
    peak, delta = torch.cuda.max_memory_allocated(dev), torch.cuda.max_memory_allocated(dev) - base
else:
    peak = status("VmHWM")
    delta = peak - before
print(json.dumps({"peak_bytes": peak, "forward_bytes": delta}))
"""


def measure_memory(case: BenchCase, peer: str, mode: str, device: str = "cpu") -> dict[str, int]:
    """Peak memory of one forward in a fresh subprocess (peak RSS, VmHWM, on CPU; allocator peak on CUDA).

    ``forward_bytes`` is the peak minus what the process held just before the forward: the
    memory the forward itself needed (activations, maps), without the interpreter and weights.
    """
    spec = {"case": asdict(case), "peer": peer, "mode": mode, "device": device, "tune_allocator": is_tuned()}
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise RuntimeError(f"memory measurement {peer}/{mode} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------- a case
def run_case(
    case: BenchCase,
    peers: Sequence[str] = PEERS,
    repeats: int = 5,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    peak_gflops: float | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure every mode of ``case`` for vitlens and ``peers``; returns a JSON-ready dict."""
    device = torch.device(device)
    torch.manual_seed(0)
    model = case.build().to(device=device, dtype=dtype).eval()
    size = case.img_size or model.config.img_hw[0]
    images = torch.randn(case.batch, model.config.in_chans, size, size, device=device, dtype=dtype)
    flops = model.flops_per_image((size, size))
    result: dict[str, Any] = {
        "case": asdict(case),
        "params": model.num_params(),
        "gflop_per_image": flops / 1e9,
        "modes": {},
    }
    if peak_gflops is None:
        peak_gflops = matmul_peak_gflops(device, dtype)
    result["matmul_peak_gflops"] = peak_gflops
    contenders, skipped = build_contenders(model, peers)
    result["skipped_peers"] = skipped
    result["notes"] = {c.name: c.note for c in contenders if c.note}
    result["max_logit_diff"] = check_same_outputs(contenders, images, atol=1e-4 if dtype == torch.float32 else 0.1)

    bf16_ok = native_bf16(device)
    for mode in case.modes:
        if mode.endswith("_bf16") and not bf16_ok:
            result.setdefault("skipped_modes", {})[mode] = "no native bf16 on this device (autocast would emulate it)"
            log(f"{case.name} / {mode}: skipped, no native bf16 on this device")
            continue
        if mode == "memory":
            result["modes"]["memory"] = _memory_rows(case, contenders, str(device), log)
            continue
        if mode == "explain":
            rows = _explain_rows(model, images, repeats, log)
            if rows:
                result["modes"]["explain"] = rows
            continue
        training = mode.startswith("train")
        for c in contenders:
            c.model.train(training)
        fns = mode_functions(mode, contenders, images)
        if not fns:
            continue
        times = interleaved_times(fns, repeats, warmup=2 if mode == "train_compile" else 1, device=device)
        work = flops * case.batch * (3 if training else 1)
        rows = {}
        for name, ts in times.items():
            row = summarize(ts)
            row["images_per_s"] = case.batch / (row["median_ms"] / 1e3)
            row["gflops"] = work / (row["median_ms"] / 1e3) / 1e9
            row["pct_of_peak"] = 100 * row["gflops"] / peak_gflops
            rows[name] = row
        ref = rows.get("vitlens", next(iter(rows.values())))
        for row in rows.values():
            row["vitlens_speedup"] = row["median_ms"] / ref["median_ms"]
        result["modes"][mode] = rows
        log(_format_mode(case.name, mode, rows))
    for c in contenders:
        c.model.eval()
    return result


def _memory_rows(case: BenchCase, contenders: Sequence[Contender], device: str, log: Callable[[str], None]) -> dict:
    rows: dict[str, dict[str, int]] = {}
    jobs = [
        (c.name, mode)
        for c in contenders
        for mode in ("plain", "maps_last", "maps_all")
        if mode == "plain" or (getattr(c, mode) is not None and not (c.name == "hf" and mode == "maps_last"))
    ]
    with contextlib.suppress(ImportError):
        from .explain import rollout  # noqa: F401

        jobs += [("vitlens", "rollout"), ("vitlens", "rollout_stream")]
    for name, mode in jobs:
        row = rows[f"{name} {mode}"] = measure_memory(case, name, mode, device)
        log(
            f"  {case.name} memory {name:12s} {mode:14s} peak {row['peak_bytes'] / 2**20:8.1f} MiB "
            f"forward {row['forward_bytes'] / 2**20:8.1f} MiB"
        )
    return rows


def _explain_rows(model: VisionTransformer, images: Tensor, repeats: int, log: Callable[[str], None]) -> dict:
    """Rollout and GAE per image: batched vs a batch-1 loop of the same function."""
    try:
        from . import explain
    except ImportError:
        return {}
    rows: dict[str, Any] = {}
    for name in ("rollout", "gae"):
        fn = getattr(explain, name, None)
        if fn is None:
            continue
        loop_n = min(4, images.shape[0])

        def batched(fn=fn) -> Any:
            return fn(model, images)

        def looped(fn=fn, loop_n=loop_n) -> Any:
            return [fn(model, images[i : i + 1]) for i in range(loop_n)]

        times = interleaved_times({"batched": batched, "batch-1 loop": looped}, repeats)
        per_image_batched = statistics.median(times["batched"]) / images.shape[0]
        per_image_loop = statistics.median(times["batch-1 loop"]) / loop_n
        rows[name] = {
            "batched_ms_per_image": per_image_batched * 1e3,
            "loop_ms_per_image": per_image_loop * 1e3,
            "speedup": per_image_loop / per_image_batched,
        }
        log(f"  explain {name}: batched {per_image_batched * 1e3:.2f} ms/img, loop {per_image_loop * 1e3:.2f} ms/img")
    return rows


def _format_mode(case: str, mode: str, rows: dict[str, dict]) -> str:
    lines = [f"{case} / {mode}"]
    for name, r in rows.items():
        lines.append(
            f"  {name:18s} {r['median_ms']:9.2f} ms [{r['min_ms']:.2f}-{r['max_ms']:.2f}]  "
            f"{r['images_per_s']:8.1f} img/s  {r['pct_of_peak']:5.1f}% peak  x{r['vitlens_speedup']:.3f}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------- report
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
    from .checkpoint.files import atomic_write

    directory = Path(directory)
    paths = []
    for suffix, text in ((".json", json.dumps(report, indent=2)), (".md", to_markdown(report))):
        path = directory / f"{stem}{suffix}"
        atomic_write(path, lambda p, text=text: Path(p).write_text(text + "\n"))
        paths.append(path)
    return paths[0], paths[1]


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (the eager baseline users run), bf16 on CUDA (where flash attention needs it)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def run_suite(
    cases: Sequence[BenchCase],
    peers: Sequence[str] = PEERS,
    repeats: int = 5,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run several cases after one matmul-peak measurement; returns the full report."""
    device = torch.device(device)
    dtype = default_dtype(device)
    peak = matmul_peak_gflops(device, dtype)
    log(f"matmul peak: {peak:.0f} GFLOP/s ({dtype}) on {device} with {torch.get_num_threads()} threads")
    report: dict[str, Any] = {
        "machine": machine_info(device),
        "dtype": str(dtype),
        "matmul_peak_gflops": peak,
        "cases": [],
    }
    for case in cases:
        # a fresh peak per case: on a shared machine the available speed drifts during the run
        report["cases"].append(run_case(case, peers, repeats, device, dtype, log=log))
        report["matmul_peak_gflops"] = max(report["matmul_peak_gflops"], report["cases"][-1]["matmul_peak_gflops"])
    return report
