"""`engine.open(path)` -> Index: query encoding, filtered search (planner.py), results as a
GeoDataFrame whose `attrs["plan"]` says how the query was answered.

One Index may serve many threads (every Streamlit session shares one): a search reads one
Snapshot from start to end (a refresh swaps in a new one without touching it), and the few
mutable things an Index keeps (the current snapshot, the lazily loaded encoder, the thumbnail
cache) change only under locks.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ..errors import InputError
from ..modalities import MODALITIES
from ..store.layout import Layout
from ..store.segment import read_overviews, read_thumbs
from ..store.verify import damaged
from . import pipeline, planner
from .config import DEFAULT, SearchConfig
from .filters import Filters
from .ranking import Ranking, Reference, relevance_band, sample_order, smallest
from .snapshot import Snapshot

MAX_K = 1000
MAX_EXCLUDE = 10_000
THUMB_CACHE = 4096  # thumbnails kept in memory per Index (a few MB)
RANKED_MAX_DEPTH = 16_384  # diversified / floored lists stop widening their candidates here


_WGS84 = None


def _wgs84():
    """EPSG:4326 as a pyproj CRS, parsed once (not per result page)."""
    global _WGS84
    if _WGS84 is None:
        import pyproj

        _WGS84 = pyproj.CRS.from_epsg(4326)
    return _WGS84


def check_k(k, max_k: int = MAX_K) -> int:
    """The number of results asked for, as an int in 1..max_k, or a one-line InputError."""
    try:
        k_int = int(k)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"k {str(k)[:40]!r} is not an integer") from None
    if k_int != k or k_int < 1:
        raise InputError(f"k must be a positive integer (1 to {max_k}), got {str(k)[:40]}")
    if k_int > max_k:
        raise InputError(f"k {k_int} is more than the maximum of {max_k}")
    return k_int


def ranking_attrs(ranking: Ranking, ranked) -> dict:
    """`result.attrs["ranking"]`: what the ranking hid (docs/RANKING.md)."""
    return {"calibrated": ranking.calibrated, "evidence": ranking.evidence, "diversify": ranking.diversify,
            "min_relevance": ranking.min_relevance,
            "hidden_by_diversify": ranked.hidden_by_diversify if ranking.diversify is not None else 0,
            "below_floor": ranked.below_floor if ranking.min_relevance is not None else 0}


def first_draw(tile_ids: np.ndarray, seed: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, keys) of the m tiles with the smallest `ranking.sample_order` keys, in key order."""
    keys = sample_order(tile_ids, seed)
    draw = smallest(keys, m)
    return draw, keys[draw]


def background_sample(snap: Snapshot, filters: Filters, size: int, seed: int = 0, first=None):
    """-> (rows, keys): the `size` tiles inside the filters (envelope test) with the smallest
    `ranking.sample_order` keys, in key order: a uniform random sample that depends only on the
    tiles, so the shards of a split archive together draw exactly the unsplit index's sample
    (each sends its own `size` smallest; the merge keeps the smallest of all). The snapshot's
    8 x size smallest keys first (enough on broad filters; `first`: them, as (rows, keys),
    computed once per snapshot by `Index`), the filters' candidates when narrow."""
    n = snap.n_tiles
    if n == 0 or size <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.uint64)
    m = min(n, 8 * size)
    draw, draw_keys = first if first is not None else first_draw(snap.tile_ids, seed, m)
    ok = filters.check_rows(snap, draw) if not filters.empty else np.ones(len(draw), bool)
    rows, keys = draw[ok][:size], draw_keys[ok][:size]
    if len(rows) < size and m < n:
        _, cand = filters.spatial_candidates(snap, n)
        cand = np.arange(n) if cand is None else cand
        cand = cand[filters.check_rows(snap, cand)]
        ck = sample_order(snap.tile_ids[cand], seed)
        take = smallest(ck, size)
        rows, keys = cand[take], ck[take]
    return np.asarray(rows, np.int64), keys


def mark_ids(positives, negatives) -> tuple[list[int], list[int]]:
    """The analyst's marks as tile ids, checked: (relevant, not relevant)."""
    pos_ids = [as_tile_id(t) for t in _id_list(positives, "positives")]
    neg_ids = [as_tile_id(t) for t in _id_list(negatives, "negatives")]
    both = set(pos_ids) & set(neg_ids)
    if both:
        raise InputError(f"tile {next(iter(both))} is marked both relevant and not relevant")
    return pos_ids, neg_ids


def check_one_query(queries, pos_ids) -> None:
    given = sum(x is not None for x in queries)
    if given > 1 or (given == 0 and not pos_ids):
        raise InputError("give exactly one query: text, image, tile_id or vector "
                         "(or only tiles marked relevant)")


def query_vector(vector, dim: int) -> np.ndarray:
    """A query given as a vector: `dim` finite numbers, or a one-line InputError."""
    try:
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"query vector must be {dim} finite numbers") from None
    if q.shape[0] != dim or not np.all(np.isfinite(q)):
        raise InputError(f"query vector must be {dim} finite numbers")
    return q


def _id_list(ids, what: str) -> list:
    """Tile ids given as a list, a tuple, a set or an array (None: none)."""
    if ids is None:
        return []
    if isinstance(ids, (str, bytes, int, np.integer)):
        raise InputError(f"{what} must be a list of tile ids, got {str(ids)[:40]!r}")
    try:
        return list(ids)
    except TypeError:
        raise InputError(f"{what} must be a list of tile ids") from None


def as_tile_id(tile_id) -> int:
    """A tile id from a caller (a URL, a form, a CLI flag): an int64, or a clear InputError."""
    try:
        t = int(tile_id)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"tile_id {str(tile_id)[:40]!r} is not an integer") from None
    if not -2**63 <= t < 2**63:
        raise InputError(f"tile_id {t} is not in this index")
    return t


class Index:
    def __init__(self, path: str | Path, encoder=None, checkpoint: str | Path | None = None,
                 config: SearchConfig = DEFAULT, weights: str | Path | None = None):
        self.path = Path(path)
        self.config = config
        self._checkpoint = checkpoint
        self._weights = weights
        self.layout = Layout(self.path)
        self._snap = Snapshot.load(self.path, config=config.vectors)
        self._encoder = encoder
        self._lock = threading.Lock()          # snapshot swaps
        self._encoder_lock = threading.Lock()  # one encoder load
        self._thumbs_lock = threading.Lock()
        self._thumbs: OrderedDict[int, bytes] = OrderedDict()
        # (snapshot, ranking.Reference): replaced whole (one assignment) when the snapshot moves
        self._reference: tuple | None = None
        self._bank: tuple | None = None      # (encoder identity, evidence.Bank)
        # (snapshot, {(seed, m): the rows and keys of its m smallest sample_order keys}): the
        # feedback background's first draw (background_rows), replaced whole with the snapshot
        self._sample_first: tuple | None = None

    # --- snapshot management -----------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        """The newest published generation (one small file read per call to notice it)."""
        self.refresh()
        return self._snap

    def refresh(self) -> bool:
        """Swap in the newest generation if CURRENT moved; True if it did. Searches already
        running keep the snapshot they started with."""
        if self._snap.is_current():
            return False
        with self._lock:  # one load at a time; a thread that waited finds it done
            if self._snap.is_current():
                return False
            self._snap = Snapshot.load(self.path, previous=self._snap, config=self.config.vectors)
            return True

    @property
    def encoder(self):
        return self._encoder_for(self._snap)

    def _encoder_for(self, snap: Snapshot):
        if self._encoder is None:  # the encoder the index was built with (its manifest says which)
            with self._encoder_lock:
                if self._encoder is None:
                    from ..encoder.factory import load_encoder_for_index

                    self._encoder = load_encoder_for_index(
                        snap.manifest.encoder, index=str(self.path), weights=self._weights,
                        checkpoint=self._checkpoint)
        self._check_encoder(self._encoder, snap)
        return self._encoder

    def _check_encoder(self, enc, snap: Snapshot) -> None:
        built_with = snap.manifest.encoder.get("identity")
        if built_with and built_with != enc.identity:
            raise InputError(
                f"{self.path}: index was built with encoder {built_with} but the loaded encoder "
                f"is {enc.identity}; open it with the matching checkpoint or weights folder")

    # --- queries -------------------------------------------------------------------------
    def search(self, text: str | None = None, bbox=None, k: int = 20, modality=None,
               start=None, end=None, *, sensor=None, region=None, image=None,
               wavelengths=None, image_modality: str | None = None, tile_id: int | None = None,
               vector: np.ndarray | None = None, positives=None, negatives=None, exclude=None,
               feedback=None, undated: bool = False, calibrated: bool = False,
               diversify: int | None = None, min_relevance: float | None = None,
               stac_collection=None, stac_item=None, evidence: bool = False):
        """Top-k tiles for one query (text, image array, tile id or vector) within filters;
        `result.attrs["plan"]` holds the strategy the planner chose (see planner.py).

        `positives` / `negatives`: tile ids the analyst marked relevant / not relevant (relevance
        feedback, engine/retrieval/feedback.py); with marks the query may be omitted. `exclude`:
        tile ids never to return (e.g. the results already seen). `feedback`: a FeedbackConfig.
        What the feedback did (method, blend weight, why) is in `attrs["plan"]["feedback"]`.

        `score` is what the list is ordered by: the cosine similarity (`score_raw`, always
        there too) or, with calibrated=True, the per-modality calibrated score (ranking.py), or,
        with evidence=True, the query's evidence against a bank of other prompts over each
        modality's top tiles (evidence.py: comparable across sensors without giving a sensor that
        matches nothing a place in the list).
        `relevance` is the percentile of the tile's score among its modality's tiles in this
        index for this query, `match` a high/medium/low band. `undated` keeps tiles without a
        date when a date range is given; `diversify=N` allows at most N results per scene and
        one per place; `min_relevance` drops results below that percentile. What the ranking
        hid is in `result.attrs["ranking"]` (docs/RANKING.md). `stac_collection` / `stac_item`
        (an id or a list of ids) keep tiles of scenes indexed from those STAC collections /
        items (`glb index --stac`); results carry both as columns."""
        k = check_k(k)
        filters = Filters.build(bbox=bbox, region=region, modality=modality, sensor=sensor,
                                start=start, end=end, undated=undated,
                                stac_collection=stac_collection, stac_item=stac_item)
        ranking = Ranking.build(calibrated, diversify, min_relevance, evidence)
        snap = self.snapshot
        q, skip, refined = self._query(snap, filters, text=text, image=image, wavelengths=wavelengths,
                                       image_modality=image_modality, tile_id=tile_id, vector=vector,
                                       positives=positives, negatives=negatives, feedback=feedback)
        if exclude is not None:
            skip = skip | {as_tile_id(t) for t in _id_list(exclude, "exclude")}
            if len(skip) > MAX_EXCLUDE:
                raise InputError(f"{len(skip)} tiles to exclude: at most {MAX_EXCLUDE}")
        skip_ids = np.fromiter(skip, np.int64, len(skip))
        rerank = refined is not None and refined.reranks
        ranked = pipeline.rank(self._fetch(snap, q, filters, ranking.per_modality),
                               lambda: self._stats(snap, q), k, skip_ids, ranking,
                               refined if rerank else None, snap.n_tiles, RANKED_MAX_DEPTH,
                               self.bank(snap) if ranking.evidence else None)
        res = self._results(snap, ranked.cands.handle, ranked.key, raw=ranked.cands.raw,
                            relevance=ranked.relevance)
        res.attrs["plan"] = (ranked.plans["all"] if ranking.plain else
                             {"strategy": "ranked", "depth": ranked.depth, "per_modality": ranked.plans})
        res.attrs["ranking"] = ranking_attrs(ranking, ranked)
        if refined is not None:
            res.attrs["plan"] = {**res.attrs["plan"], "feedback": refined.describe()}
        return res

    def query_vector(self, text: str | None = None, *, bbox=None, region=None, modality=None,
                     sensor=None, start=None, end=None, image=None, wavelengths=None,
                     image_modality: str | None = None, tile_id: int | None = None, vector=None,
                     positives=None, negatives=None, feedback=None, stac_collection=None,
                     stac_item=None, undated: bool = False):
        """The unit vector a search scores with (query and marks resolved), and what feedback
        did (None without marks): what a saved search keeps."""
        filters = Filters.build(bbox=bbox, region=region, modality=modality, sensor=sensor,
                                start=start, end=end, stac_collection=stac_collection,
                                stac_item=stac_item, undated=undated)
        q, _, refined = self._query(self.snapshot, filters, text=text, image=image,
                                    wavelengths=wavelengths, image_modality=image_modality,
                                    tile_id=tile_id, vector=vector, positives=positives,
                                    negatives=negatives, feedback=feedback)
        return q, refined

    def _query(self, snap: Snapshot, filters: Filters, *, text, image, wavelengths, image_modality,
               tile_id, vector, positives, negatives, feedback):
        """-> (unit query vector, tile ids to leave out, Refined or None)."""
        pos_ids, neg_ids = mark_ids(positives, negatives)
        check_one_query((text, image, tile_id, vector), pos_ids)
        skip: set[int] = set()
        q = None
        if text is not None:
            q = self._encoder_for(snap).encode_text([text])[0]
        elif image is not None:
            if wavelengths is None or image_modality is None:
                raise InputError("an image query needs its wavelengths and image_modality")
            q = self._encoder_for(snap).encode_image(image, wavelengths, image_modality)[0]
        elif tile_id is not None:
            q = self.tile_vector(tile_id, snap)
            skip.add(as_tile_id(tile_id))
        elif vector is not None:
            q = query_vector(vector, snap.dim)
        if not pos_ids and not neg_ids:
            return q, skip, None
        from .feedback import refine

        cfg = (feedback or self.config.feedback).check()
        pv = self._mark_vectors(snap, pos_ids, "relevant")
        nv = self._mark_vectors(snap, neg_ids, "not relevant")
        bg = self._background(snap, filters, cfg.background, seed=cfg.seed)
        refined = refine(q, pv, nv, bg, cfg)
        return refined.vector, skip, refined

    def _mark_vectors(self, snap: Snapshot, ids: list[int], what: str) -> np.ndarray:
        rows = []
        for t in ids:
            r = snap.row_of(t)
            if r is None:
                raise InputError(f"tile {t} (marked {what}) is not in this index")
            rows.append(r)
        return snap.vectors[np.array(rows, np.int64)] if rows else np.zeros((0, snap.dim), np.float32)

    def _background(self, snap: Snapshot, filters: Filters, size: int, seed: int = 0) -> np.ndarray:
        """Vectors of the unlabelled negatives of a feedback probe: up to `size` tiles inside
        the filters (envelope test), drawn at random (`background_sample`)."""
        rows, _ = self.background_rows(snap, filters, size, seed)
        return snap.vectors[rows]

    def background_rows(self, snap: Snapshot, filters: Filters, size: int, seed: int = 0):
        """`background_sample`, with the snapshot's smallest keys computed once per snapshot
        (an O(tiles) pass: too slow to repeat on every refine of a large index)."""
        m = min(snap.n_tiles, 8 * size)
        memo = self._sample_first
        if memo is None or memo[0] is not snap:
            memo = (snap, {})
            self._sample_first = memo
        first = memo[1].get((seed, m))
        if first is None and m > 0:
            first = memo[1][(seed, m)] = first_draw(snap.tile_ids, seed, m)  # a race computes it twice: idempotent
        return background_sample(snap, filters, size, seed, first)

    # --- ranking across modalities and scenes (ranking.py) -------------------------------------
    def bank(self, snap: Snapshot | None = None):
        """The prompt bank (evidence.py) embedded by this index's encoder, once per encoder."""
        from .evidence import Bank

        enc = self._encoder_for(snap or self.snapshot)
        got = self._bank
        if got is None or got[0] != enc.identity:
            got = self._bank = (enc.identity, Bank.of(enc))
        return got[1]

    def _stats(self, snap: Snapshot, q: np.ndarray):
        """This query's score distribution per modality over the snapshot's reference tiles."""
        ref = self._reference
        if ref is None or ref[0] is not snap:
            ref = (snap, Reference(snap.modality_code, snap.vectors.take, keys=sample_order(snap.tile_ids)))
            self._reference = ref
        return ref[1].stats(q)

    def _fetch(self, snap: Snapshot, q: np.ndarray, filters: Filters, calibrated: bool):
        """depth -> pipeline.Candidates of this snapshot: the planner's top `depth` inside the
        filters (per modality when calibrated: calibration is monotone within a modality, so the
        merged lists hold the calibrated top `depth`)."""
        from dataclasses import replace

        scope = []
        if calibrated:
            present = [MODALITIES[c] for c in np.flatnonzero(snap.modality_counts[:len(MODALITIES)])]
            scope = [m for m in present if not filters.modalities or m in filters.modalities]

        def vectors_of(rows):
            return snap.vectors[np.asarray(rows, np.int64)]

        def places_of(rows):
            scenes = snap.take(rows, ["scene_id"]).column("scene_id").to_pylist()
            return scenes, np.stack([snap.minx[rows], snap.miny[rows], snap.maxx[rows], snap.maxy[rows]], 1)

        def fetch(depth: int) -> pipeline.Candidates:
            plans = {}
            if calibrated:
                parts = []
                for m in scope:
                    r, sc, plans[m] = planner.top_k(snap, q, depth, replace(filters, modalities=(m,)),
                                                    self.config.planner)
                    parts.append((r, sc))
                rows = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
                raw = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.float32)
                exhausted = all(len(p[0]) < depth for p in parts)
            else:
                rows, raw, plans["all"] = planner.top_k(snap, q, depth, filters, self.config.planner)
                exhausted = len(rows) < depth
            return pipeline.Candidates(snap.tile_ids[rows], raw, snap.modality_code[rows], rows,
                                       exhausted, plans, vectors_of, places_of)
        return fetch

    def filter_counts(self, bbox=None, modality=None, start=None, end=None, *, sensor=None,
                      region=None, undated: bool = False, stac_collection=None,
                      stac_item=None) -> list[dict]:
        """What each filter does to this index, applied in the order region, modality, sensor,
        dates: [{"filter", "removed", "left"}], plus "undated_kept" (tiles without a date that
        the date filter let through) on the dates row. Only filters that are set are listed.
        Exact (footprints tested); O(index) numpy: for a page, not for a hot loop."""
        from dataclasses import replace

        f = Filters.build(bbox=bbox, region=region, modality=modality, sensor=sensor, start=start,
                          end=end, undated=undated, stac_collection=stac_collection,
                          stac_item=stac_item)
        snap = self.snapshot
        alive = np.ones(snap.n_tiles, dtype=bool)
        out = []

        def step(name, mask, **extra):
            before = int(alive.sum())
            alive[:] &= mask
            out.append({"filter": name, "removed": before - int(alive.sum()),
                        "left": int(alive.sum()), **extra})

        none = Filters()
        if f.region is not None:
            env = replace(none, region=f.region).env_mask(snap)
            rows = np.flatnonzero(env)
            env[rows] = replace(none, region=f.region).exact_geometry(snap, rows)
            step("region", env)
        if f.modalities:
            step("modality", replace(none, modalities=f.modalities).attr_mask(snap))
        if f.sensors:
            step("sensor", replace(none, sensors=f.sensors).attr_mask(snap))
        if f.start is not None or f.end is not None:
            m = replace(none, start=f.start, end=f.end, undated=f.undated).attr_mask(snap)
            undated_kept = int((m & alive & (snap.acquired_days <= -10**9)).sum())
            step("dates", m, undated_kept=undated_kept)
        if f.stac_collections:
            step("stac_collection", replace(none, stac_collections=f.stac_collections).attr_mask(snap))
        if f.stac_items:
            step("stac_item", replace(none, stac_items=f.stac_items).attr_mask(snap))
        return out

    def tile_vector(self, tile_id, snap: Snapshot | None = None) -> np.ndarray:
        snap = snap or self.snapshot
        row = snap.row_of(as_tile_id(tile_id))
        if row is None:
            raise InputError(f"tile_id {tile_id} is not in this index")
        return snap.vectors[row]

    def _results(self, snap: Snapshot, rows: np.ndarray, scores: np.ndarray, *, raw=None,
                 relevance=None, stats=None):
        """GeoDataFrame of the rows, built column by column (faster than going
        through pyarrow's to_pandas for a page of results). `stats` (a query's distribution)
        fills relevance and match for a plain ranking."""
        import geopandas as gpd
        import shapely
        from geopandas.array import from_shapely

        t = snap.take(rows, ["tile_id", "modality", "sensor", "scene", "acquired", "scene_id",
                             "row_off", "col_off", "height", "width", "geometry",
                             "stac_collection", "stac_item"])
        d = {"rank": np.arange(1, len(rows) + 1), "tile_id": t.column("tile_id").to_numpy(),
             "score": np.asarray(scores, dtype=np.float32)}
        d["score_raw"] = d["score"] if raw is None else np.asarray(raw, dtype=np.float32)
        if stats is not None and relevance is None:
            relevance = stats.relevance(d["score_raw"], snap.modality_code[rows])
        d["relevance"] = (np.full(len(rows), np.nan, np.float32) if relevance is None
                          else np.round(np.asarray(relevance, np.float32), 2))
        d["match"] = (np.full(len(rows), None, object) if relevance is None
                      else relevance_band(d["relevance"]))
        for c in ("modality", "sensor", "scene"):
            d[c] = np.asarray(t.column(c).to_pylist(), dtype=object)
        d["acquired"] = pd.to_datetime(t.column("acquired").to_numpy(zero_copy_only=False))
        d["scene_id"] = np.asarray(t.column("scene_id").to_pylist(), dtype=object)
        for c in ("row_off", "col_off", "height", "width"):
            d[c] = t.column(c).to_numpy()
        for c in ("stac_collection", "stac_item"):  # None for tiles not indexed from STAC
            d[c] = np.asarray(t.column(c).to_pylist(), dtype=object)
        d["geometry"] = from_shapely(shapely.from_wkb(t.column("geometry").to_numpy(zero_copy_only=False)),
                                     crs=_wgs84())
        return gpd.GeoDataFrame(d, geometry="geometry", copy=False)

    # --- saved searches, marks ------------------------------------------------------------------
    @property
    def watches(self):
        """Saved searches and their alert logs (engine/retrieval/watch.py)."""
        from .watch import Watches

        return Watches(self)

    def marks(self, positives=(), negatives=(), query: str | None = None):
        """The analyst's marks as a labelled GeoDataFrame (tile footprint, label "relevant" /
        "not relevant", query): training data for their own classifier. Write it with
        `.to_file("marks.geojson")` or `.to_parquet("marks.parquet")` (GeoParquet)."""
        pos = [as_tile_id(t) for t in _id_list(positives, "positives")]
        neg = [as_tile_id(t) for t in _id_list(negatives, "negatives")]
        snap = self.snapshot
        rows = []
        for t in pos + neg:
            r = snap.row_of(t)
            if r is None:
                raise InputError(f"tile {t} is not in this index")
            rows.append(r)
        df = self._results(snap, np.array(rows, np.int64), np.zeros(len(rows), np.float32))
        df = df.drop(columns=["rank", "score"])
        df.insert(1, "label", ["relevant"] * len(pos) + ["not relevant"] * len(neg))
        df.insert(2, "query", query)
        return df

    # --- things the UI and CLI show ----------------------------------------------------------
    def thumbnail(self, tile_id: int) -> bytes:
        tile_id = as_tile_id(tile_id)
        jpeg = self.thumbnails([tile_id]).get(tile_id)
        if jpeg is None:
            raise InputError(f"tile_id {tile_id} has no thumbnail")
        return jpeg

    def thumbnails(self, tile_ids) -> dict[int, bytes]:
        """JPEG thumbnails of several tiles, one read per segment (a result page is one call).
        Ids not in the index raise InputError; the dict holds every id asked for."""
        ids = [as_tile_id(t) for t in tile_ids]
        with self._thumbs_lock:
            out = {t: self._thumbs[t] for t in ids if t in self._thumbs}
        missing = [t for t in dict.fromkeys(ids) if t not in out]
        if not missing:
            return out
        snap = self.snapshot
        by_segment: dict[str, list[int]] = {}
        for t in missing:
            row = snap.row_of(t)
            if row is None:
                raise InputError(f"tile_id {t} is not in this index")
            by_segment.setdefault(snap.segment_of(row), []).append(t)
        for seg, seg_ids in by_segment.items():
            try:
                table = read_thumbs(self.layout, seg, seg_ids)
            except (OSError, pa.ArrowException) as e:
                # compacted away since this snapshot: reload once and retry; a file missing from
                # the live generation is damage, named with its repair (never a retry loop)
                if isinstance(e, FileNotFoundError) and self.refresh():
                    return {**out, **self.thumbnails(missing)}
                raise damaged(self.layout, [f"segments/{seg}/thumbs.parquet "
                                            f"{'is missing' if isinstance(e, FileNotFoundError) else 'is unreadable'}"]) from None
            got = dict(zip(table.column("tile_id").to_pylist(), table.column("jpeg").to_pylist()))
            lost = [t for t in seg_ids if t not in got]
            if lost:
                raise damaged(self.layout, [f"segments/{seg}/thumbs.parquet has no thumbnail for "
                                            f"tile {lost[0]}"])
            for t in seg_ids:
                out[t] = got[t]
        with self._thumbs_lock:
            self._thumbs.update((t, out[t]) for t in missing if t in out)
            while len(self._thumbs) > THUMB_CACHE:
                self._thumbs.popitem(last=False)
        return out

    def tile(self, tile_id: int) -> dict:
        snap = self.snapshot
        row = snap.row_of(as_tile_id(tile_id))
        if row is None:
            raise InputError(f"tile_id {tile_id} is not in this index")
        return self._results(snap, np.array([row]), np.array([1.0], np.float32)).iloc[0].to_dict()

    def overviews(self) -> list[dict]:
        """Per-scene overview images with their corner coordinates (lon, lat): the offline
        basemap drawn from the indexed imagery."""
        import json

        snap = self.snapshot
        out = []
        for name in snap.segments:
            try:
                table = read_overviews(self.layout, name)
            except (OSError, pa.ArrowException):
                raise damaged(self.layout, [f"segments/{name}/overviews.parquet is missing or unreadable"]) from None
            for r in table.to_pylist():
                r["corners"] = json.loads(r["corners"])
                out.append(r)
        live = set(snap.scenes().column("scene_id").to_pylist())
        return [r for r in out if r["scene_id"] in live]

    def scenes(self):
        """Indexed files as a DataFrame (path, sensor, modality, acquired, n_tiles, bounds)."""
        return self.snapshot.scenes().to_pandas()

    def footprints(self):
        """All live tile footprints as a GeoDataFrame (for the coverage map)."""
        snap = self.snapshot
        return self._results(snap, np.arange(snap.n_tiles), np.zeros(snap.n_tiles, np.float32))

    def info(self) -> dict:
        snap = self.snapshot
        scenes = snap.scenes()
        n = snap.n_tiles
        bbox = None
        if n:
            bbox = [float(snap.minx.min()), float(snap.miny.min()),
                    float(snap.maxx.max()), float(snap.maxy.max())]
        enc = snap.manifest.encoder
        from ..encoder.registry import LEGACY_ENCODER  # lazy: the encoder package loads torch
        return {
            "index": str(self.path),
            "generation": snap.manifest.generation,
            "tiles": n,
            "vectors": int(snap.vectors.shape[0]),
            "vector_index": (snap._vindex.describe() if snap._vindex is not None else
                             {"kind": "ivfpq" if snap.large else "flat", "loaded": False}),
            "scenes": scenes.num_rows,
            "scenes_without_tiles": int(sum(1 for v in scenes.column("n_tiles").to_pylist() if not v)),
            "modalities": {MODALITIES[i]: int(c) for i, c in enumerate(snap.modality_counts[:len(MODALITIES)]) if c},
            "sensors": {name: int(c) for name, c in sorted(zip(snap.sensor_names, snap.sensor_counts)) if c},
            "encoder": {"name": enc.get("name"), "identity": enc.get("identity"),
                        "embedding_dim": enc.get("dim"), "trained": enc.get("trained"),
                        "registry_name": enc.get("encoder") or LEGACY_ENCODER,
                        **({"weights": enc["weights"]} if enc.get("weights") else {})},
            "bbox": bbox,
            "segments": len(snap.manifest.segments),
        }


_OPEN: dict[tuple, Index] = {}
_OPEN_LOCK = threading.Lock()


def open_index(path: str | Path, encoder=None, checkpoint: str | Path | None = None,
               config: SearchConfig = DEFAULT, weights: str | Path | None = None) -> Index:
    """Opened indexes are cached per path (and per encoder, checkpoint, config and weights
    folder, when given); the encoder the index was built with is loaded on the first query that
    needs it (a weights folder, where it needs one: `weights`, its environment variable, or the
    folder recorded at indexing)."""
    if not isinstance(config, SearchConfig):
        raise InputError(f"config must be an engine.SearchConfig, got {type(config).__name__}")
    key = (str(Path(path).resolve()), id(encoder) if encoder is not None else None,
           str(checkpoint or ""), config, str(weights or ""))
    with _OPEN_LOCK:
        if key not in _OPEN:
            _OPEN[key] = Index(path, encoder=encoder, checkpoint=checkpoint, config=config,
                               weights=weights)
        return _OPEN[key]


def search(text: str | None = None, bbox=None, *, index: str | Path, k: int = 20, **kwargs):
    return open_index(index).search(text, bbox=bbox, k=k, **kwargs)
