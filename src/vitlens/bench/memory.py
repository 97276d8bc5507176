"""Peak memory of one forward, measured in a fresh process so that nothing else's peak counts.

``measure_memory(case, peer, mode)`` runs ``python -m vitlens.bench.memory SPEC`` (SPEC: the case,
contender and mode as JSON), which builds the model, resets the process's high-water mark, runs
one forward under ``inference_mode`` and prints ``{"peak_bytes", "forward_bytes"}`` as JSON.
On CPU the peak is the resident-set high-water mark (``VmHWM``); on CUDA the allocator's peak.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from ..allocator import is_tuned, tune_cpu_allocator
from .cases import BenchCase


def _explanations() -> dict[str, Callable[[Any, torch.Tensor], Any]]:
    """vitlens-only modes: the maps and explanations whose memory the high-resolution rows compare."""
    from .. import explain

    def target(model):
        return None if model.config.num_classes else explain.norm_target(model)

    return {
        "cls_rows": lambda model, x: model(x, return_attention=[-1], queries="cls"),
        "rollout": lambda model, x: explain.rollout(model, x),
        "rollout_stream": lambda model, x: explain.rollout(model, x, streaming=True),
        "rollout_rows": lambda model, x: explain.rollout(model, x, rows=True),
        "gae": lambda model, x: explain.gae(model, x, target(model)),
        "gae_bounded": lambda model, x: explain.gae(model, x, target(model), bounded=True),
        "attnlrp": lambda model, x: explain.attnlrp(model, x, target(model)),
    }


EXPLAIN_MODES = ("cls_rows", "rollout", "rollout_stream", "rollout_rows", "gae", "gae_bounded", "attnlrp")
GRADIENT_MODES = ("gae", "gae_bounded", "attnlrp")  # they run their own backward: measured outside inference mode


def _status(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def _reset_high_water_mark() -> None:
    """Make ``VmHWM`` start again from what the process holds now (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def forward_function(case: BenchCase, peer: str, mode: str, model) -> Callable[[torch.Tensor], Any]:
    """The call to measure: a contender's plain or maps forward, or a vitlens rollout."""
    if mode in EXPLAIN_MODES:
        explanation = _explanations()[mode]
        return lambda x: explanation(model, x)
    from .contenders import build_contenders

    contenders, _ = build_contenders(model, [peer] if peer != "vitlens" else [], timm_name=case.model)
    contender = next(c for c in contenders if c.name == peer)
    return contender.plain if mode == "plain" else getattr(contender, mode)


def probe(spec: dict[str, Any]) -> dict[str, int]:
    """Build, then measure one forward of ``spec`` in this process (meant to be a fresh one)."""
    if spec.get("tune_allocator"):
        tune_cpu_allocator()
    case = BenchCase(**spec["case"])
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    model = case.build().eval().to(device)
    fn = forward_function(case, spec["peer"], spec["mode"], model)
    size = case.img_size or model.config.img_hw[0]
    x = torch.randn(case.batch, model.config.in_chans, size, size, device=device)
    _reset_high_water_mark()
    before = _status("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    with torch.inference_mode(spec["mode"] not in GRADIENT_MODES):
        fn(x)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_bytes": peak, "forward_bytes": peak - base}
    peak = _status("VmHWM")
    return {"peak_bytes": peak, "forward_bytes": peak - before}


def measure_memory(case: BenchCase, peer: str, mode: str, device: str = "cpu") -> dict[str, int]:
    """Peak memory of one forward in a fresh subprocess (see the module docstring).

    ``forward_bytes`` is the peak minus what the process held just before the forward: the
    memory the forward itself needed (activations, maps), without the interpreter and weights.
    """
    spec = {"case": asdict(case), "peer": peer, "mode": mode, "device": device, "tune_allocator": is_tuned()}
    proc = subprocess.run(
        [sys.executable, "-m", "vitlens.bench.memory", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise RuntimeError(f"memory measurement {peer}/{mode} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vitlens.bench.memory SPEC_JSON", file=sys.stderr)
        return 2
    print(json.dumps(probe(json.loads(args[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
