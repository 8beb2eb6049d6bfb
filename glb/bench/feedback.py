"""Simulated analysts: what relevance feedback buys, per dataset and per round.

    python -m glb bench feedback [--json] [--write docs/FEEDBACK.md-table.md]

For every class of every held-out pool (glb/bench/feedback_data.py) an analyst
- "text" start: types the class's prompt; round 0 is the query's top 20. Each round the analyst
  marks every result shown so far by its true label, presses Refine, and sees the 20 best tiles
  not yet shown; 3 rounds. P@20 of the NEW results per round.
- "random5" start: no text, five randomly chosen relevant tiles marked; round 0 is the first
  refine from those; then as above.
Methods: each feedback method of engine/retrieval/feedback.py, and "query" (no feedback: the query's next
20, the bar "never worse than the query alone" is measured against). The scoring vectors come
from `engine.retrieval.feedback.refine`, the function `Index.search` calls, with the background sampled
from the pool as the engine samples it from the index.
"""

from __future__ import annotations

import time

import numpy as np

from .feedback_data import POOLS, load_pool

K = 20
ROUNDS = 3
MIN_RELEVANT = 5
METHODS = ("query", "rocchio-classic", "rocchio", "probe")


def _background(n: int, size: int, rng) -> np.ndarray:
    return rng.choice(n, min(size, n), replace=False)


def _next(scores: np.ndarray, seen: np.ndarray, k: int = K) -> np.ndarray:
    s = np.where(seen, -np.inf, scores)
    top = np.argpartition(-s, k)[:k] if len(s) > k else np.arange(len(s))
    top = top[np.argsort(-s[top], kind="stable")]
    return top[np.isfinite(s[top])]


def simulate(pool, q0: np.ndarray | None, start_marks: np.ndarray | None, rel: np.ndarray,
             method: str, cfg, rng_seed: int) -> list[float]:
    """P@20 of new results for round 0..ROUNDS of one class."""
    from engine.retrieval.feedback import refine

    n = len(pool.vectors)
    rng = np.random.default_rng(rng_seed)
    bg = pool.vectors[_background(n, cfg.background, rng)]
    seen = np.zeros(n, bool)
    marked: list[int] = []
    if start_marks is not None:
        seen[start_marks] = True
        marked += list(start_marks)
    out = []
    for r in range(ROUNDS + 1):
        if r == 0 and q0 is not None:
            v = q0
        elif method == "query":
            if q0 is None:  # no query to continue: the mean of the marked tiles
                v = pool.vectors[marked].mean(0)
            else:
                v = q0
        else:
            m = np.array(marked, np.int64)
            p, ng = m[rel[m]], m[~rel[m]]
            v = refine(q0, pool.vectors[p], pool.vectors[ng], bg, cfg).vector
        shown = _next(pool.vectors @ v, seen)
        out.append(float(rel[shown].mean()) if len(shown) else 0.0)
        seen[shown] = True
        marked += list(shown)
    return out


def run(pools=POOLS, methods=METHODS, smoke: bool = False, echo=print) -> dict:
    from dataclasses import replace

    from engine.encoder import load_encoder
    from engine.retrieval.feedback import FeedbackConfig

    enc = load_encoder()
    t0 = time.time()
    out = {"encoder": enc.identity, "k": K, "rounds": ROUNDS, "pools": {}}
    for name in pools:
        pool = load_pool(name, enc, echo=echo)
        texts = enc.encode_text(pool.prompts)
        res: dict = {"tiles": len(pool.vectors), "classes": {}}
        for ci, cls in enumerate(pool.classes):
            rel = pool.relevant[:, ci]
            if rel.sum() < MIN_RELEVANT or (~rel).sum() < K:
                continue
            row = {"relevant": int(rel.sum())}
            seed = 1000 * ci + 7
            five = np.random.default_rng(seed).choice(np.flatnonzero(rel), 5, replace=False)
            for method in methods:
                cfg = FeedbackConfig(method=method if method != "query" else "probe")
                cfg = replace(cfg, background=min(cfg.background, len(pool.vectors)))
                row[f"text/{method}"] = simulate(pool, texts[ci], None, rel, method, cfg, seed)
                row[f"random5/{method}"] = simulate(pool, None, five, rel, method, cfg, seed)
            res["classes"][cls] = row
            if smoke:
                break
        for key in [k for k in next(iter(res["classes"].values())) if "/" in k]:
            curves = np.array([c[key] for c in res["classes"].values()])
            res[key] = [round(float(x), 4) for x in curves.mean(0)]
        out["pools"][name] = res
        echo(f"{name}: " + "  ".join(f"{k} {res[k]}" for k in res if k.startswith("text/")))
    out["seconds"] = round(time.time() - t0, 1)
    out["summary"] = summarise(out)
    return out


def summarise(out: dict) -> dict:
    """Average over pools per start/method and round, and the targets."""
    keys = sorted({k for p in out["pools"].values() for k in p if "/" in k})
    s = {}
    for k in keys:
        curves = np.array([p[k] for p in out["pools"].values() if k in p])
        s[k] = [round(float(x), 4) for x in curves.mean(0)]
    targets = {}
    for m in METHODS:
        k = f"text/{m}"
        if k not in s:
            continue
        gain2 = s[k][2] - s[k][0]
        worst = min(out["pools"][p][k][r] - out["pools"][p][k][0] for p in out["pools"] for r in (1, 2, 3))
        vs_query = min(out["pools"][p][k][r] - out["pools"][p]["text/query"][r]
                       for p in out["pools"] for r in (1, 2, 3)) if "text/query" in s else None
        targets[m] = {"gain_round2_points": round(100 * gain2, 1),
                      "worst_pool_round_vs_round0_points": round(100 * worst, 1),
                      "worst_pool_round_vs_query_alone_points": None if vs_query is None else round(100 * vs_query, 1)}
    s["targets"] = targets
    return s


def to_markdown(out: dict) -> str:
    lines = [f"Encoder `{out['encoder']}`; P@{out['k']} of new results, mean over classes; "
             f"rounds 0..{out['rounds']}; {out['seconds']} s.", ""]
    for start in ("text", "random5"):
        lines += [f"**Start: {start}**", "",
                  "| pool | tiles | classes | method | r0 | r1 | r2 | r3 |", "|---|---|---|---|---|---|---|---|"]
        for name, p in out["pools"].items():
            for m in METHODS:
                k = f"{start}/{m}"
                if k in p:
                    lines.append(f"| {name} | {p['tiles']} | {len(p['classes'])} | {m} | "
                                 + " | ".join(f"{100 * x:.1f}" for x in p[k]) + " |")
        for m in METHODS:
            k = f"{start}/{m}"
            if k in out["summary"]:
                lines.append(f"| **mean** | | | {m} | " + " | ".join(f"{100 * x:.1f}" for x in out["summary"][k]) + " |")
        lines.append("")
    lines += ["| method | round 2 - round 0 (points, mean) | worst pool round vs its round 0 | "
              "worst pool round vs the query alone |", "|---|---|---|---|"]
    for m, t in out["summary"]["targets"].items():
        lines.append(f"| {m} | {t['gain_round2_points']:+.1f} | {t['worst_pool_round_vs_round0_points']:+.1f} | "
                     f"{t['worst_pool_round_vs_query_alone_points']:+.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import json
    import sys

    res = run(pools=sys.argv[1:] or POOLS)
    print(to_markdown(res))
    print(json.dumps(res["summary"]))
