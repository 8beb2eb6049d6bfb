"""Simulated analysts: what relevance feedback buys, per dataset and per round.

    python -m glb bench feedback [--encoder NAME] [--pools A,B] [--methods M,N] [--set KEY=VALUE]
                                 [--json] [--write FILE]
    python -m glb.bench.feedback noise     the blend rule on synthetic noise / signal marks

For every class of every held-out pool (glb/bench/feedback_data.py) an analyst
- "text" start: types the class's prompt; round 0 is the query's top 20. Each round the analyst
  marks every result shown so far by its true label, presses Refine, and sees the 20 best tiles
  not yet shown; 3 rounds. P@20 of the NEW results per round, and the same against what was
  still findable: hits / min(20, relevant tiles not shown yet) (small pools run out of relevant
  tiles, so P@20 of new results must fall there whatever the method).
- "random5" start: no text, five randomly chosen relevant tiles marked; round 0 is the first
  refine from those; then as above.
Methods: each feedback method of engine/retrieval/feedback.py, and "query" (no feedback: the query's next
20, the bar "never worse than the query alone" is measured against). The scoring vectors come
from `engine.retrieval.feedback.refine`, the function `Index.search` calls, with a uniform random
background sample of the pool (the engine draws its own by tile-id keys, `index.background_sample`:
also uniform; the pools have no tile ids); its top `rerank_candidates` unseen tiles
are re-ranked by `feedback.diffuse`, as `Index.search` re-ranks the planner's candidates.
"""

from __future__ import annotations

import time

import numpy as np

from .feedback_data import POOLS, load_pool

K = 20
ROUNDS = 3
MIN_RELEVANT = 5
METHODS = ("query", "rocchio-classic", "rocchio", "probe", "ceiling", "oracle")
# "ceiling" is no method but a reference: one logistic regression fitted on ALL the pool's labels
# (the tiles still to be found included), searched with after round 0. Feedback searches with one
# vector; this is about the best one vector does in this encoder's space (not a strict bound on
# P@20), so it shows how much the space leaves feedback to gain.
# "oracle" is no method either: after round 0 it shows every relevant tile not shown yet before
# any other (it reads the labels). It is the most any method can score on each measure, so it
# says which targets the pools allow at all (P@20 of new results must fall as a pool runs out).


def _background(n: int, size: int, rng) -> np.ndarray:
    return rng.choice(n, min(size, n), replace=False)


def _next(scores: np.ndarray, seen: np.ndarray, k: int = K) -> np.ndarray:
    s = np.where(seen, -np.inf, scores)
    top = np.argpartition(-s, k)[:k] if len(s) > k else np.arange(len(s))
    top = top[np.argsort(-s[top], kind="stable")]
    return top[np.isfinite(s[top])]


def _ceiling(vectors: np.ndarray, rel: np.ndarray) -> np.ndarray:
    from engine.retrieval.feedback import _logreg, _unit

    w = np.where(rel, 0.5 / rel.sum(), 0.5 / (~rel).sum())
    return _unit(_logreg(vectors, rel.astype(np.float64), w, 0.01)[:-1].astype(np.float32))


def simulate(pool, q0: np.ndarray | None, start_marks: np.ndarray | None, rel: np.ndarray,
             method: str, cfg, rng_seed: int, mark_neighbours: int = 0) -> tuple[list[float], list[float]]:
    """Round 0..ROUNDS of one class -> (P@20 of the new results, the same against what was
    still findable: hits / min(20, relevant tiles not shown yet); NaN when none was left).
    `mark_neighbours` M > 0: a variant measured and not adopted (docs/FEEDBACK.md): the re-rank's
    candidates also take each relevant mark's M nearest unseen tiles."""
    from engine.retrieval.feedback import diffuse, refine

    n = len(pool.vectors)
    rng = np.random.default_rng(rng_seed)
    bg = pool.vectors[_background(n, cfg.background, rng)]
    seen = np.zeros(n, bool)
    marked: list[int] = []
    if start_marks is not None:
        seen[start_marks] = True
        marked += list(start_marks)
    out, findable = [], []
    for r in range(ROUNDS + 1):
        shown = None
        if r == 0 and q0 is not None:
            v = q0
        elif method == "ceiling":
            v = _ceiling(pool.vectors, rel)
        elif method == "oracle":
            v = q0 if q0 is not None else pool.vectors[marked].mean(0)
            shown = _next(np.where(rel, 2.0, 0.0) + pool.vectors @ v / 4, seen)
        elif method == "query":
            if q0 is None:  # no query to continue: the mean of the marked tiles
                v = pool.vectors[marked].mean(0)
            else:
                v = q0
        else:
            m = np.array(marked, np.int64)
            p, ng = m[rel[m]], m[~rel[m]]
            refined = refine(q0, pool.vectors[p], pool.vectors[ng], bg, cfg)
            v = refined.vector
            if refined.reranks:  # as Index.search does: the vector's top candidates, re-ranked
                scores = pool.vectors @ v
                cand = _next(scores, seen, max(K, cfg.rerank_candidates))
                if mark_neighbours > 0 and len(p):
                    near = pool.vectors[p] @ pool.vectors.T
                    near[:, seen] = -np.inf
                    m_ = min(mark_neighbours, int((~seen).sum()) - 1)
                    if m_ > 0:
                        extra = np.unique(np.argpartition(-near, m_, axis=1)[:, :m_])
                        extra = extra[~seen[extra]]
                        cand = np.concatenate([cand, np.setdiff1d(extra, cand)])
                new = diffuse(refined, pool.vectors[cand], scores[cand])
                order = np.lexsort((cand, -new))
                shown = cand[order][:K]
        if shown is None:
            shown = _next(pool.vectors @ v, seen)
        left = int((rel & ~seen).sum())
        hits = int(rel[shown].sum())
        out.append(hits / len(shown) if len(shown) else 0.0)
        findable.append(hits / min(K, left) if left else float("nan"))
        seen[shown] = True
        marked += list(shown)
    return out, findable


METRICS = ("new", "findable")   # P@20 of the new results; the same against what was findable


def _nanmean(curves) -> list:
    import warnings

    a = np.array(curves, np.float64)
    with warnings.catch_warnings():  # a round where no class had anything left: NaN, said as –
        warnings.simplefilter("ignore", RuntimeWarning)
        m = np.nanmean(a, 0)
    return [None if not np.isfinite(x) else round(float(x), 4) for x in m]


def _arr(curve) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in curve], np.float64)


def run(pools=POOLS, methods=METHODS, smoke: bool = False, echo=print, encoder: str | None = None,
        config=None, mark_neighbours: int = 0) -> dict:
    """`encoder`: a registry name (`glb encoders`; default: the default encoder). `config`: the
    FeedbackConfig the feedback methods start from (each run sets its `method`).
    `mark_neighbours`: see `simulate` (0: the re-rank as Index.search does it)."""
    from dataclasses import replace

    from engine.encoder import load_encoder
    from engine.retrieval.feedback import FeedbackConfig

    enc = load_encoder(encoder)
    base = config or FeedbackConfig()
    t0 = time.time()
    default = FeedbackConfig()
    out = {"encoder": enc.identity, "k": K, "rounds": ROUNDS, "methods": list(methods),
           "config": {k: v for k, v in base.__dict__.items() if k != "method"},
           "config_changed": {k: v for k, v in base.__dict__.items()
                              if k != "method" and v != getattr(default, k)},
           "mark_neighbours": mark_neighbours, "pools": {}}
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
                cfg = replace(base, method=method if method not in ("query", "ceiling", "oracle") else base.method)
                cfg = replace(cfg, background=min(cfg.background, len(pool.vectors)))
                for start, q0, marks in (("text", texts[ci], None), ("random5", None, five)):
                    new, findable = simulate(pool, q0, marks, rel, method, cfg, seed, mark_neighbours)
                    row[f"{start}/{method}"] = new
                    row[f"{start}/{method}/findable"] = [None if np.isnan(x) else x for x in findable]
            res["classes"][cls] = row
            if smoke:
                break
        for key in [k for k in next(iter(res["classes"].values())) if "/" in k]:
            res[key] = _nanmean([_arr(c[key]) for c in res["classes"].values()])
        out["pools"][name] = res
        echo(f"{name}: " + "  ".join(f"{k} {res[k]}" for k in res if k.startswith("text/")))
    out["seconds"] = round(time.time() - t0, 1)
    out["summary"] = summarise(out)
    return out


def _key(start: str, method: str, metric: str) -> str:
    return f"{start}/{method}" + ("/findable" if metric == "findable" else "")


def summarise(out: dict) -> dict:
    """Average over pools per start/method/metric and round, and the targets (from text): the
    round-2 gain over round 0, the worst pool round against its round 0, and against the
    query alone at the same round."""
    pools = out["pools"].values()
    keys = sorted({k for p in pools for k in p if "/" in k})
    s = {k: _nanmean([_arr(p[k]) for p in pools if k in p]) for k in keys}
    targets: dict = {}
    for metric in METRICS:
        targets[metric] = {}
        for m in out.get("methods", METHODS):
            k, kq = _key("text", m, metric), _key("text", "query", metric)
            if k not in s:
                continue
            # round 2 - round 0 per pool where both are defined, averaged over those pools
            gains = [_arr(p[k])[2] - _arr(p[k])[0] for p in pools
                     if np.isfinite(_arr(p[k])[[0, 2]]).all()]
            worst_r0, worst_q = [], []
            for name, p in out["pools"].items():
                c = _arr(p[k])
                for r in range(1, len(c)):
                    if np.isfinite(c[r]) and np.isfinite(c[0]):
                        worst_r0.append((c[r] - c[0], name, r))
                    if kq in p and np.isfinite(c[r]) and np.isfinite(_arr(p[kq])[r]):
                        worst_q.append((c[r] - _arr(p[kq])[r], name, r))
            below = sorted({(n, r) for d, n, r in worst_r0 if d < -1e-9 and r <= 2})
            w0, wq = min(worst_r0) if worst_r0 else None, min(worst_q) if worst_q else None
            targets[metric][m] = {
                "gain_round2_points": round(100 * float(np.mean(gains)), 1) if gains else None,
                "gain_pools": len(gains),
                "worst_pool_round_vs_round0_points": None if w0 is None else round(100 * w0[0], 1),
                "worst_pool_round_vs_round0": None if w0 is None else f"{w0[1]} r{w0[2]}",
                "pools_below_round0_by_round2": [f"{n} r{r}" for n, r in below],
                "worst_pool_round_vs_query_alone_points": None if wq is None else round(100 * wq[0], 1),
                "worst_pool_round_vs_query_alone": None if wq is None else f"{wq[1]} r{wq[2]}"}
    s["targets"] = targets
    return s


def _cells(curve) -> str:
    return " | ".join("–" if x is None else f"{100 * x:.1f}" for x in curve)


def to_markdown(out: dict) -> str:
    methods = out.get("methods", METHODS)
    lines = [f"Encoder `{out['encoder']}`; mean over classes; rounds 0..{out['rounds']}; "
             f"{out['seconds']} s. **new**: P@{out['k']} of the new results. **findable**: hits / "
             f"min({out['k']}, relevant tiles not shown yet), the share of what could still be "
             f"found (– where nothing was left). FeedbackConfig: "
             + (", ".join(f"{k}={v}" for k, v in out.get("config_changed", {}).items()) or "the defaults")
             + "." + (f" Re-rank candidates also: each relevant mark's {out['mark_neighbours']} "
                      f"nearest unseen tiles." if out.get("mark_neighbours") else ""), ""]
    for start in ("text", "random5"):
        lines += [f"**Start: {start}**", "",
                  "| pool | tiles | classes | method | new r0 | r1 | r2 | r3 | findable r0 | r1 | r2 | r3 |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        rows = [(name, p) for name, p in out["pools"].items()] + [("**mean**", None)]
        for name, p in rows:
            for m in methods:
                src = p if p is not None else out["summary"]
                kn, kf = _key(start, m, "new"), _key(start, m, "findable")
                if kn not in src:
                    continue
                head = (f"| {name} | {p['tiles']} | {len(p['classes'])} | {m} | " if p is not None
                        else f"| {name} | | | {m} | ")
                lines.append(head + _cells(src[kn]) + " | " + _cells(src.get(kf, [None] * 4)) + " |")
        lines.append("")
    lines += ["Targets, from text (pools averaged; a pool round counts where it is defined):", "",
              "| metric | method | round 2 − round 0 (points, mean over pools) | worst pool round vs its round 0 | "
              "pool rounds 1–2 below round 0 | worst pool round vs the query alone |",
              "|---|---|---|---|---|---|"]
    for metric, per in out["summary"]["targets"].items():
        for m, t in per.items():
            w0 = ("–" if t["worst_pool_round_vs_round0_points"] is None else
                  f"{t['worst_pool_round_vs_round0_points']:+.1f} ({t['worst_pool_round_vs_round0']})")
            wq = ("–" if t["worst_pool_round_vs_query_alone_points"] is None else
                  f"{t['worst_pool_round_vs_query_alone_points']:+.1f} ({t['worst_pool_round_vs_query_alone']})")
            gain = "–" if t["gain_round2_points"] is None else f"{t['gain_round2_points']:+.1f}"
            if t["gain_pools"] < len(out["pools"]):
                gain += f" ({t['gain_pools']} pools)"
            lines.append(f"| {metric} | {m} | {gain} | {w0} | "
                         f"{', '.join(t['pools_below_round0_by_round2']) or 'none'} | {wq} |")
    return "\n".join(lines) + "\n"


def noise_check(config=None, seeds: int = 30, d: int = 64) -> dict:
    """How often the blend rule leaves the query on marks that carry nothing (relevant and
    not-relevant marks drawn from one distribution around the query), and how often it uses
    marks that separate along a direction the query lacks: per (relevant, not relevant) count."""
    from engine.retrieval.feedback import refine

    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
    out = {}
    for npos, nneg in ((20, 20), (7, 13), (3, 17)):
        moved = used = 0
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            q = unit(rng.standard_normal(d))
            bg = unit(rng.standard_normal((300, d)))
            noise = unit(q + 0.3 * rng.standard_normal((npos + nneg, d)))
            moved += refine(q, noise[:npos], noise[npos:], bg, config).weight > 0
            signal = unit(rng.standard_normal(d))
            pos = unit(q + 0.6 * signal + 0.3 * rng.standard_normal((npos, d)))
            neg = unit(q - 0.6 * signal + 0.3 * rng.standard_normal((nneg, d)))
            used += refine(q, pos, neg, bg, config).weight > 0
        out[f"{npos}+{nneg}"] = {"noise_moved": int(moved), "signal_used": int(used), "seeds": seeds}
    return out


if __name__ == "__main__":
    import json
    import sys

    if sys.argv[1:] == ["noise"]:  # python -m glb.bench.feedback noise
        from engine.retrieval.feedback import FeedbackConfig

        for name, cfg in (("default", FeedbackConfig()),
                          ("first version", FeedbackConfig(margin=0.02, margin_noise=0.25, min_auc=0.55,
                                                           confidence=0)),
                          ("no guard", FeedbackConfig(confidence=0))):
            print(name, json.dumps(noise_check(cfg)))
        sys.exit(0)
    res = run(pools=sys.argv[1:] or POOLS)
    print(to_markdown(res))
    print(json.dumps(res["summary"]))
