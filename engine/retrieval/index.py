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

from ..errors import InputError
from ..modalities import MODALITIES
from ..store.layout import Layout
from ..store.segment import read_overviews, read_thumbs
from . import planner
from .config import DEFAULT, SearchConfig
from .filters import Filters
from .snapshot import Snapshot

MAX_K = 1000
THUMB_CACHE = 4096  # thumbnails kept in memory per Index (a few MB)


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
    if k_int != k or not 1 <= k_int <= max_k:
        raise InputError(f"k must be between 1 and {max_k}, got {str(k)[:40]}")
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
    def __init__(self, path: str | Path, encoder=None, checkpoint: str | Path | None = None,
                 config: SearchConfig = DEFAULT):
        self.path = Path(path)
        self.config = config
        self._checkpoint = checkpoint
        self.layout = Layout(self.path)
        self._snap = Snapshot.load(self.path, config=config.vectors)
        self._encoder = encoder
        self._lock = threading.Lock()          # snapshot swaps
        self._encoder_lock = threading.Lock()  # one encoder load
        self._thumbs_lock = threading.Lock()
        self._thumbs: OrderedDict[int, bytes] = OrderedDict()

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
        if self._encoder is None:
            with self._encoder_lock:
                if self._encoder is None:
                    from ..encoder import load_encoder
                    from ..encoder.factory import shipped_checkpoint

                    # an index built with an older released encoder keeps working with it
                    built_with = snap.manifest.encoder.get("identity")
                    self._encoder = load_encoder(self._checkpoint or shipped_checkpoint(built_with))
        self._check_encoder(self._encoder, snap)
        return self._encoder

    def _check_encoder(self, enc, snap: Snapshot) -> None:
        built_with = snap.manifest.encoder.get("identity")
        if built_with and built_with != enc.identity:
            raise InputError(
                f"{self.path}: index was built with encoder {built_with} but the loaded encoder "
                f"is {enc.identity}; open it with the matching checkpoint")

    # --- queries -------------------------------------------------------------------------
    def search(self, text: str | None = None, bbox=None, k: int = 20, modality=None,
               start=None, end=None, *, sensor=None, region=None, image=None,
               wavelengths=None, image_modality: str | None = None, tile_id: int | None = None,
               vector: np.ndarray | None = None):
        """Top-k tiles for one query (text, image array, tile id or vector) within filters;
        `result.attrs["plan"]` holds the strategy the planner chose (see planner.py)."""
        k = check_k(k)
        given = [x is not None for x in (text, image, tile_id, vector)]
        if sum(given) != 1:
            raise InputError("give exactly one query: text, image, tile_id or vector")
        filters = Filters.build(bbox=bbox, region=region, modality=modality, sensor=sensor,
                                start=start, end=end)
        snap = self.snapshot
        exclude = None
        if text is not None:
            q = self._encoder_for(snap).encode_text([text])[0]
        elif image is not None:
            if wavelengths is None or image_modality is None:
                raise InputError("an image query needs its wavelengths and image_modality")
            q = self._encoder_for(snap).encode_image(image, wavelengths, image_modality)[0]
        elif tile_id is not None:
            q, exclude = self.tile_vector(tile_id, snap), as_tile_id(tile_id)
        else:
            try:
                q = np.asarray(vector, dtype=np.float32).reshape(-1)
            except (TypeError, ValueError):
                raise InputError(f"query vector must be {snap.dim} finite numbers") from None
            if q.shape[0] != snap.dim or not np.all(np.isfinite(q)):
                raise InputError(f"query vector must be {snap.dim} finite numbers")
        rows, scores, plan = planner.top_k(snap, q, k + (exclude is not None), filters,
                                           self.config.planner)
        if exclude is not None:
            keep = snap.tile_ids[rows] != exclude
            rows, scores = rows[keep][:k], scores[keep][:k]
        res = self._results(snap, rows, scores)
        res.attrs["plan"] = plan
        return res

    def tile_vector(self, tile_id, snap: Snapshot | None = None) -> np.ndarray:
        snap = snap or self.snapshot
        row = snap.row_of(as_tile_id(tile_id))
        if row is None:
            raise InputError(f"tile_id {tile_id} is not in this index")
        return snap.vectors[row]

    def _results(self, snap: Snapshot, rows: np.ndarray, scores: np.ndarray):
        """GeoDataFrame of the rows, built column by column (faster than going
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
            except FileNotFoundError:  # compacted away since this snapshot: reload and retry
                self.refresh()
                return {**out, **self.thumbnails(missing)}
            for t, jpeg in zip(table.column("tile_id").to_pylist(), table.column("jpeg").to_pylist()):
                out[t] = jpeg
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


_OPEN: dict[tuple, Index] = {}
_OPEN_LOCK = threading.Lock()


def open_index(path: str | Path, encoder=None, checkpoint: str | Path | None = None,
               config: SearchConfig = DEFAULT) -> Index:
    """Opened indexes are cached per path (and per encoder, checkpoint and config, when
    given); the encoder is loaded on the first query that needs it."""
    if not isinstance(config, SearchConfig):
        raise InputError(f"config must be an engine.SearchConfig, got {type(config).__name__}")
    key = (str(Path(path).resolve()), id(encoder) if encoder is not None else None,
           str(checkpoint or ""), config)
    with _OPEN_LOCK:
        if key not in _OPEN:
            _OPEN[key] = Index(path, encoder=encoder, checkpoint=checkpoint, config=config)
        return _OPEN[key]


def search(text: str | None = None, bbox=None, *, index: str | Path, k: int = 20, **kwargs):
    return open_index(index).search(text, bbox=bbox, k=k, **kwargs)
