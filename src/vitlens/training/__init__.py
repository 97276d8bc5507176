"""Training: the loop (AdamW, warm-up + cosine, EMA, bf16), checkpoints and resume, evaluation, torchrun.

``train(TrainConfig(...))`` runs a job from scratch, ``resume(run_dir)`` continues one; both run
data-parallel under ``torchrun``. Nothing here knows about explanations.
"""

from .config import TrainConfig
from .evaluate import EvalResult, evaluate, evaluate_checkpoint
from .loop import NonFiniteLossError, TrainResult, resume, train

__all__ = [
    "EvalResult",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "evaluate_checkpoint",
    "resume",
    "train",
]
