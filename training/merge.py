"""Progressive multimodal weight merging.

Modality-group models are fine-tuned from one shared start (the base trained on everything);
each group's change is a task vector (theta_g - theta_base). The merge adds them one group at a
time, in order of how much each helps on its own, with the weight lambda in a small grid that
maximises the score on a development split carved from the training data (never the
evaluation splits): theta <- theta + lambda_g (theta_g - theta_base). lambda = 0 is in the grid,
so a group that hurts is left out, and the merged model is never worse on the dev split than
the base.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

State = dict[str, torch.Tensor]


def task_vector(finetuned: State, base: State) -> State:
    return {k: finetuned[k].float() - base[k].float() for k in base if base[k].is_floating_point()}


def apply(base: State, vectors: list[tuple[State, float]]) -> State:
    out = {k: v.clone() for k, v in base.items()}
    for vec, lam in vectors:
        for k, d in vec.items():
            out[k] = (out[k].float() + lam * d).to(base[k].dtype)
    return out


def progressive_merge(base: State, groups: dict[str, State], score: Callable[[State], float],
                      grid=(0.0, 0.25, 0.5, 0.75, 1.0), log=print) -> tuple[State, list[dict]]:
    vectors = {g: task_vector(s, base) for g, s in groups.items()}
    base_score = score(base)
    solo = {g: score(apply(base, [(v, 1.0)])) for g, v in vectors.items()}
    order = sorted(vectors, key=lambda g: -solo[g])
    log(f"merge: base {base_score:.4f}; alone: " + ", ".join(f"{g} {solo[g]:.4f}" for g in order))
    chosen: list[tuple[State, float]] = []
    current = base_score
    history = [{"step": "base", "score": base_score}]
    for g in order:
        best_lam, best = 0.0, current
        for lam in grid:
            if lam == 0.0:
                continue
            s = score(apply(base, chosen + [(vectors[g], lam)]))
            if s > best:
                best_lam, best = lam, s
        if best_lam > 0:
            chosen.append((vectors[g], best_lam))
            current = best
        history.append({"step": g, "lambda": best_lam, "alone": solo[g], "score": current})
        log(f"merge: + {g} x {best_lam} -> {current:.4f}")
    return apply(base, chosen), history
