"""Search filters: validated once, then applied with numpy over the snapshot's compact columns.

Spatial candidates come from `SpatialGrid`, a lon/lat grid over the tiles (rows sorted by the
cell of their lower-left corner): a box maps to one contiguous run of rows per grid row, so the
count of candidates (an upper bound: the planner's selectivity estimate) costs O(grid rows) and
the candidates themselves O(candidates), never O(index). Cells well inside the box need no
envelope test; tiles larger than a cell are kept aside and always tested. The exact footprint
test (shapely) runs only on rows a query is about to return, and not even there for tiles whose
envelope lies inside a box region. DuckDB's R-tree (`Snapshot.duck`) gives the same candidates;
`glb bench search` compares the two.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from ..errors import InputError
from ..geo import bbox_geometry, parse_region
from ..modalities import MODALITIES, check_modality

EPOCH = dt.date(1970, 1, 1)


def _parse_date(v, name: str) -> dt.date | None:
    if v is None or v == "":
        return None
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    text = str(v).strip()
    m = _ISO_DATE.fullmatch(text)  # a date, optionally with a time: nothing else after it
    try:
        if m is None:
            raise ValueError(text)
        return dt.date.fromisoformat(m.group(1).replace("-", "")[:8])
    except ValueError:
        raise InputError(f"{name} {str(v)[:80]!r} is not a date (YYYY-MM-DD)") from None


_ISO_DATE = re.compile(r"(\d{4}-?\d{2}-?\d{2})([T ]\d{2}(:?\d{2}(:?\d{2}(\.\d+)?)?)?"
                       r"(Z|[+-]\d{2}(:?\d{2})?)?)?")


def _as_list(v) -> list[str] | None:
    if v is None or v == "" or v == []:
        return None
    return [v] if isinstance(v, str) else list(v)


MAX_STAC_ID = 1024


def _stac_ids(v, what: str) -> tuple[str, ...] | None:
    """STAC ids as given (any text a catalogue may use), checked to be text of sane length."""
    ids = _as_list(v)
    if not ids:
        return None
    for x in ids:
        if not isinstance(x, str) or not x.strip():
            raise InputError(f"{what} {x!r} is not an id (non-empty text)")
        if len(x) > MAX_STAC_ID or any(ord(ch) < 32 or ord(ch) == 127 for ch in x):
            raise InputError(f"{what} {x[:80]!r} is not an id (control characters or over "
                             f"{MAX_STAC_ID} characters)")
    return tuple(ids)


@dataclass(frozen=True)
class Filters:
    region: BaseGeometry | None = None
    modalities: tuple[str, ...] | None = None
    sensors: tuple[str, ...] | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    undated: bool = False  # with a date range: also keep tiles that have no acquisition date
    # STAC collection ids / item ids (`glb index --stac`): a tile passes when its scene came
    # from one of them; tiles indexed from folders have neither
    stac_collections: tuple[str, ...] | None = None
    stac_items: tuple[str, ...] | None = None

    @classmethod
    def build(cls, *, bbox=None, region=None, modality=None, sensor=None, start=None, end=None,
              undated: bool = False, stac_collection=None, stac_item=None):
        if bbox is not None and region is not None:
            raise InputError("give either bbox or region (polygon), not both")
        geom = bbox_geometry(bbox) if bbox is not None else (parse_region(region) if region is not None else None)
        mods = _as_list(modality)
        if mods:
            mods = [check_modality(m) for m in mods]
        sens = _as_list(sensor)
        if sens:
            for s in sens:
                if not isinstance(s, str) or not s or len(s) > 64 or not all(c.isalnum() or c in "-_." for c in s):
                    raise InputError(f"sensor {s!r} is not a sensor name")
        start_d, end_d = _parse_date(start, "start"), _parse_date(end, "end")
        if start_d and end_d and start_d > end_d:
            raise InputError(f"start {start_d} is after end {end_d}")
        colls = _stac_ids(stac_collection, "STAC collection")
        items = _stac_ids(stac_item, "STAC item")
        return cls(geom, tuple(mods) if mods else None, tuple(sens) if sens else None, start_d, end_d,
                   bool(undated), colls, items)

    @property
    def has_attributes(self) -> bool:
        """Any filter besides the region (modality, sensor, dates, STAC collection / item)."""
        return bool(self.modalities or self.sensors or self.start is not None or self.end is not None
                    or self.stac_collections or self.stac_items)

    @property
    def empty(self) -> bool:
        return self.region is None and not self.has_attributes

    # --- region parts -------------------------------------------------------------------
    @property
    def parts(self) -> list:
        if self.region is None:
            return []
        return list(getattr(self.region, "geoms", [self.region]))

    @property
    def boxes(self) -> list[tuple[float, float, float, float]]:
        """Bounds of each region part (the envelope test)."""
        return [g.bounds for g in self.parts]

    @property
    def is_boxes(self) -> bool:
        """Every part is an axis-aligned rectangle (a bbox query): envelope inside => hit."""
        return all(shapely.equals(g, shapely.box(*g.bounds)) for g in self.parts)

    # --- numpy: envelope test (superset of the exact geometry test) + attributes --------
    def attr_mask(self, snap, rows: np.ndarray | None = None) -> np.ndarray:
        """Attribute filters (exact) over all rows, or over the given rows."""
        def sel(a):
            return a if rows is None else a[rows]

        n = snap.n_tiles if rows is None else len(rows)
        m = np.ones(n, dtype=bool)
        if self.modalities:
            codes = [MODALITIES.index(x) for x in self.modalities]
            m &= np.isin(sel(snap.modality_code), codes)
        if self.sensors:
            codes = [snap.sensor_names.index(x) for x in self.sensors if x in snap.sensor_names]
            m &= np.isin(sel(snap.sensor_code), codes)
        if self.start is not None or self.end is not None:
            d = sel(snap.acquired_days)
            dated = np.ones(n, dtype=bool)
            if self.start is not None:
                dated &= d >= (self.start - EPOCH).days
            if self.end is not None:
                dated &= (d <= (self.end - EPOCH).days) & (d > -10**9)
            m &= (dated | (d <= -10**9)) if self.undated else dated
        for col, wanted in self._stac():
            codes = snap.stac_code[col]
            if codes is None:  # no tile of this index came from STAC
                m[:] = False
                continue
            names = snap.stac_names[col]
            m &= np.isin(sel(codes), [names.index(x) for x in wanted if x in names])
        return m

    def _stac(self) -> list[tuple[str, tuple[str, ...]]]:
        """(snapshot column, wanted values) of each STAC filter that is set."""
        return [(c, v) for c, v in (("stac_collection", self.stac_collections),
                                    ("stac_item", self.stac_items)) if v]

    def env_mask(self, snap, rows: np.ndarray | None = None) -> np.ndarray:
        def sel(a):
            return a if rows is None else a[rows]

        n = snap.n_tiles if rows is None else len(rows)
        if self.region is None:
            return np.ones(n, dtype=bool)
        minx, miny, maxx, maxy = sel(snap.minx), sel(snap.miny), sel(snap.maxx), sel(snap.maxy)
        env = np.zeros(n, dtype=bool)
        for x0, y0, x1, y1 in self.boxes:
            env |= (minx <= x1) & (maxx >= x0) & (miny <= y1) & (maxy >= y0)
        return env

    def check_rows(self, snap, rows: np.ndarray) -> np.ndarray:
        """Envelope + attributes for a few rows (post-filtering)."""
        return self.env_mask(snap, rows) & self.attr_mask(snap, rows)

    def attr_fraction(self, snap) -> float:
        """Estimated fraction of tiles passing the attribute filters (exact per filter, from
        counts kept by the snapshot; combined as if independent)."""
        n = max(1, snap.n_tiles)
        f = 1.0
        if self.modalities:
            f *= sum(int(snap.modality_counts[MODALITIES.index(x)]) for x in self.modalities) / n
        if self.sensors:
            f *= sum(int(snap.sensor_counts[snap.sensor_names.index(x)]) for x in self.sensors
                     if x in snap.sensor_names) / n
        if self.start is not None or self.end is not None:
            cum = snap.day_cum
            last = len(cum) - 1
            lo = 0 if self.start is None else int(np.clip((self.start - EPOCH).days - snap.day0, 0, last))
            hi = last if self.end is None else int(np.clip((self.end - EPOCH).days - snap.day0 + 1, 0, last))
            undated = (n - int(cum[-1])) if self.undated else 0
            f *= min(n, max(0, int(cum[hi]) - int(cum[lo])) + undated) / n
        for col, wanted in self._stac():
            names, counts = snap.stac_names[col], snap.stac_counts[col]
            f *= sum(int(counts[names.index(x)]) for x in wanted if x in names) / n
        return f

    def spatial_candidates(self, snap, materialise_max: int):
        """-> (estimate, rows or None). The grid gives an upper-bound count for free; when it is
        at most `materialise_max`, the rows whose envelope meets the region are returned."""
        if self.region is None:
            return snap.n_tiles, None
        est = min(sum(snap.grid.count(b) for b in self.boxes), snap.n_tiles)
        if est > materialise_max:
            return est, None
        if est > snap.n_tiles // 16:  # broad: one vectorised pass beats gathering grid cells
            return est, np.flatnonzero(self.env_mask(snap))
        parts = [snap.grid.rows(b, snap) for b in self.boxes]
        rows = parts[0] if len(parts) == 1 else np.unique(np.concatenate(parts))
        return est, rows  # in grid order: the planner sorts what is left after the attributes

    def exact_geometry(self, snap, rows: np.ndarray) -> np.ndarray:
        """Exact footprint test for candidate rows (the envelope test lets through tiles whose
        envelope, not polygon, touches the region). Tiles whose envelope lies inside a box
        region need no geometry."""
        if self.region is None or len(rows) == 0:
            return np.ones(len(rows), dtype=bool)
        ok = np.zeros(len(rows), dtype=bool)
        if self.is_boxes:
            minx, miny, maxx, maxy = snap.minx[rows], snap.miny[rows], snap.maxx[rows], snap.maxy[rows]
            for x0, y0, x1, y1 in self.boxes:
                ok |= (minx >= x0) & (maxx <= x1) & (miny >= y0) & (maxy <= y1)
        todo = np.flatnonzero(~ok)
        if len(todo):
            wkb = snap.take(rows[todo], ["geometry"]).column("geometry").to_pylist()
            ok[todo] = shapely.intersects(shapely.from_wkb(wkb), self.region)
        return ok

    # --- DuckDB: exact predicate with the R-tree -----------------------------------------
    def sql(self) -> tuple[str, list]:
        clauses: list[str] = []
        params: list[object] = []
        if self.region is not None:
            # WKT from shapely's own writer of an already-parsed geometry: no user text reaches
            # the SQL. A literal (not a parameter) lets DuckDB use the R-tree.
            clauses.append(f"ST_Intersects(geom, ST_GeomFromText('{self.region.wkt}'))")
        if self.modalities:
            clauses.append(f"modality IN ({', '.join('?' for _ in self.modalities)})")
            params += list(self.modalities)
        if self.sensors:
            clauses.append(f"sensor IN ({', '.join('?' for _ in self.sensors)})")
            params += list(self.sensors)
        dates, dparams = [], []
        if self.start is not None:
            dates.append("acquired >= ?")
            dparams.append(self.start)
        if self.end is not None:
            dates.append("acquired <= ?")
            dparams.append(self.end)
        if dates:
            both = " AND ".join(dates)
            clauses.append(f"(({both}) OR acquired IS NULL)" if self.undated else both)
            params += dparams
        for col, wanted in self._stac():
            clauses.append(f"{col} IN ({', '.join('?' for _ in wanted)})")
            params += list(wanted)
        return " AND ".join(clauses) or "TRUE", params

    def describe(self) -> dict:
        return {"region": self.region.wkt if self.region is not None else None,
                "modalities": self.modalities, "sensors": self.sensors,
                "start": str(self.start) if self.start else None,
                "end": str(self.end) if self.end else None, "undated": self.undated,
                "stac_collections": self.stac_collections, "stac_items": self.stac_items}


class SpatialGrid:
    """Rows bucketed by the grid cell of their envelope's lower-left corner."""

    def __init__(self, minx: np.ndarray, miny: np.ndarray, maxx: np.ndarray, maxy: np.ndarray,
                 per_cell: int = 8, max_cells: int = 4_000_000):
        n = len(minx)
        self.n = n
        if n == 0:
            self.x0 = self.y0 = 0.0
            self.size, self.nx, self.ny = 1.0, 1, 1
            self.perm = np.zeros(0, np.int32)
            self.offsets = np.zeros(2, np.int64)
            self.big = np.zeros(0, np.int64)
            self.max_w = self.max_h = 0.0
            return
        x0, y0 = float(minx.min()), float(miny.min())
        ex = max(float(minx.max()) - x0, 1e-6)
        ey = max(float(miny.max()) - y0, 1e-6)
        cells = int(np.clip(n // per_cell, 1, max_cells))
        size = float(np.sqrt(ex * ey / cells))
        size = max(size, ex / 65536, ey / 65536, 1e-6)
        nx, ny = int(ex // size) + 1, int(ey // size) + 1
        w = maxx.astype(np.float64) - minx
        h = maxy.astype(np.float64) - miny
        big = (w > size) | (h > size)
        self.big = np.flatnonzero(big)
        ordinary = np.flatnonzero(~big) if len(self.big) else None
        cx = np.minimum(((minx - x0) / size).astype(np.int64), nx - 1)
        cy = np.minimum(((miny - y0) / size).astype(np.int64), ny - 1)
        cell = cy * nx + cx
        if ordinary is not None:
            cell = cell[ordinary]
        order = np.argsort(cell, kind="stable")
        self.perm = (order if ordinary is None else ordinary[order]).astype(
            np.int32 if n < 2 ** 31 else np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(np.bincount(cell, minlength=nx * ny))]).astype(np.int64)
        self.x0, self.y0, self.size, self.nx, self.ny = x0, y0, size, nx, ny
        self.max_w = float(w[~big].max()) if (~big).any() else 0.0
        self.max_h = float(h[~big].max()) if (~big).any() else 0.0

    @property
    def nbytes(self) -> int:
        return int(self.perm.nbytes + self.offsets.nbytes + self.big.nbytes)

    def _ranges(self, b):
        """Cell index ranges (inclusive) that may hold tiles meeting box b, and the 'sure'
        ranges whose tiles' envelopes lie inside b."""
        bx0, by0, bx1, by1 = b
        s = self.size
        cxa = int(np.floor((bx0 - self.max_w - self.x0) / s))
        cxb = int(np.floor((bx1 - self.x0) / s))
        cya = int(np.floor((by0 - self.max_h - self.y0) / s))
        cyb = int(np.floor((by1 - self.y0) / s))
        cxa, cya = max(cxa, 0), max(cya, 0)
        cxb, cyb = min(cxb, self.nx - 1), min(cyb, self.ny - 1)
        # sure: cell [x0+c*s, x0+(c+1)*s) for the corner; envelope within [corner, corner+max]
        sxa = int(np.ceil((bx0 - self.x0) / s))
        sxb = int(np.floor((bx1 - self.max_w - self.x0) / s)) - 1
        sya = int(np.ceil((by0 - self.y0) / s))
        syb = int(np.floor((by1 - self.max_h - self.y0) / s)) - 1
        return (cxa, cxb, cya, cyb), (max(sxa, cxa), min(sxb, cxb), max(sya, cya), min(syb, cyb))

    def count(self, b) -> int:
        """Upper bound on the tiles whose envelope meets box b: O(grid rows)."""
        if self.n == 0:
            return 0
        (cxa, cxb, cya, cyb), _ = self._ranges(b)
        if cxa > cxb or cya > cyb:
            return len(self.big)
        cy = np.arange(cya, cyb + 1, dtype=np.int64)
        starts = self.offsets[cy * self.nx + cxa]
        ends = self.offsets[cy * self.nx + cxb + 1]
        return int((ends - starts).sum()) + len(self.big)

    def rows(self, b, snap) -> np.ndarray:
        """Rows whose envelope meets box b (exact at envelope level)."""
        if self.n == 0:
            return np.zeros(0, np.int64)
        (cxa, cxb, cya, cyb), (sxa, sxb, sya, syb) = self._ranges(b)
        sure: list[np.ndarray] = []
        test: list[np.ndarray] = []
        if cxa <= cxb and cya <= cyb:
            off, nx, perm = self.offsets, self.nx, self.perm
            for cy in range(cya, cyb + 1):
                base = cy * nx
                a, e = off[base + cxa], off[base + cxb + 1]
                if a == e:
                    continue
                if sya <= cy <= syb and sxa <= sxb:
                    m0, m1 = off[base + sxa], off[base + sxb + 1]
                    if m0 > a:
                        test.append(perm[a:m0])
                    if m1 > m0:
                        sure.append(perm[m0:m1])
                    if e > m1:
                        test.append(perm[m1:e])
                else:
                    test.append(perm[a:e])
        if len(self.big):
            test.append(self.big)
        out = []
        if sure:
            out.append(np.concatenate(sure).astype(np.int64, copy=False))
        if test:
            t = np.concatenate(test).astype(np.int64, copy=False)
            bx0, by0, bx1, by1 = b
            keep = (snap.minx[t] <= bx1) & (snap.maxx[t] >= bx0) & (snap.miny[t] <= by1) & (snap.maxy[t] >= by0)
            out.append(t[keep])
        return np.concatenate(out) if out else np.zeros(0, np.int64)
