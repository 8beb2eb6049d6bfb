"""Resumable training checkpoints: model, optimiser, schedule, step and both random states in
one file, written atomically (engine/store/files.py), so a run killed mid-write resumes from the
previous checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.store.files import atomic_write


def save_checkpoint(path: Path, model: torch.nn.Module, opt, sched, step: int,
                    rng: np.random.Generator) -> None:
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
             "step": step, "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}
    atomic_write(Path(path), lambda p: torch.save(state, p), durable=False)


def load_checkpoint(path: Path, model: torch.nn.Module, opt, sched, rng: np.random.Generator,
                    device: str) -> int:
    """Restore everything `save_checkpoint` wrote; -> the step to continue from."""
    st = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(st["model"])
    opt.load_state_dict(st["opt"])
    sched.load_state_dict(st["sched"])
    rng.bit_generator.state = st["rng"]
    torch.set_rng_state(st["torch_rng"])
    return int(st["step"])
