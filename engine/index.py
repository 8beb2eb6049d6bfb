"""`engine.open(path)` -> Index: query encoding, filtered vector search, results as GeoDataFrame.

Filtered search must return the true top-k inside the filter at any selectivity. The planner
first asks the snapshot's lon/lat grid how many tiles the region can hold (an upper bound that
costs O(grid rows), see engine/filters.py) and the attribute counts how many pass those
filters, then:
- broad (more than MATERIALISE_MIN_ROWS and MATERIALISE_MAX_FRACTION of the index): the index
  is searched unfiltered for ~(rerank depth / selectivity) rows with more lists probed, the
  filters are checked on those rows only, and the search widens until enough pass
  ("index+postfilter"). Cost ~ the index search, never O(index) in numpy.
- otherwise the candidates are listed (grid cells -> envelope test -> attribute mask):
  - few (<= PREFILTER_MAX_ROWS, or <= PREFILTER_MAX_FRACTION of a flat index): "prefilter":
    their vectors are scored exactly. Cost ~ candidates.
  - many: "index+selector": index search restricted to them by a FAISS id bitmap (for IVF-PQ
    with a filter-aware probe count), asking for more than k, widening until k survive.
Every path scores its final candidates exactly and refines footprints exactly (shapely, only
where the envelope does not settle it). With the flat index (small indexes) all of it is exact;
with IVF-PQ (large ones, engine/vectors.py) recall@10 is measured by `glb bench search` and
tests/test_search_scale.py.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .modalities import MODALITIES
from .filters import Filters
from .store.layout import Layout
from .store.segment import read_overviews, read_thumbs
from . import vectors
from .store.snapshot import Snapshot

log = logging.getLogger("glb.index")

MAX_K = 1000
PREFILTER_MAX_ROWS = 20_000        # candidates scored exactly, no index (flat index)
PREFILTER_MAX_ROWS_QUANTISED = 4096  # IVF-PQ index: always exact up to here; up to
EXACT_ROW_COST = 125                 # PREFILTER_MAX_ROWS when cheaper than the list scan
PREFILTER_MAX_FRACTION = 0.05      # (flat index) or this fraction of the index
MATERIALISE_MIN_ROWS = 262_144     # candidate sets up to this size (or fraction) are listed
MATERIALISE_MAX_FRACTION = 0.2     # and searched with a selector; broader ones post-filtered
RESULT_COLUMNS = ["rank", "tile_id", "score", "modality", "sensor", "scene", "acquired",
                  "scene_id", "row_off", "col_off", "height", "width", "geometry"]


_WGS84 = None


def _wgs84():
    """EPSG:4326 as a pyproj CRS, parsed once (parsing it per result page cost ~3 ms)."""
    global _WGS84
    if _WGS84 is None:
        import pyproj

        _WGS84 = pyproj.CRS.from_epsg(4326)
    return _WGS84


def check_k(k) -> int:
    try:
        k_int = int(k)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"k {k!r} is not an integer") from None
    if k_int != k or k_int <= 0:
        raise InputError(f"k must be a positive integer, got {k!r}")
    if k_int > MAX_K:
        raise InputError(f"k {k_int} is more than the maximum of {MAX_K}")
    return k_int


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
    def __init__(self, path: str | Path, encoder=None, checkpoint: str | Path | None = None):
        self.path = Path(path)
        self._checkpoint = checkpoint
        self.layout = Layout(self.path)
        self._snap = Snapshot.load(self.path)
        self._encoder = encoder
        self._lock = threading.Lock()
        self._thumbs: OrderedDict[int, bytes] = OrderedDict()
        self.last_plan: dict = {}

    # --- snapshot management -----------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        """The newest published generation (one small file read per call to notice it)."""
        self.refresh()
        return self._snap

    def refresh(self) -> bool:
        with self._lock:
            if self._snap.is_current():
                return False
            self._snap = Snapshot.load(self.path, previous=self._snap)
            return True

    @property
    def encoder(self):
        if self._encoder is None:
            from .encoder import load_encoder
            from .encoder.factory import shipped_checkpoint

            # an index built with an older released encoder keeps working with that encoder
            built_with = self._snap.manifest.encoder.get("identity")
            self._encoder = load_encoder(self._checkpoint or shipped_checkpoint(built_with))
        self._check_encoder(self._encoder)
        return self._encoder

    def _check_encoder(self, enc) -> None:
        built_with = self._snap.manifest.encoder.get("identity")
        if built_with and built_with != enc.identity:
            raise InputError(
                f"{self.path}: index was built with encoder {built_with} but the loaded encoder "
                f"is {enc.identity}; open it with the matching checkpoint")

    # --- queries -------------------------------------------------------------------------
    def search(self, text: str | None = None, bbox=None, k: int = 20, modality=None,
               start=None, end=None, *, sensor=None, region=None, image=None,
               wavelengths=None, image_modality: str | None = None, tile_id: int | None = None,
               vector: np.ndarray | None = None):
        """Top-k tiles for one query (text, image array, tile id or vector) within filters."""
        k = check_k(k)
        given = [x is not None for x in (text, image, tile_id, vector)]
        if sum(given) != 1:
            raise InputError("give exactly one query: text, image, tile_id or vector")
        filters = Filters.build(bbox=bbox, region=region, modality=modality, sensor=sensor,
                                start=start, end=end)
        snap = self.snapshot
        exclude = None
        if text is not None:
            q = self.encoder.encode_text([text])[0]
        elif image is not None:
            if wavelengths is None or image_modality is None:
                raise InputError("an image query needs its wavelengths and image_modality")
            q = self.encoder.encode_image(image, wavelengths, image_modality)[0]
        elif tile_id is not None:
            q, exclude = self.tile_vector(tile_id, snap), as_tile_id(tile_id)
        else:
            try:
                q = np.asarray(vector, dtype=np.float32).reshape(-1)
            except (TypeError, ValueError):
                raise InputError(f"query vector must be {snap.dim} finite numbers") from None
            if q.shape[0] != snap.dim or not np.all(np.isfinite(q)):
                raise InputError(f"query vector must be {snap.dim} finite numbers")
        rows, scores = self._top_k(snap, q, k + (exclude is not None), filters)
        if exclude is not None:
            keep = snap.tile_ids[rows] != exclude
            rows, scores = rows[keep][:k], scores[keep][:k]
        return self._results(snap, rows, scores)

    def tile_vector(self, tile_id, snap: Snapshot | None = None) -> np.ndarray:
        snap = snap or self.snapshot
        row = snap.row_of(as_tile_id(tile_id))
        if row is None:
            raise InputError(f"tile_id {tile_id} is not in this index")
        return snap.vectors[row]

    def _top_k(self, snap: Snapshot, q: np.ndarray, k: int, filters: Filters):
        n = snap.n_tiles
        if n == 0:
            self.last_plan = {"strategy": "empty", "candidates": 0}
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = np.ascontiguousarray(q, dtype=np.float32)
        vi = snap.vector_index
        plan = {"index": vi.kind}
        if filters.empty:
            rows, scores = vi.search(q, k)
            self.last_plan = {**plan, "strategy": "index", "candidates": n}
            return self._ordered(snap, rows, scores, k)
        materialise_max = max(MATERIALISE_MIN_ROWS, int(MATERIALISE_MAX_FRACTION * n))
        est, rows = filters.spatial_candidates(snap, materialise_max)
        f_attr = filters.attr_fraction(snap)
        if rows is None and filters.region is None and est * f_attr <= materialise_max:
            rows = np.flatnonzero(filters.attr_mask(snap))          # O(n), selective attributes
        elif rows is not None and (filters.modalities or filters.sensors or filters.start or filters.end):
            rows = rows[filters.attr_mask(snap, rows)]
        if rows is None:  # broad: post-filter the index's answers
            frac = max(est * f_attr / n, 1.0 / n)
            self.last_plan = {**plan, "strategy": "index+postfilter", "candidates": int(est * f_attr),
                              "estimate": round(frac, 6)}
            return self._postfilter(snap, vi, q, k, filters, frac)
        if len(rows) > 1 and not bool(np.all(rows[1:] >= rows[:-1])):
            rows = np.sort(rows)  # storage order: vectors and records are then read in file order
        n_env = len(rows)
        if n_env == 0:
            self.last_plan = {**plan, "strategy": "empty", "candidates": 0}
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        nprobe = None
        if vi.kind == "flat":
            small = n_env <= PREFILTER_MAX_ROWS or n_env <= PREFILTER_MAX_FRACTION * n
        elif n_env <= min(PREFILTER_MAX_ROWS, PREFILTER_MAX_ROWS_QUANTISED):
            small = True
        elif n_env <= PREFILTER_MAX_ROWS:
            # exact scores cost ~EXACT_ROW_COST list entries each (vectors read from disk):
            # score exactly when that is cheaper than scanning the lists that hold them
            nprobe, scanned = vi.probes_for(q, rows)
            small = n_env * EXACT_ROW_COST < scanned
        else:
            small = False
        if small:
            self.last_plan = {**plan, "strategy": "prefilter", "candidates": n_env}
            scores = vi.score(q, rows)
            m = max(4 * k, 256)
            if len(rows) > 2 * m:  # sort only the best m; all of them if the footprints reject too many
                top = np.argpartition(-scores, m - 1)[:m]
                out = self._refine(snap, filters, *self._sorted(snap, rows[top], scores[top]), k)
                if len(out[0]) >= k:
                    return out
            rows, scores = self._sorted(snap, rows, scores)
            return self._refine(snap, filters, rows, scores, k)
        self.last_plan = {**plan, "strategy": "index+selector", "candidates": n_env}
        want = max(2 * k, k + 16)
        while True:
            got, scores = vi.search_in(q, want, rows) if vi.kind == "flat" else \
                vi.search_in(q, want, rows, nprobe if want <= vectors.RERANK else None)
            got, scores = self._sorted(snap, got, scores)
            out_rows, out_scores = self._refine(snap, filters, got, scores, k)
            if len(out_rows) >= k or want >= n_env:
                break
            want = min(n_env, want * 4)
        if getattr(vi, "last_nprobe", None):
            self.last_plan["nprobe"] = vi.last_nprobe
        return out_rows, out_scores

    def _postfilter(self, snap, vi, q, k, filters: Filters, frac: float):
        """Index search for ~want/frac rows, keep those passing the filters, widen if short."""
        n = snap.n_tiles
        base = max(2 * k, k + 16) if vi.kind == "flat" else max(vectors.RERANK, 3 * k)
        want = min(n, int(np.ceil(base / frac)))
        nprobe = None
        if vi.kind != "flat":  # broad filters: the unfiltered probe count; widened if short
            nprobe = vi.nprobe
        while True:
            if vi.kind == "flat":
                got, scores = vi.search(q, k, want=want)
            else:
                got = vi.candidates(q, want, nprobe)
                got = got[filters.check_rows(snap, got)]
                got, scores = vi.rerank(q, got)
            if vi.kind == "flat":
                keep = filters.check_rows(snap, got)
                got, scores = got[keep], scores[keep]
            got, scores = self._sorted(snap, got, scores)
            out_rows, out_scores = self._refine(snap, filters, got, scores, k)
            if (len(out_rows) >= k and len(got) >= min(base, k * 4)) or want >= n:
                break
            want = min(n, want * 4)
            if nprobe is not None:
                nprobe = min(vi.nlist, nprobe * 2)
        self.last_plan["nprobe"] = nprobe
        return out_rows, out_scores

    @staticmethod
    def _sorted(snap: Snapshot, rows: np.ndarray, scores: np.ndarray):
        """Descending score, ties by tile id."""
        if len(rows) == 0:
            return rows.astype(np.int64), scores.astype(np.float32)
        order = np.lexsort((snap.tile_ids[rows], -scores))
        return rows[order].astype(np.int64), scores[order].astype(np.float32)

    @staticmethod
    def _ordered(snap, rows, scores, k):
        rows, scores = Index._sorted(snap, rows, scores)
        return rows[:k], scores[:k]

    @staticmethod
    def _refine(snap: Snapshot, filters: Filters, rows: np.ndarray, scores: np.ndarray, k: int):
        """The first k rows (in score order) whose footprint really meets the region."""
        if filters.region is None:
            return rows[:k], scores[:k]
        out_r, out_s = [], []
        got, i, step = 0, 0, max(2 * k, 64)
        while i < len(rows) and got < k:
            r, s = rows[i:i + step], scores[i:i + step]
            ok = filters.exact_geometry(snap, r)
            out_r.append(r[ok]), out_s.append(s[ok])
            got += int(ok.sum())
            i += step
        if not out_r:
            return rows[:0], scores[:0]
        return np.concatenate(out_r)[:k], np.concatenate(out_s)[:k]

    def _results(self, snap: Snapshot, rows: np.ndarray, scores: np.ndarray):
        """GeoDataFrame of the rows, built column by column (about 3x faster than going
        through pyarrow's to_pandas for a page of results)."""
        import geopandas as gpd
        import shapely
        from geopandas.array import from_shapely

        t = snap.take(rows, ["tile_id", "modality", "sensor", "scene", "acquired", "scene_id",
                             "row_off", "col_off", "height", "width", "geometry"])
        d = {"rank": np.arange(1, len(rows) + 1), "tile_id": t.column("tile_id").to_numpy(),
             "score": np.asarray(scores, dtype=np.float32)}
        for c in ("modality", "sensor", "scene"):
            d[c] = np.asarray(t.column(c).to_pylist(), dtype=object)
        d["acquired"] = pd.to_datetime(t.column("acquired").to_numpy(zero_copy_only=False))
        d["scene_id"] = np.asarray(t.column("scene_id").to_pylist(), dtype=object)
        for c in ("row_off", "col_off", "height", "width"):
            d[c] = t.column(c).to_numpy()
        d["geometry"] = from_shapely(shapely.from_wkb(t.column("geometry").to_numpy(zero_copy_only=False)),
                                     crs=_wgs84())
        return gpd.GeoDataFrame(d, geometry="geometry", copy=False)

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
            except FileNotFoundError:  # compacted away since this snapshot: reload and retry
                self.refresh()
                return {**out, **self.thumbnails(missing)}
            for t, jpeg in zip(table.column("tile_id").to_pylist(), table.column("jpeg").to_pylist()):
                out[t] = jpeg
                self._thumbs[t] = jpeg
        while len(self._thumbs) > 4096:
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
            for r in read_overviews(self.layout, name).to_pylist():
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
                        "embedding_dim": enc.get("dim"), "trained": enc.get("trained")},
            "bbox": bbox,
            "segments": len(snap.manifest.segments),
        }


_OPEN: dict[str, Index] = {}


def open_index(path: str | Path, encoder=None, checkpoint: str | Path | None = None) -> Index:
    """Opened indexes are cached per path (and per encoder or checkpoint, when given); the
    encoder is loaded on the first query that needs it."""
    key = f"{Path(path).resolve()}|{id(encoder) if encoder is not None else ''}|{checkpoint or ''}"
    if key not in _OPEN:
        _OPEN[key] = Index(path, encoder=encoder, checkpoint=checkpoint)
    return _OPEN[key]


def search(text: str | None = None, bbox=None, *, index: str | Path, k: int = 20, **kwargs):
    return open_index(index).search(text, bbox=bbox, k=k, **kwargs)
