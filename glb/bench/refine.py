"""`glb bench refine --vectors N`: latency of a relevance-feedback refine against the plain
query it refines, same process, same archive (the synthetic one of glb/bench/data.py, written
through the real store and shared with `glb bench search`), same queries.

Per query: the plain search (k=20) is timed; its top 5 are marked relevant and the next 15 not
relevant, as an analyst's first round would; then the refine (`Index.search(vector=q,
positives=..., negatives=..., exclude=marks, k=20)`: background sample, the probe fitted with
cross-validated blending, the search with the refined vector and the re-rank of its top
candidates) is timed, and the same refine with one vector (`rerank_candidates=0`), unfiltered and inside a
bbox + modality filter. Plain and refine alternate query by query, so both see the same load.
Every figure is the median over `repeats` runs of the query set, with its spread and the load
average at the end of each run (the machine is shared); the ratio refine / plain is what to
compare across machines. The query is a vector (the synthetic archive has no text encoder): a
text query adds the same text-encoding time to both.
"""

from __future__ import annotations

import time
from pathlib import Path

from . import data
from .common import loadavg, machine, median_spread, pct
from .search import DEFAULT_ROOT


def run(n_vectors: int, *, smoke: bool = False, repeats: int = 3, n_queries: int = 20,
        root: Path | None = None, echo=print) -> dict:
    import os
    import tempfile
    from dataclasses import replace

    import engine
    from engine.retrieval.feedback import FeedbackConfig

    saved = {k: os.environ.get(k) for k in ("GLB_QUANT_MIN_ROWS", "GLB_PQ_M")}
    root = Path(root or DEFAULT_ROOT)
    if smoke:
        root = Path(tempfile.mkdtemp(prefix="glb-bench-smoke-"))
        repeats, n_queries = 1, 3
    path = root / f"search-{n_vectors}" / "index"
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {"vectors": n_vectors, "k": 20, "marks": {"relevant": 5, "not_relevant": 15},
           "repeats": repeats, "queries": n_queries, "smoke": smoke, "machine": machine(),
           "loadavg_start": loadavg(), "feedback": FeedbackConfig().__dict__}
    try:
        t0 = time.perf_counter()
        built = data.build_index(path, n_vectors, echo=echo)
        out["build_s"] = round(time.perf_counter() - t0, 1)
        idx = engine.open(path)
        w = data.world(0)
        Q = data.queries(w, n_queries, seed=11)
        a = built["arrays"]
        t0 = time.perf_counter()
        first = idx.search(vector=Q[0], k=20)  # loads the snapshot, builds / loads the vector index
        out["first_search_s"] = round(time.perf_counter() - t0, 1)
        out["vector_index"] = first.attrs["plan"].get("index")
        # a region of ~1 % of the archive around the first tile, and its modality
        cx, cy = float(a["minx"][0]), float(a["miny"][0])
        bbox = (cx - 4, cy - 4, cx + 4, cy + 4)
        cases = {"none": {}, "bbox+modality": {"bbox": bbox, "modality": engine.MODALITIES[int(a["modality"][0])]}}
        one_vector = replace(FeedbackConfig(), rerank_candidates=0)
        marks = {}
        for c, f in cases.items():
            for i, q in enumerate(Q):
                ids = [int(t) for t in idx.search(vector=q, k=20, **f)["tile_id"]]
                marks[c, i] = (ids[:5], ids[5:20])
        res = {}
        for c, f in cases.items():
            plain, refine, one, fit, weights, loads = [], [], [], [], [], []
            for _ in range(repeats):
                p_run, r_run, o_run = [], [], []
                for i, q in enumerate(Q):
                    t = time.perf_counter()
                    idx.search(vector=q, k=20, **f)
                    p_run.append(1000 * (time.perf_counter() - t))
                    pos, neg = marks[c, i]
                    t = time.perf_counter()
                    r = idx.search(vector=q, positives=pos, negatives=neg, exclude=pos + neg, k=20, **f)
                    r_run.append(1000 * (time.perf_counter() - t))
                    weights.append(r.attrs["plan"]["feedback"]["weight"])
                    # the same refine with one vector, no re-rank of the candidates: what it costs
                    t = time.perf_counter()
                    idx.search(vector=q, positives=pos, negatives=neg, exclude=pos + neg, k=20,
                               feedback=one_vector, **f)
                    o_run.append(1000 * (time.perf_counter() - t))
                    # the refine's own part: background sample + fit (no search)
                    t = time.perf_counter()
                    idx.query_vector(vector=q, positives=pos, negatives=neg, **f)
                    fit.append(1000 * (time.perf_counter() - t))
                plain.append(p_run)
                refine.append(r_run)
                one.append(o_run)
                loads.append(loadavg()[0] if loadavg() else None)
            p50p = median_spread([pct(r, 50) for r in plain])
            p50r = median_spread([pct(r, 50) for r in refine])
            p50o = median_spread([pct(r, 50) for r in one])
            p99p = median_spread([pct(r, 99) for r in plain])
            p99r = median_spread([pct(r, 99) for r in refine])
            res[c] = {"plain_p50_ms": p50p, "refine_p50_ms": p50r, "plain_p99_ms": p99p,
                      "refine_p99_ms": p99r, "refine_one_vector_p50_ms": p50o,
                      "refine_one_vector_p99_ms": median_spread([pct(r, 99) for r in one]),
                      "ratio_per_run_p50": [round(pct(r, 50) / max(pct(p, 50), 1e-9), 1)
                                            for p, r in zip(plain, refine)],
                      "ratio_p99": round(p99r["median"] / max(p99p["median"], 1e-9), 1),
                      "loadavg_1min_per_run": loads,
                      "feedback_fit_p50_ms": round(pct(fit, 50), 1),
                      "ratio_p50": round(p50r["median"] / max(p50p["median"], 1e-9), 1),
                      "blend_weights": {str(w): weights.count(w) for w in sorted(set(weights))},
                      "plan": r.attrs["plan"].get("strategy")}
            echo(f"  {c}: plain p50 {p50p['median']:.1f} ms p99 {p99p['median']:.1f} ms, refine p50 "
                 f"{p50r['median']:.1f} ms p99 {p99r['median']:.1f} ms (fit {res[c]['feedback_fit_p50_ms']:.1f} ms), "
                 f"x{res[c]['ratio_p50']} (p99 x{res[c]['ratio_p99']}); one vector, no re-rank: p50 {p50o['median']:.1f} ms; "
                 f"load {loads}")
        out["cases"] = res
        out["loadavg_end"] = loadavg()
        return out
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if smoke:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
