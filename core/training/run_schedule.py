"""The part of a training run's settings that every trainer here shares: batches, optimiser
step size, run length, logging cadence, seeds and threads.

Both :class:`core.training.recipes.config.TrainConfig` (networks K, I, R, HALO) and
:class:`core.training.encoder_training.EncoderTrainConfig` (the image encoder) extend it, so
that each of these facts is declared and checked in one place. The fields are keyword-only
so that a subclass may add required fields (``network``, ``data``) after them; a subclass
changes a default by declaring the field again.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import TrainConfigError

POSITIVE_INT_FIELDS = ("batch_size", "max_iters", "checkpoint_every", "log_every", "torch_threads")


@dataclass(frozen=True, kw_only=True)
class RunSchedule:
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    max_iters: int = 1000  # the run's (or, for a campaign, the schedule's) last iteration
    checkpoint_every: int = 200
    log_every: int = 10
    seed: int = 0
    torch_threads: int = 2
    init_from: str | None = None  # earlier exported weights to start from

    def __post_init__(self) -> None:
        for name in POSITIVE_INT_FIELDS:
            if getattr(self, name) < 1:
                raise TrainConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise TrainConfigError(f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise TrainConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
