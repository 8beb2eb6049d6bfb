"""Learning-rate schedules (open_clip_train's `scheduler.py`)."""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, steps: int, warmup: int) -> float:
    """The factor on the base learning rate at `step`: linear warm-up over `warmup` steps,
    then a cosine decay to 0 at `steps`."""
    return min(1.0, (step + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, steps))))


def warmup_cosine_schedule(opt: torch.optim.Optimizer, steps: int,
                           warmup_fraction: float) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(1, int(steps * warmup_fraction))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, steps, warmup))
