"""The optimiser and its parameter groups (open_clip_train's `params.py`): weight decay on
matrices only, never on biases, norms, scales or embeddings of one dimension."""

from __future__ import annotations

import torch


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, lr: float, optim: dict) -> torch.optim.Optimizer:
    """AdamW (betas 0.9, 0.98) from a config's `optim` section (`weight_decay`, default 0.05)."""
    return torch.optim.AdamW(param_groups(model, float(optim.get("weight_decay", 0.05))), lr=lr,
                             betas=(0.9, 0.98))
