"""How a query's candidates become its ranked results, written once for every source of
candidates: one snapshot (`Index.search`) or many shards (`ShardedIndex.search`), so a sharded
search ranks exactly as the single index does.

A source hands `rank` the top `depth` tiles by cosine inside the filters (per modality when the
ranking is calibrated or by evidence), each part ordered by score, ties by tile id. `rank` then
calibrates (or scores the evidence against the prompt bank, evidence.py), orders, drops the excluded tiles, applies the relevance floor, re-ranks with the analyst's marks
(feedback.diffuse) and diversifies, asking for deeper candidates (x4) until k results survive,
the filters run out of tiles, or `max_depth`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import ranking as _ranking
from .ranking import Ranking


@dataclass
class Candidates:
    """A query's candidates: parallel arrays plus, on demand, their vectors (for the re-rank) and
    scenes and envelopes (for diversification). `handle` is the source's own locator (snapshot
    rows; positions in a shard's answer) that `vectors_of` / `places_of` are called with."""

    ids: np.ndarray                 # int64 tile ids
    raw: np.ndarray                 # float32 cosine with the query
    codes: np.ndarray               # modality codes
    handle: np.ndarray
    exhausted: bool = False         # every part held fewer than the depth asked: no more to ask for
    plans: dict = field(default_factory=dict)
    vectors_of: Callable = None   # type: ignore[assignment]  # handle -> (n, d) float32
    places_of: Callable = None    # type: ignore[assignment]  # handle -> (scene ids, (n, 4) envelopes)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, idx) -> "Candidates":
        return Candidates(self.ids[idx], self.raw[idx], self.codes[idx], self.handle[idx],
                          self.exhausted, self.plans, self.vectors_of, self.places_of)


@dataclass
class Ranked:
    """The final list: `cands` in result order, `key` what it is ordered by (the re-ranked score,
    the calibrated one, or the cosine), `relevance` per result."""

    cands: Candidates
    key: np.ndarray
    relevance: np.ndarray
    depth: int
    plans: dict
    hidden_by_diversify: int
    below_floor: int


def first_depth(k: int, n_skip: int, ranking: Ranking, refined) -> int:
    depth = k + n_skip
    if ranking.diversify is not None or ranking.min_relevance is not None:
        depth = max(4 * depth, depth + 32)
    if refined is not None:  # the candidates feedback re-ranks (feedback.diffuse)
        depth = max(depth, refined.config.rerank_candidates + n_skip)
    return depth


def rank(fetch: Callable[[int], Candidates], stats: Callable, k: int, skip: np.ndarray,
         ranking: Ranking, refined, total, max_depth: int, bank=None) -> Ranked:
    """`fetch(depth)`: the candidates at that depth; `stats()`: the query's score distribution
    (ranking.QueryStats, asked for after the first fetch); `bank`: the evidence.Bank of the
    index's encoder (needed when ranking by evidence); `skip`: tile ids never to return;
    `refined`: a feedback.Refined whose marks re-rank the candidates, or None; `total`: the
    tiles the source holds (the depth never exceeds it), or a callable that says it once the
    first candidates are in."""
    from .feedback import diffuse

    depth = first_depth(k, len(skip), ranking, refined)
    passed_before = -1
    st = None
    while True:
        c = fetch(depth)
        st = st or stats()
        cal = st.calibrate(c.raw, c.codes)
        rel = st.relevance(c.raw, c.codes)
        # the candidates' vectors: the evidence reads them first, and the re-rank reuses them
        vecs = None
        if ranking.evidence:
            vecs = _vectors(c, len(bank.vectors[0]))
            key = bank.evidence(c.raw, vecs)
        else:
            key = cal if ranking.calibrated else c.raw.astype(np.float32)
        order = np.lexsort((c.ids, -key))
        c, key, rel = c.take(order), key[order], rel[order]
        vecs = None if vecs is None else vecs[order]
        if len(skip):
            keep = ~np.isin(c.ids, skip)
            c, key, rel = c.take(keep), key[keep], rel[keep]
            vecs = None if vecs is None else vecs[keep]
        n_cand = len(c)
        below = 0
        if ranking.min_relevance is not None:
            keep = rel >= ranking.min_relevance
            c, key, rel = c.take(keep), key[keep], rel[keep]
            vecs = None if vecs is None else vecs[keep]
            below = n_cand - len(c)
        if refined is not None:
            if vecs is None:
                vecs = _vectors(c, refined.vector.shape[0])
            unit = 1.0 if ranking.calibrated else (bank.scale * refined.spread if ranking.evidence else None)
            new = diffuse(refined, vecs, key, unit)
            order = np.lexsort((c.ids, -new))
            refined.reranked = {"by": "diffusion over the candidates and the marks",
                                "candidates": int(len(c))}
            c, key, rel = c.take(order), new[order].astype(np.float32), rel[order]
        if ranking.diversify is not None:
            scenes, boxes = c.places_of(c.handle) if len(c) else ([], np.zeros((0, 4)))
            pos = _ranking.diversify(list(scenes), boxes, ranking.diversify, k)
        else:
            pos = np.arange(min(k, len(c)))
        stalled = ranking.diversify is None and len(c) == passed_before  # floor reached
        passed_before = len(c)
        n = total() if callable(total) else total
        if len(pos) >= k or c.exhausted or stalled or depth >= min(max_depth, n):
            break
        depth = min(depth * 4, max_depth, n)
    hidden = int(pos[-1] + 1 - len(pos)) if len(pos) else 0
    return Ranked(c.take(pos), key[pos], rel[pos], depth, c.plans, hidden,
                  int(below) if len(pos) < k else 0)


def _vectors(c: Candidates, dim: int) -> np.ndarray:
    return c.vectors_of(c.handle) if len(c) else np.zeros((0, dim), np.float32)


def merge_parts(parts: list[tuple[np.ndarray, np.ndarray]], depth: int) -> np.ndarray:
    """Positions, into the concatenation of several sources' answers (ids, scores) to one
    part, of the top `depth` of their union: descending score, ties by tile id (the order a
    single index gives)."""
    ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    raw = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.float32)
    return np.lexsort((ids, -raw))[:depth]
