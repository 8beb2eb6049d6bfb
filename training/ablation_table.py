"""`python -m training.ablation_table [RUNS_DIR]`: the ablation table of docs/MODEL_CARD.md, in
Markdown, from each run's RUNS_DIR/<name>/eval/eval.json (`make ablations` writes them).
Runs that have not finished are left out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

RUNS = [
    ("ablation-full", "full recipe"),
    ("ablation-no-maka", "without MaKA (distillation weight 0)"),
    ("ablation-fixed-stems", "fixed per-modality stems instead of the wavelength generator"),
    ("ablation-no-merge", "without merging (all 390 steps on the base)"),
    ("ablation-pairs", "with the S1–S2 pair term"),
    ("loo-harvey", "without Harvey in training"),
]

SHORT = {
    "zero-shot eurosat_rgb val (5 classes)": "EuroSAT-RGB",
    "zero-shot eurosat_ms test (10 classes)": "EuroSAT-MS",
    "zero-shot mstar val (10 classes)": "MSTAR",
    "zero-shot ombria_s1 test (2 classes)": "OMBRIA S1",
    "zero-shot ombria_s2 test (2 classes)": "OMBRIA S2",
    "zero-shot harvey test (2 classes)": "Harvey",
    "zero-shot hit_uav test (2 classes)": "HIT-UAV",
    "OMBRIA test S1 -> S2 partner retrieval": "S1→S2",
    "text 'flooded land' -> S1 OMBRIA test": "AP S1",
    "text 'flooded land' -> S2 OMBRIA test": "AP S2",
    "text 'flooded land' -> S1+S2 OMBRIA test": "AP S1+S2",
}


def table(runs_dir: Path) -> str:
    done = [(name, what, json.loads(p.read_text())["rows"]) for name, what in RUNS
            if (p := runs_dir / name / "eval" / "eval.json").exists()]
    if not done:
        return "(no finished runs)"
    cols = [(r["task"], r["metric"]) for r in done[0][2]]
    heads = [SHORT.get(t, t) + ("" if m in ("top-1", "AP") else f" {m}") for t, m in cols]
    lines = ["| run | " + " | ".join(heads) + " |", "|---|" + "---|" * len(cols),
             "| chance | " + " | ".join(f"{100 * r['chance']:.1f}" for r in done[0][2]) + " |"]
    for name, what, rows in done:
        vals = {(r["task"], r["metric"]): r["value"] for r in rows}
        lines.append(f"| {what} (`{name}`) | " + " | ".join(f"{100 * vals[c]:.1f}" for c in cols) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1] if len(sys.argv) > 1 else "runs")))
