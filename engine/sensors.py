"""Sensor registry and detection of a raster's band layout from its metadata.

The registry is data (`sensors.toml`); detection turns what a file says about itself (band
descriptions, per-band wavelength metadata, colour interpretation, product names) into a
`BandLayout`. When the file says too little, detection fails loudly with the flag to pass:
a wrong guess would silently poison the index with meaningless embeddings.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .errors import InputError, UnknownSensorError
from .modalities import MODALITIES, check_modality


@dataclass(frozen=True)
class Sensor:
    name: str
    modality: str
    bands: tuple[str, ...]
    wavelengths: tuple[float, ...]
    description: str = ""
    value_scale: float | None = None


@dataclass(frozen=True)
class BandLayout:
    """What the encoder needs to know about the pixels of one file."""

    sensor: str
    modality: str
    wavelengths: tuple[float, ...]
    value_scale: float | None = None
    acquired: dt.date | None = None
    evidence: str = ""  # why detection decided this (shown by `glb index -v`)
    band_indexes: tuple[int, ...] | None = field(default=None)  # 1-based subset to read


@lru_cache(maxsize=1)
def registry() -> dict[str, Sensor]:
    data = tomllib.loads((Path(__file__).parent / "sensors.toml").read_text())
    out = {}
    for name, s in data.items():
        sensor = Sensor(
            name=name,
            modality=s["modality"],
            bands=tuple(s["bands"]),
            wavelengths=tuple(float(w) for w in s["wavelengths"]),
            description=s.get("description", ""),
            value_scale=s.get("value_scale"),
        )
        if sensor.modality not in MODALITIES:
            raise ValueError(f"sensors.toml: {name}: modality {sensor.modality!r} is not one of {MODALITIES}")
        if len(sensor.bands) != len(sensor.wavelengths):
            raise ValueError(f"sensors.toml: {name}: {len(sensor.bands)} bands but "
                             f"{len(sensor.wavelengths)} wavelengths")
        out[name] = sensor
    return out


def get_sensor(name: str) -> Sensor:
    try:
        return registry()[name]
    except KeyError:
        raise InputError(
            f"unknown sensor {name!r}; known: {', '.join(sorted(registry()))}"
        ) from None


def parse_wavelengths(text: str | list | tuple, name: str = "--wavelengths") -> tuple[float, ...]:
    """'0.665, 0.56,0.49' (commas or semicolons) or a sequence -> validated tuple of µm values.
    `name` is how the caller's user knows the field (a CLI flag, a form label)."""
    try:
        items = text.replace(" ", "").replace(";", ",").split(",") if isinstance(text, str) else list(text)
        values = tuple(float(v) for v in items if v != "")
    except (TypeError, ValueError):
        raise InputError(f"{name} {str(text)[:80]!r}: expected numbers in µm separated by commas, "
                         f"e.g. 0.665,0.56,0.49") from None
    if not values:
        raise InputError(f"{name} is empty: give one value in µm per band")
    for v in values:
        if not (v == v) or v <= 0 or v > 1e7:
            raise InputError(f"{name}: {v} is not a wavelength in µm (0 < λ ≤ 1e7)")
    return values


def explicit_layout(
    n_bands: int,
    *,
    sensor: str | None = None,
    wavelengths: tuple[float, ...] | None = None,
    modality: str | None = None,
    value_scale: float | None = None,
    source: str = "",
) -> BandLayout:
    """Layout from an override (--sensor / --wavelengths), checked against the band count."""
    where = f"{source}: " if source else ""
    if sensor:
        s = get_sensor(sensor)
        if wavelengths is None and len(s.wavelengths) != n_bands:
            raise UnknownSensorError(
                f"{where}--sensor {sensor} has {len(s.wavelengths)} bands but the file has {n_bands}"
            )
        return BandLayout(
            sensor=s.name,
            modality=check_modality(modality) if modality else s.modality,
            wavelengths=tuple(wavelengths) if wavelengths else s.wavelengths,
            value_scale=value_scale if value_scale is not None else s.value_scale,
            evidence="--sensor",
        )
    if wavelengths is None:
        raise UnknownSensorError(f"{where}give --sensor or --wavelengths for its {n_bands} bands")
    if len(wavelengths) != n_bands:
        raise UnknownSensorError(
            f"{where}--wavelengths gives {len(wavelengths)} values but the file has {n_bands} bands"
        )
    if modality is None:
        modality = _modality_from_wavelengths(wavelengths)
    return BandLayout(
        sensor="custom",
        modality=check_modality(modality),
        wavelengths=tuple(wavelengths),
        value_scale=value_scale,
        evidence="--wavelengths",
    )


def _modality_from_wavelengths(wl: tuple[float, ...]) -> str:
    if all(w >= 1000 for w in wl):
        return "elevation" if all(w >= 500_000 for w in wl) else "sar"
    if len(wl) >= 30:
        return "hyperspectral"
    if all(w >= 3.0 for w in wl):
        return "infrared"
    if len(wl) <= 3 and all(0.4 <= w <= 0.7 for w in wl):
        return "rgb"
    return "multispectral"


# --- detection -------------------------------------------------------------------------

NAIP_RE = re.compile(r"^m_\d{7}_(ne|nw|se|sw)_\d{2}_\d{1,3}_(\d{8})", re.I)
LANDSAT_OLD_RE = re.compile(r"^L([TEMCO])0?([45789])(\d{3})(\d{3})(\d{4})(\d{3})", re.I)
LANDSAT_C_RE = re.compile(r"^L([TEMCO])0([45789])_\w{4}_(\d{6})_(\d{8})_", re.I)
SENTINEL1_RE = re.compile(r"^S1[ABCD]_", re.I)
SENTINEL2_RE = re.compile(r"^S2[ABCD]_MSI(L1C|L2A)_(\d{8})T", re.I)
DATETIME_RE = re.compile(r"(?<!\d)((?:19|20)\d{2})(\d{2})(\d{2})(?:T\d{6})?(?!\d)")
ELEVATION_WORDS = re.compile(r"(^|[^a-z])(dem|dsm|dtm|srtm|hag|elev|elevation|height|lidar)([^a-z]|$)", re.I)


def date_from_name(name: str) -> dt.date | None:
    stem = Path(name).name
    m = LANDSAT_OLD_RE.match(stem)
    if m:
        year, doy = int(m.group(5)), int(m.group(6))
        if 1972 <= year <= 2100 and 1 <= doy <= 366:
            return dt.date(year, 1, 1) + dt.timedelta(days=doy - 1)
    for m in DATETIME_RE.finditer(stem):
        try:
            return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            continue
    return None


def date_from_tags(tags: dict) -> dt.date | None:
    for key in ("ACQUISITIONDATETIME", "ACQUISITION_DATE", "DATE_ACQUIRED", "TIFFTAG_DATETIME"):
        v = tags.get(key)
        if v:
            m = re.search(r"((?:19|20)\d{2})[-:/]?(\d{2})[-:/]?(\d{2})", v)
            if m:
                try:
                    return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
                except ValueError:
                    pass
    return None


def date_from_mtl(path: Path) -> dt.date | None:
    """Landsat product metadata sidecar (`*_MTL.txt`) next to the file."""
    stem = path.name.split("_B")[0]
    for mtl in sorted(path.parent.glob(f"{stem}*MTL.txt")):
        text = mtl.read_bytes().decode("latin-1", "replace")
        m = re.search(r"DATE_ACQUIRED\s*=\s*\"?(\d{4})-(\d{2})-(\d{2})", text)
        if m:
            return dt.date(*map(int, m.groups()))
    return None


def _match_band_names(descriptions: tuple[str, ...]) -> Sensor | None:
    names = tuple((d or "").strip().upper() for d in descriptions)
    if not all(names):
        return None
    for s in registry().values():
        if tuple(b.upper() for b in s.bands) == names:
            return s
    return None


def detect(
    path: str | Path,
    *,
    count: int,
    dtype: str,
    descriptions: tuple[str | None, ...],
    colorinterp: tuple[str, ...],
    tags: dict,
    band_tags: list[dict],
) -> BandLayout:
    """Tell the band layout of a raster from what it says about itself.

    Order: per-band wavelength metadata (GDAL's IMAGERY domain CENTRAL_WAVELENGTH_UM or
    ENVI-style `wavelength`), band descriptions matching a registered sensor, product names
    (NAIP, Landsat, Sentinel-1/2), colour interpretation R,G,B, elevation names. Anything
    else raises UnknownSensorError naming the flags to pass.
    """
    path = Path(path)
    name = path.name
    acquired = date_from_tags(tags) or date_from_name(name)

    # 1. Wavelengths written per band.
    wl = []
    for bt in band_tags:
        v = bt.get("CENTRAL_WAVELENGTH_UM") or bt.get("wavelength") or bt.get("WAVELENGTH")
        if v is None:
            break
        try:
            wl.append(float(v))
        except (TypeError, ValueError):
            break
    if len(wl) == count and count > 0:
        units = (tags.get("wavelength_units") or "").lower()
        if units.startswith("nan"):  # ENVI files often store nanometres
            wl = [w / 1000.0 for w in wl]
        wl_t = tuple(wl)
        return BandLayout("custom", _modality_from_wavelengths(wl_t), wl_t, None, acquired,
                          "per-band wavelength metadata")

    # 2. Band descriptions that spell a registered sensor's bands.
    s = _match_band_names(tuple(d or "" for d in descriptions))
    if s is not None:
        if s.name == "landsat5-tm" or s.name == "landsat7-etm":
            acquired = acquired or date_from_mtl(path)
        return BandLayout(s.name, s.modality, s.wavelengths, s.value_scale, acquired,
                          f"band descriptions {','.join(s.bands)}")

    # 3. Product file names.
    if NAIP_RE.match(name):
        sensor = {4: "naip", 3: "naip-rgb"}.get(count)
        if sensor:
            s = get_sensor(sensor)
            return BandLayout(s.name, s.modality, s.wavelengths, s.value_scale, acquired,
                              "NAIP file name")
    if SENTINEL1_RE.match(name):
        upper = name.upper()
        if count == 1 and "_VH" in upper:
            sensor = "sentinel1-vh"
        elif count == 1:
            sensor = "sentinel1-vv" if "_VV" in upper or "VV_" in upper else None
        elif count == 2:
            sensor = "sentinel1"
        else:
            sensor = None
        if sensor:
            s = get_sensor(sensor)
            return BandLayout(s.name, s.modality, s.wavelengths, s.value_scale, acquired,
                              "Sentinel-1 file name")
    m = LANDSAT_OLD_RE.match(name) or LANDSAT_C_RE.match(name)
    if m:
        sat = m.group(2)
        candidates = {"5": {7: "landsat5-tm"}, "4": {7: "landsat5-tm"},
                      "7": {8: "landsat7-etm", 3: "landsat7-rgb"},
                      "8": {11: "landsat8-oli", 7: "landsat8-sr"},
                      "9": {11: "landsat8-oli", 7: "landsat8-sr"}}[sat]
        sensor = candidates.get(count)
        if sensor:
            s = get_sensor(sensor)
            return BandLayout(s.name, s.modality, s.wavelengths, s.value_scale,
                              acquired or date_from_mtl(path), "Landsat product name")
    m2 = SENTINEL2_RE.match(name)
    if m2:
        sensor = {13: "sentinel2-l1c", 12: "sentinel2-l2a"}.get(count)
        if sensor:
            s = get_sensor(sensor)
            return BandLayout(s.name, s.modality, s.wavelengths, s.value_scale, acquired,
                              "Sentinel-2 product name")

    # 4. Colour interpretation says red, green, blue (alpha ignored by the reader).
    ci = tuple(c.lower() for c in colorinterp)
    if ci[:3] == ("red", "green", "blue") and count in (3, 4):
        s = get_sensor("rgb")
        return BandLayout(s.name, s.modality, s.wavelengths, s.value_scale, acquired,
                          "colour interpretation R,G,B", band_indexes=(1, 2, 3))

    # 5. One band named like an elevation model.
    if count == 1 and ELEVATION_WORDS.search(path.stem):
        s = get_sensor("elevation")
        return BandLayout(s.name, s.modality, s.wavelengths, s.value_scale, acquired,
                          "single band, elevation file name")
    if count == 1 and (band_tags and str(band_tags[0].get("UNITTYPE", "")).lower() in ("m", "metre", "meter", "metres")):
        s = get_sensor("elevation")
        return BandLayout(s.name, s.modality, s.wavelengths, s.value_scale, acquired,
                          "single band in metres")

    raise UnknownSensorError(
        f"{path}: cannot tell which sensor made it ({count} band{'s' if count != 1 else ''}, "
        f"{dtype}, no band names or wavelengths in its metadata); pass --sensor NAME "
        f"(`glb sensors` lists them) or --wavelengths λ1,λ2,... in µm, or add a rule to --rules"
    )
