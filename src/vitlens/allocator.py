"""Keep freed CPU memory for reuse, so a forward pass does not page-fault on every buffer.

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc hands every block above a
(moving) threshold straight to the kernel with ``mmap`` and gives it back with ``munmap`` on
free, and it trims freed memory at the top of the heap back to the kernel as well. The next
forward then asks the kernel for the same memory again, and the kernel zeroes each 4 KiB page
on first touch. On a 2-core machine that costs ViT-Ti/16 (batch 8) about a third of its
inference time, and asking for attention maps — 45 MB of fresh (B, H, N, N) tensors per
forward — costs another 10-15% on top, the same for every library.

:func:`tune_cpu_allocator` sets two glibc options (``M_MMAP_THRESHOLD`` 32 MiB and
``M_TRIM_THRESHOLD`` 1 GiB) so that blocks below 32 MiB come from the heap and up to 1 GiB of
freed memory is kept for the next call: what a caching allocator does on a GPU. It changes the
whole process, so the library never calls it on import; the ``vitlens`` command and the
benchmarks do, and users opt in with one call. The same effect without code:
``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824`` in the environment, or
jemalloc/tcmalloc in ``LD_PRELOAD``; when either is set (or ``VITLENS_KEEP_ALLOCATOR``), the
function leaves things as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

DEFAULT_MMAP_THRESHOLD = 32 << 20  # glibc's largest accepted value on 64-bit systems
DEFAULT_TRIM_THRESHOLD = 1 << 30

_state: dict[str, object] = {"info": "system default", "tuned": False}


def _user_choice() -> str | None:
    """A reason to leave the allocator alone: the user already chose one."""
    for name in ("VITLENS_KEEP_ALLOCATOR", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        if os.environ.get(name):
            return f"left as set by {name}"
    preload = os.environ.get("LD_PRELOAD", "")
    for lib in ("jemalloc", "tcmalloc", "mimalloc"):
        if lib in preload:
            return f"{lib} (LD_PRELOAD)"
    return None


def tune_cpu_allocator(
    mmap_threshold: int = DEFAULT_MMAP_THRESHOLD, trim_threshold: int = DEFAULT_TRIM_THRESHOLD
) -> bool:
    """Make glibc keep freed memory for reuse; True when the settings took effect.

    A no-op (False) off glibc (macOS, Windows, musl), and when the environment already picks
    the allocator or its thresholds. Safe to call more than once.
    """
    choice = _user_choice()
    if choice:
        _state["info"] = choice
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # the mmap threshold first: a trim threshold alone switches off glibc's moving mmap
    # threshold and leaves every block above 128 KiB to mmap, which is slower still
    ok = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    ok = ok and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1
    if ok:
        _state["tuned"] = True
        _state["info"] = f"glibc, mmap threshold {mmap_threshold >> 20} MiB, trim threshold {trim_threshold >> 20} MiB"
    return ok


def allocator_info() -> str:
    """What the process's CPU allocator runs with, for benchmark records."""
    return str(_state["info"])


def is_tuned() -> bool:
    """Whether :func:`tune_cpu_allocator` changed this process's allocator."""
    return bool(_state["tuned"])
