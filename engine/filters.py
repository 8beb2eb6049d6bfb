"""Search filters: validated once, then applied either in DuckDB (exact, R-tree) for selective
queries or as numpy masks over column arrays for broad ones."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from .errors import InputError
from .geo import bbox_geometry, parse_region
from .modalities import check_modality

EPOCH = dt.date(1970, 1, 1)


def _parse_date(v, name: str) -> dt.date | None:
    if v is None or v == "":
        return None
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    try:
        return dt.date.fromisoformat(str(v)[:10])
    except ValueError:
        raise InputError(f"{name} {v!r} is not a date (YYYY-MM-DD)") from None


def _as_list(v) -> list[str] | None:
    if v is None or v == "" or v == []:
        return None
    return [v] if isinstance(v, str) else list(v)


@dataclass(frozen=True)
class Filters:
    region: BaseGeometry | None = None
    modalities: tuple[str, ...] | None = None
    sensors: tuple[str, ...] | None = None
    start: dt.date | None = None
    end: dt.date | None = None

    @classmethod
    def build(cls, *, bbox=None, region=None, modality=None, sensor=None, start=None, end=None):
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
        return cls(geom, tuple(mods) if mods else None, tuple(sens) if sens else None, start_d, end_d)

    @property
    def empty(self) -> bool:
        return self.region is None and not self.modalities and not self.sensors \
            and self.start is None and self.end is None

    # --- numpy: envelope test (superset of the exact geometry test) + attributes --------
    def mask(self, snap) -> np.ndarray:
        m = np.ones(snap.n_tiles, dtype=bool)
        if self.region is not None:
            env = np.zeros(snap.n_tiles, dtype=bool)
            parts = getattr(self.region, "geoms", [self.region])
            for g in parts:
                x0, y0, x1, y1 = g.bounds
                env |= (snap.minx <= x1) & (snap.maxx >= x0) & (snap.miny <= y1) & (snap.maxy >= y0)
            m &= env
        if self.modalities:
            m &= np.isin(snap.modality, self.modalities)
        if self.sensors:
            m &= np.isin(snap.sensor, self.sensors)
        if self.start is not None:
            m &= snap.acquired_days >= (self.start - EPOCH).days
        if self.end is not None:
            m &= (snap.acquired_days <= (self.end - EPOCH).days) & (snap.acquired_days > -10**9)
        return m

    def exact_geometry(self, snap, rows: np.ndarray) -> np.ndarray:
        """Exact footprint test for candidate rows (the envelope test lets through tiles whose
        envelope, not polygon, touches the region)."""
        if self.region is None or len(rows) == 0:
            return np.ones(len(rows), dtype=bool)
        wkb = snap.tiles.column("geometry").take(rows).to_pylist()
        geoms = shapely.from_wkb(wkb)
        return shapely.intersects(geoms, self.region)

    # --- DuckDB: exact predicate with the R-tree -----------------------------------------
    def sql(self) -> tuple[str, list]:
        clauses, params = [], []
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
        if self.start is not None:
            clauses.append("acquired >= ?")
            params.append(self.start)
        if self.end is not None:
            clauses.append("acquired <= ?")
            params.append(self.end)
        return " AND ".join(clauses) or "TRUE", params

    def describe(self) -> dict:
        return {"region": self.region.wkt if self.region is not None else None,
                "modalities": self.modalities, "sensors": self.sensors,
                "start": str(self.start) if self.start else None,
                "end": str(self.end) if self.end else None}
