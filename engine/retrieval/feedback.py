"""Relevance feedback: a query (text, image, tile or none) plus tiles the analyst marked relevant
and not relevant -> one unit scoring vector, searched by the same filtered planner as any query
(so region, filters, the IVF-PQ path and exact scores all hold as they do for a plain query).

Methods (docs/FEEDBACK.md measures them with simulated analysts, `glb bench feedback`):
- "probe" (default): logistic regression on the marked tiles (relevant = 1, not relevant = 0)
  plus a background sample of the index drawn inside the query's filters (0, weighted as a
  quarter of the evidence: most tiles are not what an analyst looks for). L2-regularised,
  solved with L-BFGS; its weight vector is the feedback direction.
- "rocchio": mean of the relevant tiles minus 0.25 x mean of the not-relevant ones (or of the
  background when none is marked).
- "rocchio-classic": the textbook 1.0 q + 0.75 mean(P) - 0.15 mean(N), no fallback (the baseline
  that made MSTAR worse in an early trial; kept for the measurements).

Never worse than the query alone, by construction where it can be judged: the feedback
direction and the query are put on one scale (each divided by its spread over the background)
and blended, `weight` 0 (query alone) .. 1 (feedback alone). The weight is chosen per query by
cross-validation on the marks: folds of the marked tiles are held out, the direction is refitted
on the rest, and the blend that best ranks held-out relevant tiles above held-out not-relevant
ones (AUC, pooled over folds) wins, ties going to the query, provided it also beats the query
alone in `confidence` (80 %) of paired bootstrap resamples of the held-out marks (the same
resampled marks score every blend, so the test measures the difference itself; a fixed AUC
margin, the first version's rule, is the noise of one AUC and kept the query far too often on
real marks: docs/FEEDBACK.md). Only marked negatives
judge it: the relevant tiles an analyst marks came from the query's own top results, so scoring
them against random background would always favour the query. When the marks cannot be judged
(fewer than two of a kind) the weight is `default_weight` (0.5); with no query it is 1.

Then `diffuse` re-ranks the refined vector's top candidates (Index.search hands it the
planner's top `rerank_candidates`, filters and exclusions applied) on the graph of those
candidates and the marks: what one linear vector cannot separate (a class with several looks),
the neighbourhoods can. docs/FEEDBACK.md measures it against every alternative tried.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .config import FEEDBACK_METHODS as METHODS  # noqa: F401 (re-exported)
from .config import FeedbackConfig


@dataclass
class Refined:
    vector: np.ndarray             # (d,) float32, unit: the query to search with
    weight: float                  # 0 = the query alone, 1 = the feedback direction alone
    method: str
    reason: str                    # why this weight (shown in plans and the UI)
    cv_auc: dict | None = None     # weight -> cross-validated AUC, when measured
    # what the candidates' re-ranking (diffuse) needs: the marks, and the spread of the
    # vector's scores over the background (the unit of a raw cosine key)
    positives: np.ndarray | None = None
    negatives: np.ndarray | None = None
    spread: float = 1.0
    config: FeedbackConfig | None = None
    reranked: dict | None = None   # set by the search that re-ranked with it

    def describe(self) -> dict:
        out = {"method": self.method, "weight": self.weight, "reason": self.reason,
               "cv_auc": self.cv_auc}
        if self.reranked is not None:
            out["rerank"] = self.reranked
        return out

    @property
    def reranks(self) -> bool:
        marks = sum(len(m) for m in (self.positives, self.negatives) if m is not None)
        return self.config is not None and self.config.rerank_candidates > 0 and marks > 0


def diffuse(refined: Refined, cand: np.ndarray, key: np.ndarray, unit: float | None = None) -> np.ndarray:
    """New scores for a query's candidates (the refined vector's top tiles inside the filters,
    exclusions removed): manifold ranking (Zhou et al., 2004) on the graph of the candidates and
    the marked tiles. Each node starts from its score (candidates: `key` in z units, centred on the
    candidates' median; marks: +/- `rerank_label`) and takes `rerank_mix` of its score from its
    `rerank_neighbours` nearest nodes, iterated: a candidate close to relevant marks and to other
    high-scoring candidates rises, one close to not-relevant marks falls. One linear vector
    cannot follow classes with several looks (people in day and night thermal frames); the
    graph can. `cand`: (c, d) vectors; `key`: (c,) what the list was ordered by; `unit`: its
    spread (default: the refined vector's cosine spread over the background; 1 for calibrated
    z-scores)."""
    cfg = refined.config
    if cfg is None:
        raise ValueError("diffuse needs the FeedbackConfig the marks were refined with")
    c = len(cand)
    if c == 0:
        return np.asarray(key, np.float64)
    pos = refined.positives if refined.positives is not None else np.zeros((0, cand.shape[1]), np.float32)
    neg = refined.negatives if refined.negatives is not None else np.zeros((0, cand.shape[1]), np.float32)
    y = np.concatenate([np.asarray(cand, np.float32), pos, neg])
    key = np.asarray(key, np.float64)
    f0 = np.concatenate([(key - np.median(key)) / (unit or refined.spread),
                         np.full(len(pos), cfg.rerank_label), np.full(len(neg), -cfg.rerank_label)])
    s = (y @ y.T).astype(np.float64)
    np.fill_diagonal(s, -np.inf)
    kn = min(cfg.rerank_neighbours, len(y) - 1)
    if kn < 1:
        return key
    nb = np.argpartition(-s, kn - 1, axis=1)[:, :kn]
    rows = np.arange(len(y))[:, None]
    a = np.zeros_like(s)
    a[rows, nb] = np.exp((s[rows, nb] - 1.0) / cfg.rerank_bandwidth)
    a = np.maximum(a, a.T)                       # symmetric: an edge either way counts
    deg = a.sum(1)
    deg[deg == 0] = 1.0
    a /= np.sqrt(deg[:, None] * deg[None, :])
    f = f0.copy()
    for _ in range(cfg.rerank_iterations):
        f = (1 - cfg.rerank_mix) * f0 + cfg.rerank_mix * (a @ f)
    return f[:c]


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > 0 else v.astype(np.float32)


def _logreg(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float,
            start: np.ndarray | None = None) -> np.ndarray:
    """Weighted L2-regularised logistic regression -> weights and bias (d + 1). `start`: a
    solution to begin from (the cross-validation folds start from the fit on all marks)."""
    from scipy.optimize import minimize

    d = x.shape[1]
    ys = np.where(y > 0, 1.0, -1.0)
    xd = x.astype(np.float64)
    wsum = float(w.sum())

    def f(theta):
        v, b = theta[:d], theta[d]
        m = ys * (xd @ v + b)
        loss = np.logaddexp(0.0, -m)
        g = -ys * w * 0.5 * (1.0 - np.tanh(m / 2))          # d loss / d score, stable sigmoid
        grad = np.concatenate([xd.T @ g + l2 * wsum * v, [g.sum()]])
        return float((w * loss).sum() + 0.5 * l2 * wsum * v @ v), grad

    x0 = np.zeros(d + 1) if start is None else start
    res = minimize(f, x0, jac=True, method="L-BFGS-B", options={"maxiter": 200})
    return res.x


def _direction(cfg: FeedbackConfig, pos: np.ndarray, neg: np.ndarray, bg: np.ndarray,
               start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """-> (unit direction, the probe's solution to warm-start from, or None)."""
    if cfg.method == "probe":
        share = cfg.background_share if len(neg) else 1.0
        x = np.concatenate([pos, neg, bg])
        y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg) + len(bg))])
        w = np.concatenate([np.full(len(pos), 1.0 / len(pos)),
                            np.full(len(neg), (1 - share) / max(len(neg), 1)),
                            np.full(len(bg), share / max(len(bg), 1))])
        theta = _logreg(x, y, w, cfg.l2, start)
        return _unit(theta[:-1].astype(np.float32)), theta
    away = neg if len(neg) else bg
    v = pos.mean(0) - (0.25 * away.mean(0) if len(away) else 0.0)
    return _unit(v), None


def _auc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """P(a relevant tile outranks a not-relevant one), ties counted half."""
    diff = pos_scores[:, None] - neg_scores[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def _scale(v: np.ndarray, bg: np.ndarray) -> float:
    if len(bg) < 2:
        return 1.0
    s = float(np.std(bg @ v))
    return s if s > 1e-6 else 1.0


def blend(query: np.ndarray, direction: np.ndarray, bg: np.ndarray, weight: float) -> np.ndarray:
    """Unit vector scoring (1 - weight) x the query's z-score + weight x the direction's."""
    if weight <= 0:
        return _unit(query)
    if weight >= 1:
        return _unit(direction)
    return _unit((1 - weight) * query / _scale(query, bg) + weight * direction / _scale(direction, bg))


def refine(query: np.ndarray | None, positives: np.ndarray, negatives: np.ndarray,
           background: np.ndarray, config: FeedbackConfig | None = None) -> Refined:
    """The scoring vector for a query plus marks. `positives`/`negatives`: (m, d) vectors of
    the marked tiles; `background`: (b, d) vectors sampled from the index within the filters.
    The result also carries what `diffuse` needs to re-rank the vector's top candidates."""
    cfg = (config or FeedbackConfig()).check()
    out = _refine(query, positives, negatives, background, cfg)
    d = out.vector.shape[0]
    out.positives = np.asarray(positives, np.float32).reshape(-1, d)
    out.negatives = np.asarray(negatives, np.float32).reshape(-1, d)
    out.spread = _scale(out.vector, np.asarray(background, np.float32).reshape(-1, d))
    out.config = cfg
    return out


def _refine(query, positives, negatives, background, cfg: FeedbackConfig) -> Refined:
    d = (query.shape[0] if query is not None else
         positives.shape[1] if positives.size else negatives.shape[1] if negatives.size else 0)
    pos = np.asarray(positives, np.float32).reshape(-1, d)
    neg = np.asarray(negatives, np.float32).reshape(-1, d)
    bg = np.asarray(background, np.float32).reshape(-1, d)
    q = None if query is None else _unit(np.asarray(query, np.float32))
    if len(pos) + len(neg) > cfg.max_marks:
        raise InputError(f"{len(pos) + len(neg)} marked tiles: at most {cfg.max_marks}")
    if len(pos) == 0:
        if q is None:
            raise InputError("feedback without a query needs at least one relevant tile")
        # Only "not this": push away from the marked tiles, as far as the marks allow.
        if len(neg) == 0:
            return Refined(q, 0.0, cfg.method, "no marks: the query alone")
        direction = _unit(-neg.mean(0))
        return Refined(blend(q, direction, bg, 0.25), 0.25, "rocchio",
                       "only not-relevant marks: the query, a quarter away from them")
    if cfg.method == "rocchio-classic":
        away = neg.mean(0) if len(neg) else np.zeros(d, np.float32)
        v = (q if q is not None else 0.0) + 0.75 * pos.mean(0) - 0.15 * away
        return Refined(_unit(v), 1.0, cfg.method, "textbook Rocchio, no fallback")
    direction, theta = _direction(cfg, pos, neg, bg)
    if q is None:
        return Refined(direction, 1.0, cfg.method, "marks only: the feedback direction")
    k = min(cfg.folds, len(pos), len(neg))
    if k < 2:
        w = cfg.default_weight
        return Refined(blend(q, direction, bg, w), w, cfg.method,
                       f"too few {'not-' if len(neg) < 2 else ''}relevant marks to cross-validate: "
                       f"default blend")
    aucs, wins = _cross_validate(cfg, q, pos, neg, bg, k, theta)
    margin = max(cfg.margin, cfg.margin_noise / np.sqrt(min(len(pos), len(neg))))
    best = cfg.prior_weight
    # A blend must beat the prior one by the margin and, with `confidence`, beat the query alone
    # in that share of paired bootstrap resamples of the held-out marks.
    ok = [w for w in cfg.weights if w == best or
          (aucs[w] > aucs[best] + margin and (w == 0 or wins[w] >= cfg.confidence))]
    best = max(ok, key=lambda w: (aucs[w], -abs(w - best)))
    if best > 0 and aucs[best] < cfg.min_auc:
        best = 0.0
    reason = ("the marks do not separate better than the query: the query alone" if best == 0
              else f"cross-validated on the marks (AUC {aucs[best]:.2f} vs {aucs[0.0]:.2f} for the query, "
                   f"better in {100 * wins[best]:.0f} % of resamples)")
    return Refined(blend(q, direction, bg, best), best, cfg.method, reason,
                   {str(w): round(a, 4) for w, a in aucs.items()})


def _cross_validate(cfg, q, pos, neg, bg, k, start=None) -> tuple[dict[float, float], dict[float, float]]:
    """-> (pooled held-out AUC per blend weight, share of bootstrap resamples in which each
    blend outranks the query alone)."""
    rng = np.random.default_rng(cfg.seed)
    pf = np.array_split(rng.permutation(len(pos)), k)
    nf = np.array_split(rng.permutation(len(neg)), k)
    ps: dict[float, list] = {w: [] for w in cfg.weights}
    ns: dict[float, list] = {w: [] for w in cfg.weights}
    sq = _scale(q, bg)
    for i in range(k):
        ptr = np.concatenate([pf[j] for j in range(k) if j != i])
        ntr = np.concatenate([nf[j] for j in range(k) if j != i])
        direction, _ = _direction(cfg, pos[ptr], neg[ntr], bg, start)
        sd, qd = _scale(direction, bg), float(q @ direction)
        held_p, held_n = pos[pf[i]], neg[nf[i]]
        pq_, pd_, nq_, nd_ = held_p @ q, held_p @ direction, held_n @ q, held_n @ direction
        for w in cfg.weights:
            # scores under blend(q, direction, bg, w), from the two components' scores
            a, b = (1 - w) / sq, w / sd
            norm = np.sqrt(a * a + b * b + 2 * a * b * qd)
            ps[w].append((a * pq_ + b * pd_) / norm)
            ns[w].append((a * nq_ + b * nd_) / norm)
    # Pooled over folds: every score is a cosine with a unit vector, so folds share a scale,
    # and one AUC over all held-out pairs is far less noisy than the mean of per-fold ones.
    out: dict[float, float] = {}
    wins: dict[float, float] = {}
    for w in cfg.weights:
        out[w] = _auc(np.concatenate(ps[w]), np.concatenate(ns[w]))
    npos, nneg = len(np.concatenate(ps[0.0])), len(np.concatenate(ns[0.0]))
    if cfg.confidence <= 0 or npos * nneg > cfg.bootstrap_max_pairs:
        # (that many marks: the pooled AUC's noise is small, and the resampling would cost
        # bootstrap x pairs per blend)
        return out, {w: 1.0 for w in cfg.weights}
    # Paired bootstrap: the same resampled held-out marks score every blend, so the share of
    # resamples in which a blend outranks the query measures the difference, not each AUC's
    # own (larger) noise.
    cp = rng.multinomial(npos, np.full(npos, 1 / npos), size=cfg.bootstrap).astype(np.float64)
    cn = rng.multinomial(nneg, np.full(nneg, 1 / nneg), size=cfg.bootstrap).astype(np.float64)

    def boot(w):
        d = np.concatenate(ps[w])[:, None] - np.concatenate(ns[w])[None, :]
        m = (d > 0) + 0.5 * (d == 0)
        return np.einsum("bi,ij,bj->b", cp, m, cn) / (npos * nneg)

    base = boot(0.0)
    for w in cfg.weights:
        b = boot(w) - base
        wins[w] = float((b > 0).mean() + 0.5 * (b == 0).mean())
    return out, wins
