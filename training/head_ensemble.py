"""Combine the heads of several v2 runs that share the frozen tower (same trunk, same stem: the
seed runs of one recipe) into one checkpoint, for measuring.

    python -m training.head_ensemble --mode outputs OUT.safetensors A.safetensors B.safetensors ...
    python -m training.head_ensemble --mode weights OUT.safetensors A.safetensors B.safetensors ...

`outputs`: the mean of the heads' outputs (before the L2 normalisation), written as one head
whose hidden layer is the heads' hidden layers side by side (width k x head_hidden) and whose
output layer is their output layers divided by k, so the engine runs it as an ordinary
checkpoint (the config's `head_hidden` says the width). Each head's LayerNorm affine is folded
into its first linear layer, because the wide head has one LayerNorm for all of them.
`weights`: the uniform average of the head tensors ("model soup"); heads trained from
different initialisations usually do not average well (their hidden units are permuted), which
is what measuring it checks.

Every tensor outside the head must be equal in all inputs, except the stem's residual MLP's first
layer when its last layer is zero in all of them (then it does not change the output).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from engine.encoder.factory import read_checkpoint
from training.release import write_checkpoint

HEAD = ("head.0.", "head.1.", "head.3.")


def _check_shared(states: list[dict], paths: list[str]) -> None:
    for k in states[0]:
        if k.startswith("head."):
            continue
        if all(torch.equal(states[0][k], s[k]) for s in states[1:]):
            continue
        if k.startswith("stem.residual.0.") and all(
                not s["stem.residual.2.weight"].any() and not s["stem.residual.2.bias"].any() for s in states):
            continue  # feeds only a zero last layer: no effect on any output
        raise SystemExit(f"{k} differs between {paths[0]} and another input: not the same tower")


def combine_outputs(states: list[dict]) -> dict:
    """One head computing mean_i head_i(x) exactly (up to float rounding)."""
    k = len(states)
    w1, b1, w2 = [], [], []
    for s in states:
        g, beta = s["head.0.weight"], s["head.0.bias"]
        w1.append(s["head.1.weight"] * g[None, :])
        b1.append(s["head.1.bias"] + s["head.1.weight"] @ beta)
        w2.append(s["head.3.weight"] / k)
    out = dict(states[0])
    out["head.0.weight"] = torch.ones_like(states[0]["head.0.weight"])
    out["head.0.bias"] = torch.zeros_like(states[0]["head.0.bias"])
    out["head.1.weight"] = torch.cat(w1, 0)
    out["head.1.bias"] = torch.cat(b1, 0)
    out["head.3.weight"] = torch.cat(w2, 1)
    out["head.3.bias"] = torch.stack([s["head.3.bias"] for s in states]).mean(0)
    return out


def combine_weights(states: list[dict]) -> dict:
    out = dict(states[0])
    for key in states[0]:
        if key.startswith(HEAD):
            out[key] = torch.stack([s[key] for s in states]).mean(0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.head_ensemble", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["outputs", "weights"], required=True)
    ap.add_argument("out")
    ap.add_argument("inputs", nargs="+")
    args = ap.parse_args(argv)
    if len(args.inputs) < 2:
        raise SystemExit("give at least two checkpoints to combine")
    read = [read_checkpoint(p) for p in args.inputs]
    cfgs = {c.to_json() for c, _, _ in read}
    if len(cfgs) != 1:
        raise SystemExit("the checkpoints have different model configs: not the same tower")
    cfg = read[0][0]
    if cfg.vision.tower != "effnet" or cfg.vision.head_linear:
        raise SystemExit("only the v2 tower's MLP head (head_linear false) can be combined")
    states = [s for _, s, _ in read]
    _check_shared(states, args.inputs)
    if args.mode == "outputs":
        state = combine_outputs(states)
        cfg = dataclasses.replace(cfg, vision=dataclasses.replace(
            cfg.vision, head_hidden=cfg.vision.head_hidden * len(states)))
    else:
        state = combine_weights(states)
    extra = {"head_ensemble": json.dumps({"mode": args.mode, "inputs": args.inputs})}
    print(write_checkpoint(state, cfg, Path(args.out), extra))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
