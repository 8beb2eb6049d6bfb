"""The filter planner: the true top-k inside the filters, at any selectivity.

`top_k(snap, q, k, filters, config)` picks one strategy per query (index, prefilter,
index+selector, index+postfilter) from cheap estimates; docs/ARCHITECTURE.md ("Filtered search")
is the one description of how, and `PlannerConfig` holds the thresholds. The plan is returned
with the rows, never kept in shared state: one Index serves concurrent searches.
"""

from __future__ import annotations

import numpy as np

from .config import PlannerConfig
from .filters import Filters
from .snapshot import Snapshot


def _empty(plan: dict):
    return np.zeros(0, np.int64), np.zeros(0, np.float32), plan


def top_k(snap: Snapshot, q: np.ndarray, k: int, filters: Filters, config: PlannerConfig):
    """-> (rows, scores, plan): the best k live rows passing `filters`, descending score, ties
    by tile id."""
    n = snap.n_tiles
    plan: dict = {"generation": snap.manifest.generation}
    if n == 0:
        return _empty({**plan, "strategy": "empty", "candidates": 0})
    q = np.ascontiguousarray(q, dtype=np.float32)
    vi = snap.vector_index
    plan["index"] = vi.kind
    if filters.empty:
        rows, scores = vi.search(q, k)
        rows, scores = sort_rows(snap, rows, scores)
        return rows[:k], scores[:k], {**plan, "strategy": "index", "candidates": n}
    materialise_max = max(config.materialise_min_rows, int(config.materialise_max_fraction * n))
    est, rows = filters.spatial_candidates(snap, materialise_max)
    f_attr = filters.attr_fraction(snap)
    if rows is None and filters.region is None and est * f_attr <= materialise_max:
        rows = np.flatnonzero(filters.attr_mask(snap))          # O(n), selective attributes
    elif rows is not None and filters.has_attributes:
        rows = rows[filters.attr_mask(snap, rows)]
    if rows is None:  # broad: post-filter the index's answers
        frac = max(est * f_attr / n, 1.0 / n)
        plan.update(strategy="index+postfilter", candidates=int(est * f_attr), estimate=round(frac, 6))
        return _postfilter(snap, vi, q, k, filters, frac, plan)
    if len(rows) > 1 and not bool(np.all(rows[1:] >= rows[:-1])):
        rows = np.sort(rows)  # storage order: vectors and records are then read in file order
    n_env = len(rows)
    if n_env == 0:
        return _empty({**plan, "strategy": "empty", "candidates": 0})
    nprobe = None
    if vi.kind == "flat":
        small = n_env <= config.prefilter_max_rows or n_env <= config.prefilter_max_fraction * n
    elif n_env <= min(config.prefilter_max_rows, config.prefilter_max_rows_quantised):
        small = True
    elif n_env <= config.prefilter_max_rows:
        # an exact score costs ~exact_row_cost list entries (its vector is read from disk):
        # score exactly when that is cheaper than scanning the lists that hold the candidates
        nprobe, scanned = vi.probes_for(q, rows)
        small = n_env * config.exact_row_cost < scanned
    else:
        small = False
    if small:
        plan.update(strategy="prefilter", candidates=n_env)
        scores = vi.score(q, rows)
        m = max(4 * k, 256)
        if len(rows) > 2 * m:  # sort only the best m; all of them if the footprints reject too many
            top = np.argpartition(-scores, m - 1)[:m]
            out = refine(snap, filters, *sort_rows(snap, rows[top], scores[top]), k)
            if len(out[0]) >= k:
                return (*out, plan)
        rows, scores = sort_rows(snap, rows, scores)
        return (*refine(snap, filters, rows, scores, k), plan)
    plan.update(strategy="index+selector", candidates=n_env)
    want = max(2 * k, k + 16)
    while True:
        if vi.kind == "flat":
            got, scores = vi.search_in(q, want, rows)
        else:
            if nprobe is None or want > vi.rerank_depth:
                nprobe = vi.probes_for_want(q, rows, want)
            got, scores = vi.search_in(q, want, rows, nprobe)
            plan["nprobe"] = nprobe
        got, scores = sort_rows(snap, got, scores)
        out_rows, out_scores = refine(snap, filters, got, scores, k)
        if len(out_rows) >= k or want >= n_env:
            return out_rows, out_scores, plan
        want = min(n_env, want * 4)


def _postfilter(snap: Snapshot, vi, q, k: int, filters: Filters, frac: float, plan: dict):
    """Index search for ~want/frac rows, keep those passing the filters, widen if short."""
    n = snap.n_tiles
    base = max(2 * k, k + 16) if vi.kind == "flat" else max(vi.rerank_depth, 3 * k)
    want = min(n, int(np.ceil(base / frac)))
    nprobe = None if vi.kind == "flat" else vi.nprobe  # widened with `want` if short
    while True:
        if vi.kind == "flat":
            got, scores = vi.search(q, k, want=want)
            keep = filters.check_rows(snap, got)
            got, scores = got[keep], scores[keep]
        else:
            got = vi.candidates(q, want, nprobe)
            got = got[filters.check_rows(snap, got)]
            got, scores = vi.rerank(q, got)
        got, scores = sort_rows(snap, got, scores)
        out_rows, out_scores = refine(snap, filters, got, scores, k)
        if (len(out_rows) >= k and len(got) >= min(base, k * 4)) or want >= n:
            break
        want = min(n, want * 4)
        if nprobe is not None:
            nprobe = min(vi.nlist, nprobe * 2)
    plan["nprobe"] = nprobe
    return out_rows, out_scores, plan


def sort_rows(snap: Snapshot, rows: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Descending score, ties by tile id."""
    if len(rows) == 0:
        return rows.astype(np.int64), scores.astype(np.float32)
    order = np.lexsort((snap.tile_ids[rows], -scores))
    return rows[order].astype(np.int64), scores[order].astype(np.float32)


def refine(snap: Snapshot, filters: Filters, rows: np.ndarray, scores: np.ndarray,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first k rows (in score order) whose footprint really meets the region."""
    if filters.region is None:
        return rows[:k], scores[:k]
    out_r, out_s = [], []
    got, i, step = 0, 0, max(2 * k, 64)
    while i < len(rows) and got < k:
        r, s = rows[i:i + step], scores[i:i + step]
        ok = filters.exact_geometry(snap, r)
        out_r.append(r[ok])
        out_s.append(s[ok])
        got += int(ok.sum())
        i += step
    if not out_r:
        return rows[:0], scores[:0]
    return np.concatenate(out_r)[:k], np.concatenate(out_s)[:k]
