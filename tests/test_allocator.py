"""The allocator tuning: memory freed by one forward is kept and reused by the next."""

import json
import os
import platform
import subprocess
import sys

import pytest
import torch

import vitlens
from vitlens import allocator

# In a fresh process: where a 20 MiB tensor lives (mmap or heap) and whether the heap keeps it
# after it is freed (glibc's mallinfo2); then the minor page faults of a forward-like pattern
# (twelve 4 MiB tensors filled, kept, freed together) on its second and later runs.
_PROBE = r"""
import ctypes, json, resource, sys, torch
from vitlens.allocator import allocator_info, tune_cpu_allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
tuned = tune_cpu_allocator() if sys.argv[1] == "tune" else False
before = libc.mallinfo2()
t = torch.empty(5 << 20).fill_(1.0)
during = libc.mallinfo2()
del t
after = libc.mallinfo2()

def forward_like():
    maps = [torch.empty(1 << 20).fill_(1.0) for _ in range(12)]
    return sum(float(m[-1]) for m in maps)
forward_like(); forward_like()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    forward_like()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 5
print(json.dumps({
    "tuned": tuned, "info": allocator_info(), "faults": faults,
    "mmapped_for_block": during.hblkhd - before.hblkhd, "heap_kept": after.arena - before.arena,
}))
"""

MIB = 1 << 20


def _probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "VITLENS_KEEP", "GLIBC_TUNABLES"))}
    clean.pop("LD_PRELOAD", None)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, env={**clean, **env}
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)


@glibc_only
def test_tuned_allocator_keeps_freed_memory_for_the_next_forward():
    default, tuned = _probe("default"), _probe("tune")
    assert not default["tuned"] and tuned["tuned"]
    assert tuned["info"] == "glibc, mmap threshold 32 MiB, trim threshold 1024 MiB"
    # glibc's defaults map a 20 MiB block on its own and unmap it on free ...
    assert default["mmapped_for_block"] >= 20 * MIB, default
    # ... tuned, it comes from the heap, which keeps it after the free (the heap grew by the block,
    # less whatever free space it already had: a few KiB to spare after importing vitlens)
    assert tuned["mmapped_for_block"] == 0 and tuned["heap_kept"] >= 19 * MIB, tuned
    # so a forward's 12 x 4 MiB (12288 pages) reuse pages instead of faulting them in again
    assert tuned["faults"] < 1000, tuned


@glibc_only
def test_a_users_own_allocator_settings_are_left_alone():
    got = _probe("tune", MALLOC_TRIM_THRESHOLD_="131072")
    assert not got["tuned"] and got["info"] == "left as set by MALLOC_TRIM_THRESHOLD_"
    assert got["mmapped_for_block"] >= 20 * MIB
    assert _probe("tune", VITLENS_KEEP_ALLOCATOR="1")["info"] == "left as set by VITLENS_KEEP_ALLOCATOR"


def test_tuning_is_exported_and_reported_in_benchmark_records():
    from vitlens.bench import machine_info

    assert vitlens.tune_cpu_allocator is allocator.tune_cpu_allocator
    assert machine_info(torch.device("cpu"))["allocator"] == allocator.allocator_info()
