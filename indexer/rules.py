"""Per-archive rules (TOML): which sensor made files the metadata does not name, where chips
without a CRS are, when they were taken, and what not to index.

    [[rule]]
    glob = "*/landsat_timeseries/*.tif"     # fnmatch on the absolute POSIX path
    sensor = "landsat-swir1-nir-red-green"  # or wavelengths = [..] (+ modality = "..")
    date_regex = '(?P<year>\\d{4})'         # from the file name; or acquired = "2017-08-31"

    [[rule]]
    glob = "*/harvey/*/*/*.jpeg"
    sensor = "geoeye1-rgb"
    locate = "lon_lat_name"                 # file name is <lon>_<lat>; or "csv:<table.csv>"
    footprint_m = 64                        # side of the chip's square footprint

    [[rule]]
    glob = "*/labels/*"
    skip = true

The first matching rule wins. Command-line --sensor/--wavelengths override every rule.
"""

from __future__ import annotations

import csv
import datetime as dt
import fnmatch
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError
from engine.modalities import check_modality
from engine.sensors import get_sensor, parse_wavelengths

KEYS = {"glob", "sensor", "wavelengths", "modality", "value_scale", "acquired", "date_regex",
        "locate", "footprint_m", "skip"}


@dataclass(frozen=True)
class Rule:
    glob: str
    sensor: str | None = None
    wavelengths: tuple[float, ...] | None = None
    modality: str | None = None
    value_scale: float | None = None
    acquired: dt.date | None = None
    date_regex: str | None = None
    locate: str | None = None
    footprint_m: float | None = None
    skip: bool = False

    def matches(self, path: Path) -> bool:
        return fnmatch.fnmatch(path.as_posix(), self.glob)

    def date_for(self, path: Path) -> dt.date | None:
        if self.acquired:
            return self.acquired
        if self.date_regex:
            m = re.search(self.date_regex, path.name)
            if m:
                g = m.groupdict()
                try:
                    return dt.date(int(g["year"]), int(g.get("month") or 1), int(g.get("day") or 1))
                except (KeyError, ValueError):
                    return None
        return None

    def override(self, path: Path) -> dict:
        return {"sensor": self.sensor, "wavelengths": self.wavelengths, "modality": self.modality,
                "value_scale": self.value_scale, "acquired": self.date_for(path)}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_rules(path: str | Path | None) -> list[Rule]:
    """Parse and check a rules file. Every mistake is one InputError line naming the file, the
    rule (its number and glob) and the key: nothing is found out half-way through a run."""
    if path is None:
        return []
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"--rules {p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--rules {p}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"--rules {p}: not valid TOML ({e})") from None
    unknown = set(data) - {"rule"}
    if unknown:
        raise InputError(f"--rules {p}: unknown top-level keys {sorted(unknown)}; rules are "
                         f"[[rule]] tables")
    table = data.get("rule", [])
    if not isinstance(table, list):
        raise InputError(f"--rules {p}: `rule` must be an array of tables ([[rule]] sections), "
                         f"got {type(table).__name__}")
    return [_rule(p, i, r) for i, r in enumerate(table)]


def _rule(p: Path, i: int, r) -> Rule:
    where = f"--rules {p}: rule {i + 1}"
    if not isinstance(r, dict):
        raise InputError(f"{where}: expected a table of keys ([[rule]] then key = value lines), "
                         f"got {type(r).__name__} {str(r)[:40]!r}")
    unknown = set(r) - KEYS
    if unknown:
        raise InputError(f"{where} has unknown keys {sorted(unknown)}")
    if "glob" not in r:
        raise InputError(f"{where} has no glob")
    glob = r["glob"]
    if not isinstance(glob, str) or not glob:
        raise InputError(f"{where}: glob must be a non-empty string, got {glob!r}")

    def err(message: str) -> InputError:
        return InputError(f"{where}: {message} (the rule for glob {glob[:60]!r})")

    def bad(key, want):
        return err(f"{key} must be {want}, got {type(r[key]).__name__} {str(r[key])[:40]!r}")

    for key in ("sensor", "modality", "date_regex", "locate"):
        if key in r and not isinstance(r[key], str):
            raise bad(key, "a string")
    for key in ("value_scale", "footprint_m"):
        if key in r and not (_number(r[key]) and r[key] > 0 and r[key] != float("inf")):
            raise bad(key, "a positive number")
    if "skip" in r and not isinstance(r["skip"], bool):
        raise bad("skip", "true or false")
    try:
        if r.get("sensor"):
            get_sensor(r["sensor"])
        if r.get("modality"):
            check_modality(r["modality"])
        wavelengths = None
        if "wavelengths" in r:
            w = r["wavelengths"]
            if not (isinstance(w, str) or (isinstance(w, list) and all(_number(x) for x in w))):
                raise bad("wavelengths", "a list of numbers (µm) or a comma-separated string")
            wavelengths = parse_wavelengths(w)
    except InputError as e:
        if str(e).startswith(where):
            raise
        raise err(str(e)) from None
    acquired = r.get("acquired")
    if acquired is not None:
        if isinstance(acquired, dt.datetime):
            acquired = acquired.date()
        elif isinstance(acquired, str):
            try:
                acquired = dt.date.fromisoformat(acquired)
            except ValueError:
                raise err(f"acquired {acquired[:40]!r} is not a date (YYYY-MM-DD)") from None
        elif not isinstance(acquired, dt.date):
            raise err(f"acquired must be a date (YYYY-MM-DD), got {acquired!r}")
    regex = r.get("date_regex")
    if regex is not None:
        try:
            compiled = re.compile(regex)
        except re.error as e:
            raise err(f"date_regex is not a regular expression ({e}): {regex[:60]!r}") from None
        if "year" not in compiled.groupindex:
            raise err(f"date_regex needs a (?P<year>...) group (and optionally month, day): {regex[:60]!r}")
    locate = r.get("locate")
    if locate and not (locate == "lon_lat_name" or locate.startswith("csv:")):
        raise err(f"locate must be 'lon_lat_name' or 'csv:<file>', got {locate[:40]!r}")
    if locate and locate.startswith("csv:"):
        table = Path(locate[4:])
        if not table.is_absolute():
            locate = "csv:" + str((p.parent / table).resolve())
    return Rule(glob=glob, sensor=r.get("sensor"), wavelengths=wavelengths,
                modality=r.get("modality"), value_scale=r.get("value_scale"), acquired=acquired,
                date_regex=regex, locate=locate, footprint_m=r.get("footprint_m"),
                skip=bool(r.get("skip", False)))


def first_match(rules: list[Rule], path: Path) -> Rule | None:
    for r in rules:
        if r.matches(path):
            return r
    return None


_CSV_CACHE: dict[str, dict[str, tuple[float, float, float | None]]] = {}


def locate(rule: Rule, path: Path) -> tuple[float, float, float] | None:
    """-> (lon, lat, footprint side in metres) of a chip, or None if the rule cannot place it."""
    side = float(rule.footprint_m or 100.0)
    if rule.locate == "lon_lat_name":
        parts = path.stem.split("_")
        if len(parts) != 2:
            return None
        try:
            lon, lat = float(parts[0]), float(parts[1])
        except ValueError:
            return None
    elif rule.locate and rule.locate.startswith("csv:"):
        table = rule.locate[4:]
        if table not in _CSV_CACHE:
            rows = {}
            with open(table, newline="") as f:
                for row in csv.DictReader(f):
                    fp = row.get("footprint_m")
                    rows[Path(row["path"]).name] = (float(row["lon"]), float(row["lat"]),
                                                    float(fp) if fp else None)
            _CSV_CACHE[table] = rows
        hit = _CSV_CACHE[table].get(path.name)
        if hit is None:
            return None
        lon, lat, fp = hit
        side = fp or side
    else:
        return None
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        return None
    return lon, lat, side
