"""`engine.open(path)` -> Index: query encoding, filtered vector search, results as GeoDataFrame.

Filtered search must return the true top-k inside the filter at any selectivity. The planner
looks at how many tiles pass the cheap envelope/attribute mask:
- few (<= PREFILTER_MAX_ROWS, or <= PREFILTER_MAX_FRACTION of the index): pre-filter. DuckDB's
  R-tree gives the exact candidate rows; their vectors are scored exactly. Cost ~ candidates.
- many: index search restricted by an id selector (the mask as a FAISS bitmap), asking for
  more than k and refining footprints exactly, widening until k survive. Cost ~ index.
Both are exact over the filtered set with the flat index; tests compare them with brute force.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .filters import Filters
from .store.layout import Layout
from .store.segment import read_overviews, read_thumbs
from .store.snapshot import Snapshot

log = logging.getLogger("glb.index")

MAX_K = 1000
PREFILTER_MAX_ROWS = 20_000
PREFILTER_MAX_FRACTION = 0.05
RESULT_COLUMNS = ["rank", "tile_id", "score", "modality", "sensor", "scene", "acquired",
                  "scene_id", "row_off", "col_off", "height", "width", "geometry"]


def check_k(k) -> int:
    try:
        k_int = int(k)
    except (TypeError, ValueError):
        raise InputError(f"k {k!r} is not an integer") from None
    if k_int != k or k_int <= 0:
        raise InputError(f"k must be a positive integer, got {k!r}")
    if k_int > MAX_K:
        raise InputError(f"k {k_int} is more than the maximum of {MAX_K}")
    return k_int


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

            self._encoder = load_encoder(self._checkpoint)
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
            q, exclude = self.tile_vector(tile_id, snap), int(tile_id)
        else:
            q = np.asarray(vector, dtype=np.float32).reshape(-1)
            if q.shape[0] != snap.dim or not np.all(np.isfinite(q)):
                raise InputError(f"query vector must be {snap.dim} finite numbers")
        rows, scores = self._top_k(snap, q, k + (exclude is not None), filters)
        if exclude is not None:
            keep = snap.tile_ids[rows] != exclude
            rows, scores = rows[keep][:k], scores[keep][:k]
        return self._results(snap, rows, scores)

    def tile_vector(self, tile_id, snap: Snapshot | None = None) -> np.ndarray:
        snap = snap or self.snapshot
        try:
            row = snap.row_of(int(tile_id))
        except (TypeError, ValueError):
            raise InputError(f"tile_id {tile_id!r} is not an integer") from None
        if row is None:
            raise InputError(f"tile_id {tile_id} is not in this index")
        return snap.vectors[row]

    def _top_k(self, snap: Snapshot, q: np.ndarray, k: int, filters: Filters):
        n = snap.n_tiles
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = np.ascontiguousarray(q, dtype=np.float32)
        if filters.empty:
            self.last_plan = {"strategy": "index", "candidates": n}
            scores, rows = snap.faiss_index.search(q[None], min(k, n))
            keep = rows[0] >= 0
            return rows[0][keep].astype(np.int64), scores[0][keep]
        mask = filters.mask(snap)
        n_env = int(mask.sum())
        if n_env == 0:
            self.last_plan = {"strategy": "empty", "candidates": 0}
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if n_env <= PREFILTER_MAX_ROWS or n_env <= PREFILTER_MAX_FRACTION * n:
            rows = self._prefilter_rows(snap, filters, mask)
            self.last_plan = {"strategy": "prefilter", "candidates": int(len(rows))}
            return self._exact(snap, q, rows, k)
        self.last_plan = {"strategy": "index+selector", "candidates": n_env}
        return self._selector_search(snap, q, k, filters, mask, n_env)

    @staticmethod
    def _exact(snap: Snapshot, q: np.ndarray, rows: np.ndarray, k: int):
        if len(rows) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores = snap.vectors[rows] @ q
        if len(rows) > k:
            top = np.argpartition(-scores, k - 1)[:k]
        else:
            top = np.arange(len(rows))
        order = top[np.lexsort((snap.tile_ids[rows[top]], -scores[top]))]
        return rows[order], scores[order]

    def _prefilter_rows(self, snap: Snapshot, filters: Filters, mask: np.ndarray) -> np.ndarray:
        if filters.region is None:
            return np.flatnonzero(mask)  # attribute filters are exact in numpy already
        where, params = filters.sql()
        cur = snap.duck.cursor()
        rows = cur.execute(f"SELECT row FROM tiles WHERE {where}", params).fetchnumpy()["row"]
        cur.close()
        return np.sort(np.asarray(rows, dtype=np.int64))

    def _selector_search(self, snap, q, k, filters, mask, n_env):
        import faiss

        bitmap = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
        params = faiss.SearchParameters(sel=sel)
        want = min(n_env, max(2 * k, k + 16))
        while True:
            scores, rows = snap.faiss_index.search(q[None], want, params=params)
            rows, scores = rows[0], scores[0]
            keep = rows >= 0
            rows, scores = rows[keep].astype(np.int64), scores[keep]
            exact = filters.exact_geometry(snap, rows)
            rows, scores = rows[exact], scores[exact]
            if len(rows) >= k or want >= n_env:
                break
            want = min(n_env, want * 4)
        order = np.lexsort((snap.tile_ids[rows], -scores))[:k]
        return rows[order], scores[order]

    def _results(self, snap: Snapshot, rows: np.ndarray, scores: np.ndarray):
        import geopandas as gpd
        import shapely

        t = snap.tiles.take(rows).select(
            ["tile_id", "modality", "sensor", "scene", "acquired", "scene_id", "row_off",
             "col_off", "height", "width", "geometry"])
        df = t.to_pandas()
        df["geometry"] = shapely.from_wkb(df["geometry"].to_numpy()) if len(df) else []
        df.insert(0, "score", scores.astype(np.float32))
        df.insert(0, "rank", np.arange(1, len(df) + 1))
        df["acquired"] = pd.to_datetime(df["acquired"])
        return gpd.GeoDataFrame(df[RESULT_COLUMNS], geometry="geometry", crs="EPSG:4326")

    # --- things the UI and CLI show ----------------------------------------------------------
    def thumbnail(self, tile_id: int) -> bytes:
        tile_id = int(tile_id)
        if tile_id in self._thumbs:
            return self._thumbs[tile_id]
        snap = self.snapshot
        row = snap.row_of(tile_id)
        if row is None:
            raise InputError(f"tile_id {tile_id} is not in this index")
        seg = snap.tiles.column("segment")[row].as_py()
        try:
            t = read_thumbs(self.layout, seg, [tile_id])
        except FileNotFoundError:  # compacted away since this snapshot: reload and retry
            self.refresh()
            return self.thumbnail(tile_id)
        if t.num_rows == 0:
            raise InputError(f"tile_id {tile_id} has no thumbnail")
        png = t.column("png")[0].as_py()
        self._thumbs[tile_id] = png
        if len(self._thumbs) > 2048:
            self._thumbs.popitem(last=False)
        return png

    def tile(self, tile_id: int) -> dict:
        snap = self.snapshot
        row = snap.row_of(int(tile_id))
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
        by = lambda arr: dict(sorted(pd.Series(arr, dtype=object).value_counts().items())) if n else {}
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
            "scenes": scenes.num_rows,
            "scenes_without_tiles": int(sum(1 for v in scenes.column("n_tiles").to_pylist() if not v)),
            "modalities": {k: int(v) for k, v in by(snap.modality).items()},
            "sensors": {k: int(v) for k, v in by(snap.sensor).items()},
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
