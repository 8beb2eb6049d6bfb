"""Ranking across modalities and scenes: calibrated scores, relevance, diversification.

Raw cosine scores are not comparable across modalities: each modality's tiles sit at their own
distance from a text (or image) query, so a plain top-k can be all one sensor while better
matches in another wait at rank 29 (docs/RANKING.md measures it). Calibration puts each
modality on the same scale, using the index's own tiles, so it follows whichever encoder built
the index:

- For a query q, the *reference* of modality m is the score of q against m's tiles in the index
  (all of them up to REFERENCE_ROWS, else a fixed random sample of that many; modalities with
  fewer than MIN_REFERENCE tiles use all modalities pooled, a small sample says too little).
- calibrated score = (raw - mean_m) / std_m: how far a tile stands out from its own modality.
  Within one modality it orders tiles exactly as the raw score does.
- relevance = the percentile of the raw score within that reference (0-100): "scores higher
  than 99.2 % of this index's multispectral tiles for this query". It is relative: the best
  tile for a nonsense query still scores near 100 (nothing measured here told nonsense from
  real queries; docs/RANKING.md). `relevance_band` says it in words: high / medium / low.

Diversification (`diversify=N`): at most N results per scene and one per place (footprints
overlapping by half or more: revisits of the same place keep their best date), taken greedily
in ranking order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

REFERENCE_ROWS = 2048
MIN_REFERENCE = 16
SAME_PLACE_IOU = 0.5  # two footprints this much overlapping are one place (revisits)
# The match band restates the relevance percentile in words: "high" is the index's top 1 % of
# that modality for this query, "medium" the next 4 %. (How far a tile stands out of its
# modality, in standard deviations, did not tell real queries from nonsense ones in
# training/rank_bench.py, so the band does not pretend to: docs/RANKING.md.)
BAND_HIGH = 99.0
BAND_MEDIUM = 95.0


@dataclass(frozen=True)
class Ranking:
    """How a result list is ordered and thinned. The default is the plain ranking by cosine."""

    calibrated: bool = False            # order by per-modality calibrated score
    diversify: int | None = None        # at most N per scene, one per footprint
    min_relevance: float | None = None  # keep results with relevance >= this percentile
    evidence: bool = False              # order each modality's top tiles by evidence.py's score

    @classmethod
    def build(cls, calibrated=False, diversify=None, min_relevance=None, evidence=False) -> "Ranking":
        if calibrated and evidence:
            raise InputError("calibrated and evidence are two orders of the list: choose one")
        if diversify is not None:
            try:
                d = int(diversify)
            except (TypeError, ValueError, OverflowError):
                raise InputError(f"diversify {diversify!r} is not a whole number") from None
            if d != diversify or d < 1:
                raise InputError(f"diversify must be a whole number of results per scene (1 or more), "
                                 f"got {diversify!r}")
            diversify = d
        if min_relevance is not None:
            try:
                m = float(min_relevance)
            except (TypeError, ValueError):
                raise InputError(f"min_relevance {min_relevance!r} is not a number") from None
            if not 0 <= m <= 100:
                raise InputError(f"min_relevance is a percentile from 0 to 100, got {min_relevance!r}")
            min_relevance = m
        return cls(bool(calibrated), diversify, min_relevance, bool(evidence))

    @property
    def plain(self) -> bool:
        return (not self.calibrated and not self.evidence and self.diversify is None
                and self.min_relevance is None)

    @property
    def per_modality(self) -> bool:
        """Candidates are each modality's own top tiles (a cross-sensor order needs them all)."""
        return self.calibrated or self.evidence


def sample_order(tile_ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """A key per tile whose ascending order is a uniform random order of the tiles, fixed by the
    tiles themselves: samples taken as "the m smallest keys" (the ranking reference, the
    feedback background) are the same whichever index or shard holds the tiles, so a sharded
    search samples exactly what the single index would. Tile ids are blake2b hashes
    (store/writer.py `tile_id_for`), already uniform; XOR with a per-seed salt (splitmix64 of the
    seed) gives another order per seed and keeps the keys unique."""
    z = (int(seed) + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    salt = np.uint64(z ^ (z >> 31))
    return np.asarray(tile_ids, np.int64).view(np.uint64) ^ salt


def smallest(keys: np.ndarray, m: int) -> np.ndarray:
    """Positions of the m smallest keys, in ascending key order."""
    if m >= len(keys):
        return np.argsort(keys, kind="stable")
    part = np.argpartition(keys, m - 1)[:m]
    return part[np.argsort(keys[part], kind="stable")]


def reference_sample(modality_code: np.ndarray, keys: np.ndarray) -> dict:
    """code -> (tiles of that modality, rows of its sample in key order): a shard's part of
    `Reference.merged` (the same rows `Reference(..., keys=keys)` takes)."""
    out = {}
    for c in np.unique(modality_code):
        r = np.flatnonzero(modality_code == c)
        out[int(c)] = (len(r), r[smallest(keys[r], REFERENCE_ROWS)])
    return out


class Reference:
    """Per modality code: the tiles whose scores describe a query's score distribution there.
    Built once per snapshot (the vectors of at most 6 x REFERENCE_ROWS tiles). With `keys`
    (`sample_order` of the tile ids) a modality's sample is its REFERENCE_ROWS smallest keys:
    the same tiles however the archive is sharded (`merged`; the order of the rows, storage
    order here, key order there, moves a score by a rounding error at most); without (pools held
    in memory), a seeded random sample."""

    def __init__(self, modality_code: np.ndarray, take_vectors, seed: int = 0,
                 keys: np.ndarray | None = None):
        parts, self.codes, self.counts = [], [], []
        if keys is not None:
            for c, (count, r) in reference_sample(modality_code, keys).items():
                self.codes.append(c)
                self.counts.append(count)
                parts.append(np.sort(r))   # storage order: read in file order
        else:
            rng = np.random.default_rng(seed)
            for c in np.unique(modality_code):
                r = np.flatnonzero(modality_code == c)
                self.counts.append(len(r))
                if len(r) > REFERENCE_ROWS:
                    r = np.sort(rng.choice(r, REFERENCE_ROWS, replace=False))
                parts.append(r)
                self.codes.append(int(c))
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        rows = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        self.matrix = take_vectors(rows) if len(rows) else np.zeros((0, 1), np.float32)

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, modality_code: np.ndarray, seed: int = 0) -> "Reference":
        """A reference over a pool held in memory (the benchmark's labelled pools)."""
        return cls(np.asarray(modality_code), lambda rows: np.asarray(vectors[rows], np.float32), seed)

    @classmethod
    def merged(cls, shards: list[dict]) -> "Reference":
        """The reference of the union of shards, from each shard's {code: (count, keys, vectors)}
        (its own sample, smallest keys first): per modality the REFERENCE_ROWS smallest keys of
        all shards, in key order, which is the sample the unsplit index draws."""
        ref = cls.__new__(cls)
        ref.codes, ref.counts, mats = [], [], []
        dim = next((v.shape[1] for s in shards for (_, _, v) in s.values()), 1)
        for c in sorted({c for s in shards for c in s}):
            got = [s[c] for s in shards if c in s]
            keys = np.concatenate([g[1] for g in got]).astype(np.uint64)
            vecs = np.concatenate([g[2] for g in got]).astype(np.float32).reshape(-1, dim)
            take = smallest(keys, REFERENCE_ROWS)
            ref.codes.append(int(c))
            ref.counts.append(int(sum(g[0] for g in got)))
            mats.append(vecs[take])
        ref.offsets = np.cumsum([0] + [len(m) for m in mats])
        ref.matrix = np.concatenate(mats) if mats else np.zeros((0, 1), np.float32)
        return ref

    def stats(self, q: np.ndarray) -> "QueryStats":
        if len(self.matrix) == 0:  # an empty index (e.g. a repair dropped every scene)
            return QueryStats(self, np.zeros(0, np.float32))
        return QueryStats(self, self.matrix @ np.asarray(q, np.float32))


class QueryStats:
    """One query's score distribution per modality: mean, spread and sorted scores."""

    def __init__(self, ref: Reference, scores: np.ndarray):
        self.sorted: dict[int, np.ndarray] = {}
        self.mean: dict[int, float] = {}
        self.std: dict[int, float] = {}
        pooled = np.sort(scores)
        for i, c in enumerate(ref.codes):
            s = scores[ref.offsets[i]:ref.offsets[i + 1]]
            s = np.sort(s) if ref.counts[i] >= MIN_REFERENCE else pooled
            self.sorted[c] = s
            self.mean[c] = float(s.mean()) if len(s) else 0.0
            self.std[c] = max(float(s.std()), 1e-6) if len(s) > 1 else 1.0

    def _per_code(self, codes: np.ndarray, fn) -> np.ndarray:
        out = np.zeros(len(codes), np.float64)
        for c in np.unique(codes):
            m = codes == c
            out[m] = fn(int(c), m)
        return out

    def calibrate(self, raw: np.ndarray, codes: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, np.float64)
        return self._per_code(codes, lambda c, m: (raw[m] - self.mean.get(c, 0.0)) / self.std.get(c, 1.0)
                              ).astype(np.float32)

    def relevance(self, raw: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Percentile (0-100) of each raw score among its modality's reference scores."""
        raw = np.asarray(raw, np.float64)

        def pct(c, m):
            s = self.sorted.get(c)
            if s is None or not len(s):
                return np.full(int(m.sum()), 100.0)
            below = np.searchsorted(s, raw[m], side="left")
            upto = np.searchsorted(s, raw[m], side="right")
            return 100.0 * (below + upto) / (2 * len(s))

        return self._per_code(codes, pct).astype(np.float32)


def relevance_band(relevance: np.ndarray) -> np.ndarray:
    """'high' / 'medium' / 'low' from the relevance percentile."""
    r = np.asarray(relevance, np.float64)
    return np.where(r >= BAND_HIGH, "high", np.where(r >= BAND_MEDIUM, "medium", "low")).astype(object)


def same_place(a: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Whether envelope a (minx, miny, maxx, maxy) and each of boxes cover the same place:
    intersection over union at least SAME_PLACE_IOU (revisits of one window differ by a
    pixel or two of georeferencing, neighbouring tiles barely overlap)."""
    if not len(boxes):
        return np.zeros(0, dtype=bool)
    w = np.clip(np.minimum(a[2], boxes[:, 2]) - np.maximum(a[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], boxes[:, 3]) - np.maximum(a[1], boxes[:, 1]), 0, None)
    inter = w * h
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area(a) + area(boxes) - inter
    return inter >= SAME_PLACE_IOU * np.maximum(union, 1e-18)


def diversify(scene_ids: list, boxes: np.ndarray, per_scene: int, k: int) -> np.ndarray:
    """Positions (into the ranked candidates) kept: at most per_scene per scene and one per
    place (`same_place`); greedy in the given (ranked) order, at most k."""
    boxes = np.asarray(boxes, np.float64)
    keep: list[int] = []
    per: dict[object, int] = {}
    for i in range(len(scene_ids)):
        s = scene_ids[i]
        if per.get(s, 0) >= per_scene:
            continue
        if keep and same_place(boxes[i], boxes[keep]).any():
            continue
        per[s] = per.get(s, 0) + 1
        keep.append(i)
        if len(keep) >= k:
            break
    return np.asarray(keep, np.int64)
