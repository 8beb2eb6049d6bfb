"""Step counts for the equal-compute ablation (docs/MODEL_CARD.md, "Ablations"): the v1 ViT
from scratch, with and without MaKA, on v2's data, given the compute the released v2 run used.

    python -m training.equal_budget --reference docs/runs/v2-cpu-d.log \
        --arm ablation-v2data-vit-no-maka --out docs/runs/ablation-v2data-budget.json

The machine is shared, so wall time is not the ruler; process CPU time (all threads; it does
not advance while the process is stopped) is. The reference run's CPU time was not recorded,
so it is re-timed: the frozen prefix (its largest stage) runs now over a slice of the same AID
and UCM inputs, and `cpu_per_sample_now / wall_per_sample_in_the_log` (the CPU share that run
had then) scales its wall time to the release into CPU seconds under today's conditions.

Each ViT arm's budget then pays for its own cache first: the MaKA arm the whole teacher cache
(built here, for real: the arm's run loads it), the no-MaKA arm a teacher-free cache of the same
data, i.e. the reference run's own cache stage (it reuses the teacher cache's file, so both arms
see the same inputs and the same batches; see `base_steps`). What is left, divided by the CPU seconds of one base step measured on that cache
with and without distillation, is each arm's `base_steps`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from engine.encoder import get_model_config
from engine.encoder.factory import Encoder, create_image_tower

ROOT = Path(__file__).resolve().parents[1]
MID_LINE = re.compile(r"mid: (\w+) \(rgb, 3 bands\): (\d+) in (\d+) s")
RELEASE_LINE = re.compile(r"released .* after (\d+) s")


def cpu_s() -> float:
    return time.process_time()


def reference_walls(log_text: str) -> tuple[float, dict[str, tuple[int, float]]]:
    """(wall seconds to the released checkpoint, {source: (samples, prefix wall s)})."""
    rel = RELEASE_LINE.search(log_text)
    if rel is None:
        raise ValueError("the reference log has no 'released ... after N s' line")
    mids = {m[1]: (int(m[2]), float(m[3])) for m in MID_LINE.finditer(log_text)}
    return float(rel[1]), mids


def steps_for(budget_cpu_s: float, fixed_cpu_s: float, step_cpu_s: float) -> int:
    """Whole base steps that fit in what the budget leaves after the fixed costs (0 if none)."""
    return max(0, int((budget_cpu_s - fixed_cpu_s) // step_cpu_s))


@torch.inference_mode()
def retime_prefix(reference_cfg: dict, mids: dict[str, tuple[int, float]], n: int) -> dict:
    from training.datasets import load as load_dataset
    from training.evaluate import subset
    from training.model import pretrained_effnet_tower

    model_cfg = get_model_config(reference_cfg["model"], **reference_cfg.get("model_overrides", {}))
    prep = Encoder(create_image_tower(model_cfg), model_cfg.text, name="prep", trained=False)
    tower = pretrained_effnet_tower(model_cfg).eval()
    out = {}
    for source in ("aid", "ucm"):
        if source not in mids:
            continue
        ds = load_dataset(source, "train")
        xs, wl = [], None
        for i in subset(len(ds), n):
            s = ds[i]
            x, _ = prep.preprocess(s.pixels, s.wavelengths, s.modality)
            xs.append(x[0].half())
            wl = torch.tensor(s.wavelengths, dtype=torch.float32)
        x = torch.stack(xs)
        tower.prefix(x[:8].float(), wl)  # first call allocates; not part of the rate
        c0, w0 = cpu_s(), time.time()
        for i in range(0, len(x), 64):
            tower.prefix(x[i:i + 64].float(), wl)
        cpu, wall = cpu_s() - c0, time.time() - w0
        n_ref, wall_ref = mids[source]
        out[source] = {"samples": len(x), "size": int(x.shape[-1]), "cpu_s": cpu, "wall_s": wall,
                       "reference_samples": n_ref, "reference_wall_s": wall_ref,
                       "cpu_share_then": (cpu / len(x)) / (wall_ref / n_ref)}
    return out


class OverBudget(Exception):
    pass


def build_and_time_cache(cfg: dict, budget_cpu_s: float) -> tuple[dict, object]:
    """Build the arm's cache (the real one, under runs/cache/) and split its CPU time into
    the per-source loop, the teacher forward passes and the caption embedding. Raises
    OverBudget at the first log line past the budget."""
    from training.cache import build_cache, cache_key

    model_cfg = get_model_config(cfg.get("model", "glb-vit-s8"), **cfg.get("model_overrides", {}))
    prep = Encoder(create_image_tower(model_cfg), model_cfg.text, name="prep", trained=False)
    marks: list[tuple[str, float, float]] = []

    def log(msg: str) -> None:
        marks.append((msg, cpu_s(), time.time()))
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
        if marks[-1][1] - c0 > budget_cpu_s:
            raise OverBudget(f"{marks[-1][1] - c0:.0f} CPU s at '{msg}'")

    cache_dir = Path(cfg.get("cache_dir", ROOT / "runs" / "cache"))
    path = cache_dir / f"cache-{cache_key(cfg)}.pt"
    if path.exists():
        raise SystemExit(f"{path} exists: its build cost is in the budget file already, or "
                         "delete it to re-measure")
    c0, w0 = cpu_s(), time.time()
    cache = build_cache(cfg, prep, cache_dir, log_fn=log)
    c_end, w_end = cpu_s(), time.time()
    loop_end = max(i for i, (m, _, _) in enumerate(marks)
                   if re.match(r"cache: (\w+): \d+ samples in|cache: dropped", m))
    emb_start = next(i for i, (m, _, _) in enumerate(marks) if m.startswith("cache: embedding"))
    teacher_cpu = marks[emb_start][1] - marks[loop_end][1]  # 0 without teachers
    c1 = cpu_s()
    del cache
    cache = torch.load(path, weights_only=False)
    load_cpu = cpu_s() - c1
    return {"path": str(path), "bytes": path.stat().st_size, "cpu_s": c_end - c0,
            "wall_s": w_end - w0, "teacher_cpu_s": teacher_cpu,
            "teacher_wall_s": marks[emb_start][2] - marks[loop_end][2],
            "load_cpu_s": load_cpu, "samples": cache.info["samples"]}, cache


def time_steps(cfg: dict, cache, distill: float, warmup: int, measured: int) -> dict:
    from training.train import Trainer

    marks: list[float] = []
    tmp = Path(tempfile.mkdtemp(prefix="equal-budget-"))
    try:
        run_cfg = {**cfg, "distill_weight": distill, "log_every": 1, "checkpoint_every": 10 ** 9}
        tr = Trainer(run_cfg, cache, tmp, "cpu", lambda m, data=None: marks.append(cpu_s()))
        groups = [g for g in cache.groups if g.source not in set(cfg.get("exclude", []))]
        w0 = time.time()
        tr.run_stage("calibrate", groups, warmup + measured, 1e-3, cfg.get("seed", 0), use_pairs=True)
        wall = time.time() - w0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    per_step = (marks[-1] - marks[warmup - 1]) / measured
    return {"distill_weight": distill, "warmup_steps": warmup, "measured_steps": measured,
            "cpu_s_per_step": per_step, "wall_s_all_steps": wall}


def main(argv: list[str] | None = None) -> int:
    from training.config import load_config

    ap = argparse.ArgumentParser(prog="python -m training.equal_budget", description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", default="docs/runs/v2-cpu-d.log")
    ap.add_argument("--reference-config", default="v2-cpu-d")
    ap.add_argument("--arm", action="append", required=True, help="an ablation config (repeatable)")
    ap.add_argument("--prefix-samples", type=int, default=192)
    ap.add_argument("--warmup-steps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--out", default="docs/runs/ablation-v2data-budget.json")
    a = ap.parse_args(argv)
    out = Path(a.out)
    result = json.loads(out.read_text()) if out.exists() else {}
    torch.set_num_threads(2)
    ref_wall, mids = reference_walls(Path(a.reference).read_text())
    load0 = os.getloadavg()
    prefix = retime_prefix(load_config(a.reference_config), mids, a.prefix_samples)
    share = float(np.mean([p["cpu_share_then"] for p in prefix.values()]))
    budget = share * ref_wall
    print(f"reference: {ref_wall:.0f} s wall to release x CPU share {share:.2f} = {budget:.0f} CPU s")
    result["reference"] = {"log": a.reference, "wall_s_to_release": ref_wall,
                           "prefix_retimed": prefix, "cpu_share_then": share, "budget_cpu_s": budget,
                           "when": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg": load0}
    arms = result.setdefault("arms", {})
    for name in a.arm:
        cfg = load_config(name)
        arm = arms[name] = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg_start": os.getloadavg()}
        try:
            cache_info, cache = build_and_time_cache(cfg, budget)
        except OverBudget as e:
            arm.update(over_budget=str(e), base_steps=0)
            print(f"{name}: its cache alone passes the budget ({e}): 0 steps")
            continue
        step = time_steps(cfg, cache, float(cfg.get("distill_weight", 1.0)), a.warmup_steps, a.steps)
        fixed = cache_info["cpu_s"] + cache_info["load_cpu_s"]
        arm.update(cache=cache_info, step=step, fixed_cpu_s=fixed,
                   base_steps=steps_for(budget, fixed, step["cpu_s_per_step"]),
                   loadavg_end=os.getloadavg())
        print(f"{name}: {arm['base_steps']} base steps")
        out.write_text(json.dumps(result, indent=1) + "\n")
    out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
