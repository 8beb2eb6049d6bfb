"""Saved searches ("watches") and their alert logs, kept in the index folder.

    index/watches/<name>/search.json      the saved search: what was asked (text, tile, marks,
                                          region, filters, keep-undated), its ranking options
                                          (calibrated, evidence, diversify, min_relevance), k
                                          and min_score, and the resolved unit scoring vector
                                          with the encoder that made it
    index/watches/<name>/bank.npy         a search saved in the evidence order: the prompt bank
                                          (evidence.py) as embedded when it was saved, so its
                                          min_score keeps its units whatever later releases do
                                          to the engine's bank
    index/watches/<name>/state.json       how far alerts were checked: {generation, through,
                                          boundary (scenes of the `through` second)}
    index/watches/<name>/alerts.geojsonl  the alert log: one GeoJSON Feature a line (tile id,
                                          score, footprint, scene, time, generation)
    index/watches/<name>/seen.json        how many alert lines the analyst has looked at

After every indexing run (indexer/runner.py calls `check_watches` while it still holds the
writer lock, so one process at a time writes alerts) each saved search scores the tiles added
since it last checked: tiles of scenes whose `indexed_at` is after the watch's `through` time
(or in that second, and not checked then). Scene records keep `indexed_at` across compactions,
so a compaction is not news; a re-indexed (changed) file is. This assumes the indexing host's
clock does not run backwards between runs.
Matches (inside the filters, score >= min_score, the best k) are appended to the log. The new
tiles are ranked as the saved search ranked: with `calibrated` the score is the per-modality
calibrated one (engine/retrieval/ranking.py, against the index as it is at the check, as a
search then would be) and min_score is in its units; with `evidence` it is the query's evidence
against the saved bank (evidence.py; every new tile is scored, where a search scores each
modality's top tiles by cosine); `min_relevance` drops tiles below that
percentile; `diversify=N` keeps at most N of a run's alerts per scene and one per place (a
revisit of a place alerted in an earlier run is news, so it is not held against earlier runs).
Saved searches written before these options existed have none of them: the plain ranking.

Crash safety, like the store's (engine/store/files.py): every file is replaced whole (write
beside, fsync, rename), so a reader sees the old log or the new one, never half of one. The
log is written before the state: a run killed between the two re-checks the same tiles next
time, and tiles already in the log are not logged again (a tile alerts at most once per watch);
a run killed before the log loses nothing (nothing was promised). A saved search that cannot be
read or run is reported by name and skipped; it never stops indexing.
"""

from __future__ import annotations

import builtins
import datetime as dt
import io
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GLBError, InputError
from ..store.faults import crash_point
from ..store.files import atomic_write_bytes, fsync_dir

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,62}[A-Za-z0-9_.-]|[A-Za-z0-9]")
QUERY_KEYS = ("text", "tile_id", "image", "positives", "negatives", "bbox", "region", "modality",
              "sensor", "start", "end")
FILTER_KEYS = ("bbox", "region", "modality", "sensor", "start", "end", "stac_collection",
               "stac_item")
RANKING_KEYS = ("calibrated", "diversify", "min_relevance", "evidence")
MAX_K = 1000
BANK_FILE = "bank.npy"


class WatchError(GLBError):
    """A saved search that cannot be read or run (reported by name, skipped)."""


def check_name(name) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InputError(f"saved search name {str(name)[:70]!r}: use 1-64 letters, digits, spaces, "
                         f"'_', '.' or '-' (starting with a letter or digit)")
    return name


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_json(path: Path, obj, crash: str | None = None) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode() + b"\n", crash=crash)


def _read_json(path: Path, what: str) -> dict:
    try:
        d = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise WatchError(f"its {what} file {path.name} is missing") from None
    except (OSError, ValueError) as e:
        raise WatchError(f"its {what} file {path.name} is unreadable ({str(e)[:100]})") from None
    if not isinstance(d, dict):
        raise WatchError(f"its {what} file {path.name} is not a JSON object")
    return d


@dataclass
class WatchReport:
    """What one check did: alerts logged per saved search, and the ones skipped (by name)."""
    alerts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    generation: int | None = None

    @property
    def total(self) -> int:
        return sum(self.alerts.values())

    def summary(self) -> str:
        if not self.alerts and not self.problems:
            return ""
        s = f"{self.total} new alerts for {len(self.alerts)} saved searches"
        if self.problems:
            s += f" ({len(self.problems)} skipped)"
        return s


class Watches:
    """The saved searches of one index (`engine.open(path).watches`)."""

    def __init__(self, index):
        self.index = index
        self.root = Path(index.path) / "watches"

    def _dir(self, name: str) -> Path:
        return self.root / check_name(name)

    # --- saving -----------------------------------------------------------------------------
    def add(self, name: str, text: str | None = None, *, k: int = 20, min_score: float | None = None,
            replace: bool = False, image_name: str | None = None, undated: bool = False,
            calibrated: bool = False, diversify: int | None = None,
            min_relevance: float | None = None, evidence: bool = False, **query) -> dict:
        """Save a search under `name`: the same arguments as Index.search (text, tile_id, image
        with wavelengths and image_modality, vector, positives, negatives, bbox/region and
        filters, undated, and the ranking options calibrated / evidence / diversify /
        min_relevance, which every alert run re-applies). Its alerts start from now. `min_score`
        defaults to the score of its k-th result today (calibrated, or the evidence, when the
        search is): a new tile alerts when it would have made today's top k."""
        from .index import check_k
        from .ranking import Ranking

        check_name(name)
        k = check_k(k)
        ranking = Ranking.build(calibrated, diversify, min_relevance, evidence)
        undated = _flag(undated, "undated")
        if min_score is not None:
            try:
                min_score = float(min_score)
            except (TypeError, ValueError):
                raise InputError(f"min_score {min_score!r} is not a number") from None
            if not np.isfinite(min_score):
                raise InputError(f"min_score {min_score!r} is not a finite number")
        d = self._dir(name)
        if d.exists() and not replace:
            raise InputError(f"a saved search named {name!r} exists; remove it first")
        idx = self.index
        filters = {key: query.get(key) for key in FILTER_KEYS}
        q, refined = idx.query_vector(text, undated=undated, **query)
        snap = idx.snapshot
        ranked = {key: getattr(ranking, key) for key in RANKING_KEYS}
        bank = idx.bank(snap) if ranking.evidence else None
        if min_score is None:
            res = idx.search(vector=q, k=k, undated=undated, **ranked, **filters)
            min_score = float(res["score"].min()) if len(res) else None
        spec = {"text": text, "tile_id": query.get("tile_id"), "image": image_name,
                "positives": [int(t) for t in (query.get("positives") or [])],
                "negatives": [int(t) for t in (query.get("negatives") or [])],
                **{key: _jsonable(query.get(key)) for key in FILTER_KEYS}, "undated": undated}
        doc = {"name": name, "created": _now(), "generation": snap.manifest.generation,
               "encoder": snap.manifest.encoder.get("identity"), "query": spec, "k": k,
               "ranking": ranked, "min_score": min_score,
               **({"bank": {"prompts": len(bank.vectors), "scale": bank.scale, "null": bank.null}}
                  if bank is not None else {}),
               "feedback": refined.describe() if refined else None,
               "vector": [float(x) for x in q]}
        state = {"generation": snap.manifest.generation, **_cursor(snap)}
        # Made complete in a hidden folder, then renamed into place: a listing (or an indexing
        # run) never meets a saved search without its files.
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".new-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _write_json(tmp / "search.json", doc)
        _write_json(tmp / "state.json", state)
        if bank is not None:
            buf = io.BytesIO()
            np.save(buf, bank.vectors.astype(np.float32), allow_pickle=False)
            atomic_write_bytes(tmp / BANK_FILE, buf.getvalue())
        if d.exists():  # replace: the old one (and its alerts) goes
            self.remove(name)
        try:
            tmp.rename(d)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise InputError(f"a saved search named {name!r} was saved meanwhile; remove it first") from None
        fsync_dir(self.root)
        return self.show(name)

    def remove(self, name: str) -> None:
        d = self._dir(name)
        if not d.is_dir():
            raise InputError(f"no saved search named {name!r}")
        # Renamed out of sight first: a reader never lists a half-deleted search.
        gone = self.root / f".removed-{name}-{dt.datetime.now().timestamp():.0f}"
        d.rename(gone)
        shutil.rmtree(gone, ignore_errors=True)

    # --- reading ----------------------------------------------------------------------------
    def names(self) -> builtins.list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and NAME.fullmatch(p.name))

    def list(self) -> builtins.list[dict]:
        """One summary per saved search; an unreadable one says why instead of failing."""
        out = []
        for n in self.names():
            try:
                out.append(self.show(n, alerts=False))
            except WatchError as e:
                out.append({"name": n, "error": str(e)})
        return out

    def show(self, name: str, alerts: bool = True) -> dict:
        d = self._dir(name)
        if not d.is_dir():
            raise InputError(f"no saved search named {name!r}")
        doc = _read_json(d / "search.json", "search")
        doc.pop("vector", None)
        log = read_alerts(d)
        seen = _seen(d)
        doc.update({"alerts": len(log), "new": max(0, len(log) - seen)})
        try:
            doc["checked"] = _read_json(d / "state.json", "state")
        except WatchError:
            doc["checked"] = None
        if alerts:
            doc["log"] = log
        return doc

    def alerts(self, name: str, new_only: bool = False) -> builtins.list[dict]:
        """The alert log as GeoJSON Features, oldest first (`new_only`: since last looked)."""
        d = self._dir(name)
        if not d.is_dir():
            raise InputError(f"no saved search named {name!r}")
        log = read_alerts(d)
        return log[_seen(d):] if new_only else log

    def mark_seen(self, name: str) -> int:
        """The analyst has looked: every alert so far stops counting as new. -> alerts seen."""
        d = self._dir(name)
        n = len(read_alerts(d))
        _write_json(d / "seen.json", {"seen": n, "at": _now()})
        return n


def _flag(v, what: str) -> bool:
    if v is None or isinstance(v, (bool, np.bool_)):
        return bool(v)
    raise InputError(f"{what} must be true or false, got {v!r}")


def saved_ranking(doc: dict):
    """The ranking a saved search re-applies (ranking.Ranking); files saved before the ranking
    options existed have no "ranking": the plain ranking. -> (Ranking, undated)."""
    from .ranking import Ranking

    r = doc.get("ranking")
    if r is None:
        r = {}
    if not isinstance(r, dict) or set(r) - set(RANKING_KEYS):
        raise WatchError(f"its ranking {str(r)[:80]!r} is not an object of {', '.join(RANKING_KEYS)}")
    q = doc.get("query") or {}
    try:
        calibrated = _flag(r.get("calibrated", False), "calibrated")
        evidence = _flag(r.get("evidence", False), "evidence")
        undated = _flag(q.get("undated", False), "undated")
        return Ranking.build(calibrated, r.get("diversify"), r.get("min_relevance"), evidence), undated
    except InputError as e:
        raise WatchError(f"its ranking is invalid ({e})") from None


def _jsonable(v):
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, dt.date):
        return v.isoformat()
    if hasattr(v, "wkt"):
        return v.wkt
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)


def _seen(d: Path) -> int:
    try:
        return int(json.loads((d / "seen.json").read_bytes()).get("seen", 0))
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


def read_alerts(d: Path) -> list[dict]:
    try:
        raw = (d / "alerts.geojsonl").read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for line in raw.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # never written by us (files are replaced whole); skip, keep the rest
    return out


def _cursor(snap) -> dict:
    """Where a check leaves off: the newest `indexed_at` among live scenes (ISO, UTC) and the
    scenes indexed in that very second (a later commit in the same second is still news)."""
    t = snap.scenes().select(["scene_id", "indexed_at"]).to_pylist()
    t = [r for r in t if r["indexed_at"] is not None]
    if not t:
        return {"through": None, "boundary": []}
    last = max(r["indexed_at"] for r in t)
    return {"through": last.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "boundary": sorted(r["scene_id"] for r in t if r["indexed_at"] == last)}


# --- the check after an indexing run ------------------------------------------------------------
def check_watches(index_dir, echo=None) -> WatchReport:
    """Run every saved search over the tiles added since it last checked and append matches to
    its alert log. The caller holds the index's writer lock (one alert writer at a time).
    Never raises for a bad saved search: it is named in `problems` and skipped."""
    from .snapshot import Snapshot

    root = Path(index_dir) / "watches"
    report = WatchReport()
    if not root.is_dir():
        return report
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        return report
    snap = None
    cache: dict = {}
    for name in names:
        d = root / name
        try:
            if not NAME.fullmatch(name):
                raise WatchError("not a valid saved search name")
            doc = _read_json(d / "search.json", "search")
            try:
                state = _read_json(d / "state.json", "state")
            except WatchError:  # lost state: start from when it was saved, never from the start
                state = {"generation": doc.get("generation", 0), "through": doc.get("created"),
                         "boundary": []}
            if snap is None:
                snap = Snapshot.load(index_dir)
                report.generation = snap.manifest.generation
            if int(state.get("generation", -1)) >= snap.manifest.generation:
                continue
            n = _check_one(d, doc, state, snap, cache)
            report.alerts[name] = n
        except GLBError as e:
            report.problems.append(f"saved search {name!r} skipped: {e}")
        except (OSError, ValueError, TypeError, KeyError) as e:
            report.problems.append(f"saved search {name!r} skipped: {type(e).__name__}: {str(e)[:160]}")
    return report


def _parse_time(s) -> dt.datetime | None:
    if not s:
        return None
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def _new_rows(snap, through: dt.datetime | None, boundary: list, cache: dict) -> np.ndarray:
    """Live rows of tiles whose scene was indexed after `through` (or in that second and not
    among the `boundary` scenes already checked); all when `through` is None."""
    key = (through, tuple(boundary))
    if key in cache:
        return cache[key]
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..store.segment import read_tiles

    sc = snap.scenes().select(["scene_id", "segment", "indexed_at", "n_tiles"]).to_pylist()
    old = set(boundary)
    new = [s for s in sc if s["n_tiles"] and s["segment"] and
           (through is None or (s["indexed_at"] is not None and
                                (s["indexed_at"] > through or
                                 (s["indexed_at"] == through and s["scene_id"] not in old))))]
    parts = []
    for seg in sorted({s["segment"] for s in new}):
        if seg not in snap.segments:
            continue
        t = read_tiles(snap.layout, seg).select(["tile_id", "scene_id"])
        want = [s["scene_id"] for s in new if s["segment"] == seg]
        mask = pc.is_in(t.column("scene_id"), value_set=pa.array(want, pa.string()))
        parts.append(t.filter(mask).column("tile_id").to_numpy())
    ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    rows = [snap.row_of(int(t)) for t in ids]
    out = np.array(sorted(r for r in rows if r is not None), np.int64)
    cache[key] = out
    return out


def _check_one(d: Path, doc: dict, state: dict, snap, cache: dict) -> int:
    from .filters import Filters

    ident = snap.manifest.encoder.get("identity")
    if doc.get("encoder") != ident:
        raise WatchError(f"saved with encoder {doc.get('encoder')}, the index uses {ident}; save it again")
    try:
        v = np.asarray(doc["vector"], np.float32).reshape(-1)
    except (KeyError, TypeError, ValueError):
        raise WatchError("its search.json has no usable vector; save it again") from None
    if v.shape[0] != snap.dim or not np.all(np.isfinite(v)):
        raise WatchError(f"its vector is not {snap.dim} finite numbers; save it again")
    k = doc.get("k", 20)
    if not isinstance(k, int) or not 0 < k <= MAX_K:
        raise WatchError(f"k {k!r} is not an integer from 1 to {MAX_K}")
    min_score = doc.get("min_score")
    if min_score is not None and not isinstance(min_score, (int, float)):
        raise WatchError(f"min_score {min_score!r} is not a number")
    ranking, undated = saved_ranking(doc)
    bank = _saved_bank(d, doc, snap.dim) if ranking.evidence else None
    q = doc.get("query") or {}
    try:
        given: dict[str, Any] = {key: q.get(key) for key in FILTER_KEYS}
        filters = Filters.build(**given, undated=undated)
    except InputError as e:
        raise WatchError(f"its filters are invalid ({e})") from None
    boundary = state.get("boundary") or []
    if not isinstance(boundary, list):
        raise WatchError("its state.json is malformed (boundary)")
    rows = _new_rows(snap, _parse_time(state.get("through")), boundary, cache)
    cursor = _cursor(snap)
    if len(rows):
        rows = rows[filters.check_rows(snap, rows)]
        rows = rows[filters.exact_geometry(snap, rows)]
    raw = snap.vectors.score(v, rows) if len(rows) else np.zeros(0, np.float32)
    scores, relevance = raw, None
    if not ranking.plain and len(rows):
        # As Index.search ranks (index.py `_ranked`): the query's score distribution per
        # modality over this snapshot's reference tiles.
        stats = _reference(snap, cache).stats(v)
        codes = snap.modality_code[rows]
        relevance = stats.relevance(raw, codes)
        if ranking.calibrated:
            scores = stats.calibrate(raw, codes)
        elif bank is not None:
            scores = bank.evidence(raw, snap.vectors.take(rows))
        if ranking.min_relevance is not None:
            keep = relevance >= ranking.min_relevance
            rows, raw, scores, relevance = rows[keep], raw[keep], scores[keep], relevance[keep]
    if min_score is not None:
        keep = scores >= np.float32(min_score)
        rows, raw, scores = rows[keep], raw[keep], scores[keep]
        relevance = None if relevance is None else relevance[keep]
    for p in d.iterdir():  # temporary files of a run killed mid-write
        if p.name.startswith(".") and ".tmp-" in p.name:
            p.unlink(missing_ok=True)
    log_path = d / "alerts.geojsonl"
    old = log_path.read_bytes() if log_path.exists() else b""
    logged = {f.get("properties", {}).get("tile_id") for f in read_alerts(d)}
    order = np.lexsort((snap.tile_ids[rows], -scores))
    fresh = np.array([snap.tile_ids[r] not in logged for r in rows[order]], bool)
    order = order[fresh]
    if ranking.diversify is not None and len(order):
        from .ranking import diversify

        r = rows[order]
        boxes = np.stack([snap.minx[r], snap.miny[r], snap.maxx[r], snap.maxy[r]], 1)
        scenes = snap.take(r, ["scene_id"]).column("scene_id").to_pylist()
        order = order[diversify(scenes, boxes, ranking.diversify, k)]
    order = order[:k]
    rows, raw, scores = rows[order], raw[order], scores[order]
    extra = None if relevance is None else {"score_raw": raw, "relevance": relevance[order]}
    gen = snap.manifest.generation
    if len(rows):
        lines = _features(snap, rows, scores, gen, extra)
        if old and not old.endswith(b"\n"):
            old += b"\n"
        atomic_write_bytes(log_path, old + b"".join(lines), crash="watch.alerts")
    crash_point("watch.alerts")
    _write_json(d / "state.json", {"generation": gen, **cursor}, crash="watch.state")
    crash_point("watch.state")
    return int(len(rows))


def _saved_bank(d: Path, doc: dict, dim: int):
    """The prompt bank a search saved in the evidence order scores with (evidence.Bank)."""
    from .evidence import Bank

    meta = doc.get("bank")
    scale = meta.get("scale") if isinstance(meta, dict) else None
    null = meta.get("null") if isinstance(meta, dict) else None
    if (not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale <= 0
            or not (null is None or isinstance(null, (int, float)) and np.isfinite(null))):
        raise WatchError("its search.json has no usable evidence bank (scale, null); save it again")
    try:
        vectors = np.load(d / BANK_FILE, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise WatchError(f"its {BANK_FILE} cannot be read ({type(e).__name__}); save it again") from None
    if (vectors.ndim != 2 or vectors.shape[1] != dim or len(vectors) == 0
            or vectors.dtype != np.float32 or not np.all(np.isfinite(vectors))):
        raise WatchError(f"its {BANK_FILE} is not a bank of {dim}-d finite float32 vectors; save it again")
    return Bank(vectors, float(scale), None if null is None else float(null))


def _reference(snap, cache: dict):
    """One ranking reference per check (ranking.Reference over the snapshot's tiles)."""
    from .ranking import Reference, sample_order

    if "reference" not in cache:
        cache["reference"] = Reference(snap.modality_code, snap.vectors.take,
                                       keys=sample_order(snap.tile_ids))
    return cache["reference"]


def _features(snap, rows: np.ndarray, scores: np.ndarray, gen: int,
              extra: dict | None = None) -> list[bytes]:
    """`extra`: per-row arrays added to the properties (score_raw and relevance of a ranked
    saved search, where `score` is what it ranks by)."""
    import shapely

    t = snap.take(rows, ["tile_id", "scene", "scene_id", "modality", "sensor", "acquired", "geometry"])
    geoms = shapely.from_wkb(t.column("geometry").to_numpy(zero_copy_only=False))
    now = _now()
    out = []
    for i, rec in enumerate(t.drop_columns(["geometry", "segment"]).to_pylist()):
        acq = rec.get("acquired")
        props = {"tile_id": int(rec["tile_id"]), "score": round(float(scores[i]), 6),
                 "scene": rec["scene"], "scene_id": rec["scene_id"], "modality": rec["modality"],
                 "sensor": rec["sensor"], "acquired": acq.isoformat() if acq else None,
                 "generation": gen, "time": now}
        for key, vals in (extra or {}).items():
            props[key] = round(float(vals[i]), 6)
        f = {"type": "Feature", "geometry": shapely.geometry.mapping(geoms[i]), "properties": props}
        out.append(json.dumps(f, separators=(",", ":")).encode() + b"\n")
    return out
