"""The speed suite: vitlens against timm, Hugging Face, torchvision and vit-pytorch, same weights, one process.

:mod:`.cases` names what to measure, :mod:`.contenders` builds each library's model, :mod:`.modes`
the closures to time, :mod:`.timing` times them interleaved, :mod:`.memory` measures peak memory
in fresh processes, :mod:`.suite` runs cases, :mod:`.results` writes JSON and markdown.
"""

from .cases import CASES, MODES, BenchCase
from .contenders import PEERS, Contender, build_contenders
from .results import to_markdown, write_results
from .suite import default_dtype, run_case, run_suite
from .timing import interleaved_times, machine_info, matmul_peak_gflops, summarize

__all__ = [
    "CASES",
    "MODES",
    "PEERS",
    "BenchCase",
    "Contender",
    "build_contenders",
    "default_dtype",
    "interleaved_times",
    "machine_info",
    "matmul_peak_gflops",
    "run_case",
    "run_suite",
    "summarize",
    "to_markdown",
    "write_results",
]
