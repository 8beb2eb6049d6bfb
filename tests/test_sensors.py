import datetime as dt

import pytest

from conftest import DATA, SCENES
from engine.errors import UnknownSensorError
from engine.raster import layout_of, open_raster
from engine.sensors import explicit_layout, get_sensor, parse_wavelengths, registry
from indexer.rules import load_rules
from indexer.sources import discover

EXPECTED = {
    "landsat5_tm/LT52240631988227CUB02_B1-7.tif": ("landsat5-tm", "multispectral", dt.date(1988, 8, 14)),
    "sentinel1/S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif": ("sentinel1-vv", "sar", dt.date(2015, 3, 9)),
    "naip/m_4709963_se_14_1_20090818.tif": ("naip", "rgb", dt.date(2009, 8, 18)),
    "landsat7_rgb/RGB.byte.tif": ("rgb", "rgb", None),
    "rmnp/rmnp-rgb.tif": ("rgb", "rgb", None),
    "rmnp/rmnp-dem.tif": ("elevation", "elevation", None),
    "elevation/dsm.tif": ("elevation", "elevation", None),
    "elevation/Rome-30m-DEM.tif": ("elevation", "elevation", None),
    "zion/srtm.tif": ("elevation", "elevation", None),
}


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_detects_sample_scenes_from_metadata(rel):
    with open_raster(SCENES / rel) as (ds, info):
        lay = layout_of(ds, info)
    sensor, modality, acquired = EXPECTED[rel]
    assert (lay.sensor, lay.modality) == (sensor, modality), lay.evidence
    assert lay.acquired == acquired
    assert len(lay.wavelengths) in (info.count, len(lay.band_indexes or ()))


def test_sen1floods11_band_names_pick_the_band_order():
    with open_raster(DATA / "sen1floods11/S2/Spain_7370579_S2Hand.tif") as (ds, info):
        lay = layout_of(ds, info)
    assert lay.sensor == "sentinel2-l1c"
    assert lay.wavelengths[8] == pytest.approx(0.865)  # B8A after B8 in this file
    with open_raster(DATA / "sen1floods11/S1/Spain_7370579_S1Hand.tif") as (ds, info):
        assert layout_of(ds, info).sensor == "sentinel1"


def test_unknown_layout_is_an_error_naming_the_flags():
    with open_raster(SCENES / "landsat_timeseries/1985.tif") as (ds, info):
        with pytest.raises(UnknownSensorError) as e:
            layout_of(ds, info)
    msg = str(e.value)
    assert "1985.tif" in msg and "--sensor" in msg and "--wavelengths" in msg


def test_explicit_override_checks_the_band_count():
    with pytest.raises(UnknownSensorError, match="13 bands but the file has 4"):
        explicit_layout(4, sensor="sentinel2-l1c", source="x.tif")
    with pytest.raises(UnknownSensorError, match="gives 3 values but the file has 4"):
        explicit_layout(4, wavelengths=(0.6, 0.5, 0.4), source="x.tif")
    lay = explicit_layout(4, wavelengths=(1.65, 0.83, 0.66, 0.56))
    assert lay.modality == "multispectral"


def test_both_sentinel2_band_orders_are_registered():
    a, b = get_sensor("sentinel2-l1c"), get_sensor("sentinel2-eurosat")
    assert sorted(a.wavelengths) == sorted(b.wavelengths)
    assert a.bands[8] == "B8A" and b.bands[-1] == "B8A"
    for name in ("landsat5-tm", "landsat7-etm", "landsat8-oli", "naip", "sentinel1", "elevation",
                 "thermal-lwir"):
        assert name in registry()


@pytest.mark.parametrize("bad", ["", "a,b", "0.5,-1", "nan", "0"])
def test_bad_wavelength_lists(bad):
    from engine.errors import InputError

    with pytest.raises(InputError):
        parse_wavelengths(bad)


def test_sample_rules_cover_the_archive():
    rules = load_rules("indexer/archives/sample.toml")
    found = discover([SCENES, DATA / "harvey" / "test", DATA / "sen1floods11"], rules)
    assert not found.problems
    kinds = {s.path.name: s.kind for s in found.sources}
    assert kinds["1985.tif"] == "scene"
    chips = [s for s in found.sources if s.kind == "chip"]
    assert len(chips) == 500
    lon, lat, side = chips[0].location
    assert -100 < lon < -90 and 28 < lat < 31 and side == 64
    assert not any("Labels" in str(s.path) for s in found.sources)
    ts = [s for s in found.sources if s.path.name == "2000.tif"][0]
    assert ts.override["sensor"] == "landsat-swir1-nir-red-green"
    assert ts.override["acquired"] == dt.date(2000, 1, 1)
