"""Indexing real scenes: tiling, footprints, incremental runs, locking and bad input."""

import shutil

import numpy as np
import pytest
import shapely

import engine
from conftest import SCENES, SMALL_SCENES, write_tif
from engine.check import check_index
from engine.errors import IndexLockedError
from engine.store.lock import WriterLock
from indexer.runner import IndexOptions, run_index
from indexer.tiling import plan_windows

QUIET = dict(options=IndexOptions(progress=False), echo=lambda m: None)


def index(paths, path, encoder, **kw):
    return run_index(paths, path, encoder=encoder, **QUIET, **kw)


def test_windows_cover_the_scene_without_hanging_off():
    rows = plan_windows(150, 70, 64, 64)
    wins = [w for r in rows for w in r]
    assert {(w.row_off, w.col_off) for w in wins} == {(0, 0), (0, 64), (0, 86), (6, 0), (6, 64), (6, 86)}
    assert all(w.col_off + w.width <= 150 and w.row_off + w.height <= 70 for w in wins)
    small = plan_windows(40, 30, 64, 64)
    assert [(w.height, w.width) for r in small for w in r] == [(30, 40)]
    assert len([w for r in plan_windows(128, 128, 64, 32) for w in r]) == 9


def test_small_index_holds_every_scene_inside_its_footprint(small_index):
    idx = engine.open(small_index)
    info = idx.info()
    assert info["scenes"] == len(SMALL_SCENES)
    assert info["tiles"] == info["vectors"] > 50
    assert set(info["modalities"]) == {"multispectral", "sar", "elevation", "rgb"}
    assert check_index(small_index)[0] == []
    scenes = idx.scenes().set_index("scene_id")
    tiles = idx.footprints()
    for _, t in tiles.iterrows():
        s = scenes.loc[t.scene_id]
        x0, y0, x1, y1 = t.geometry.bounds
        # footprints are in lon/lat and inside their scene's bounds (UTM N and S, EPSG:4326)
        assert s.minx - 1e-6 <= x0 <= x1 <= s.maxx + 1e-6
        assert s.miny - 1e-6 <= y0 <= y1 <= s.maxy + 1e-6


def test_second_run_does_no_work(index_copy, encoder):
    before = engine.open(index_copy).info()
    r = index(SMALL_SCENES, index_copy, encoder)
    assert (r.indexed, r.unchanged, r.tiles_added) == (0, len(SMALL_SCENES), 0)
    assert r.generation == before["generation"]  # nothing committed


def test_changed_scene_is_reindexed_and_removed_one_pruned(tmp_path, encoder):
    src = tmp_path / "scenes"
    src.mkdir()
    a = shutil.copy(SCENES / "elevation/dsm.tif", src / "dsm.tif")
    b = shutil.copy(SCENES / "elevation/dtm.tif", src / "dtm.tif")
    idx_path = tmp_path / "index"
    r1 = index([src], idx_path, encoder)
    assert r1.indexed == 2
    ids_before = set(engine.open(idx_path).footprints().tile_id)
    # change dsm's pixels: new content, same path
    import rasterio

    with rasterio.open(a, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        d = ds.read(1)
        ds.write(d + 1.0, 1)
    r2 = index([src], idx_path, encoder)
    assert (r2.indexed, r2.unchanged) == (1, 1)
    assert r2.tiles_deleted == r2.tiles_added > 0
    fp = engine.open(idx_path).footprints()
    assert len(fp) == len(ids_before)
    assert len(set(fp.tile_id) - ids_before) == r2.tiles_added
    # touch without change: restamped, not re-embedded
    import os
    import time

    os.utime(b, (time.time() + 5, time.time() + 5))
    r3 = index([src], idx_path, encoder)
    assert (r3.indexed, r3.restamped) == (0, 1)
    # remove one: reported, and pruned on request
    os.unlink(b)
    r4 = index([src], idx_path, encoder)
    assert r4.missing == 1 and r4.removed == 0
    r5 = run_index([src], idx_path, encoder=encoder, options=IndexOptions(progress=False, prune=True),
                   echo=lambda m: None)
    assert r5.removed == 1
    info = engine.open(idx_path).info()
    assert info["scenes"] == 1
    assert check_index(idx_path)[0] == []


def test_a_second_writer_is_refused_with_a_clear_message(index_copy, encoder):
    with WriterLock(index_copy):
        with pytest.raises(IndexLockedError, match="another indexer is writing"):
            index(SMALL_SCENES[:1], index_copy, encoder)


def test_antimeridian_and_utm_zones(tmp_path, encoder):
    """A scene in UTM zone 60 that crosses 180°: footprints are cut at the antimeridian, and a
    search box across it (min_lon > max_lon) finds them."""
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (3, 128, 128), dtype=np.uint8)
    # zone 60 central meridian 177E; x=800 km is ~180.3E at 50N
    p = write_tif(tmp_path / "am.tif", data, crs="EPSG:32660",
                  transform=from_origin(690000, 5540000, 1000, 1000), photometric="RGB")
    idx_path = tmp_path / "index"
    r = index([p], idx_path, encoder)
    assert r.ok and r.tiles_added == 4
    fp = engine.open(idx_path).footprints()
    crossing = fp[fp.geometry.geom_type == "MultiPolygon"]
    assert len(crossing) >= 1
    for g in fp.geometry:
        x0, _, x1, _ = g.bounds
        assert -180 <= x0 <= x1 <= 180
    res = engine.open(idx_path).search(vector=np.ones(384, np.float32) / np.sqrt(384),
                                       bbox=(179.5, 49, -179.5, 51), k=10)
    assert len(res) >= 1
    box = shapely.union(shapely.box(179.5, 49, 180, 51), shapely.box(-180, 49, -179.5, 51))
    assert all(g.intersects(box) for g in res.geometry)


def test_chip_collection_with_lon_lat_names(tmp_path, encoder):
    from conftest import DATA

    chips = sorted((DATA / "harvey/test/damage").glob("*.jpeg"))[:5]
    d = tmp_path / "harvey"
    d.mkdir()
    for c in chips:
        shutil.copy(c, d / c.name)
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nglob = "*/harvey/*.jpeg"\nsensor = "geoeye1-rgb"\nlocate = "lon_lat_name"\nfootprint_m = 64\n')
    r = index([d], tmp_path / "index", encoder, rules_file=rules)
    assert r.ok and r.indexed == 5 and r.tiles_added == 5
    fp = engine.open(tmp_path / "index").footprints()
    for _, t in fp.iterrows():
        lon, lat = (float(v) for v in t.scene.split("/")[-1].removesuffix(".jpeg").split("_"))
        assert t.geometry.contains(shapely.Point(lon, lat))
        assert t.geometry.bounds[2] - t.geometry.bounds[0] < 0.002  # ~64 m


def test_chips_of_two_input_sizes_index_in_one_run(tmp_path):
    """An encoder that keeps inputs of max_image_size at that size gets 128-px and 64-px chips
    in one batch: the reader splits the batch by input size, and each chip's vector is what the
    encoder gives that chip alone."""
    import torch
    from PIL import Image

    from conftest import DATA
    from engine.encoder import create_image_tower, get_model_config
    from engine.encoder.factory import Encoder

    cfg = get_model_config("glb-effnet-l0", max_image_size=128)
    torch.manual_seed(0)
    tower = create_image_tower(cfg).eval()
    with torch.no_grad():
        tower.stem.anchor_kernels.normal_()
    enc = Encoder(tower, cfg.text, name="sizes", trained=False)
    d = tmp_path / "harvey"
    d.mkdir()
    chips = sorted((DATA / "harvey/test/damage").glob("*.jpeg"))[:4]
    for i, c in enumerate(chips):  # 128 x 128 as shipped; every other one shrunk to 64 x 64
        im = Image.open(c)
        (im if i % 2 else im.resize((64, 64))).save(d / c.name, quality=95)
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nglob = "*/harvey/*.jpeg"\nsensor = "geoeye1-rgb"\nlocate = "lon_lat_name"\nfootprint_m = 64\n')
    r = index([d], tmp_path / "index", enc, rules_file=rules)
    assert r.ok and r.indexed == 4 and r.tiles_added == 4
    idx = engine.open(tmp_path / "index", encoder=enc)
    fp = idx.footprints()
    for _, t in fp.iterrows():
        arr = np.asarray(Image.open(d / t.scene.split("/")[-1])).transpose(2, 0, 1)
        want = enc.encode_image(arr, [0.655, 0.545, 0.480], "rgb")[0]
        got = idx.tile_vector(int(t.tile_id))
        assert float(got @ want) > 0.995, t.scene  # the reader decodes and stores a little apart
        if arr.shape[-1] == 128:  # and it is the 128-px encoding, not a 64-px one
            small = np.asarray(Image.open(d / t.scene.split("/")[-1]).resize((64, 64))).transpose(2, 0, 1)
            assert float(got @ want) > float(got @ enc.encode_image(small, [0.655, 0.545, 0.480], "rgb")[0])


# --- bad input: one clear line naming the file; the rest of the run goes on; nothing lost ------

def _bad_files(d):
    from rasterio.transform import Affine, from_origin

    rng = np.random.default_rng(0)
    good = rng.integers(0, 255, (3, 64, 64), dtype=np.uint8)
    files = {}
    files["empty.tif"] = (d / "empty.tif", "empty file")
    (d / "empty.tif").write_bytes(b"")
    src = write_tif(d / "src.tif", good, photometric="RGB")
    raw = src.read_bytes()
    (d / "truncated.tif").write_bytes(raw[: len(raw) // 3])
    files["truncated.tif"] = (d / "truncated.tif", "truncated.tif")
    (d / "corrupt.tif").write_bytes(b"II*\x00" + bytes(rng.integers(0, 255, 4000, dtype=np.uint8)))
    files["corrupt.tif"] = (d / "corrupt.tif", "not a readable raster")
    (d / "wrongmagic.tif").write_bytes(b"PK\x03\x04" + raw[4:])
    files["wrongmagic.tif"] = (d / "wrongmagic.tif", "not a readable raster")
    src.unlink()
    files["nocrs.tif"] = (write_tif(d / "nocrs.tif", good, crs=None, transform=from_origin(0, 0, 1, 1), photometric="RGB"), "no CRS")
    files["notransform.tif"] = (write_tif(d / "notransform.tif", good, crs="EPSG:4326", transform=Affine.identity(), photometric="RGB"), "geotransform")
    files["offearth.tif"] = (write_tif(d / "offearth.tif", good, crs="EPSG:4326", transform=from_origin(5000, 5000, 1, 1), photometric="RGB"), "outside the Earth")
    files["tiny.tif"] = (write_tif(d / "tiny.tif", good[:, :1, :1], photometric="RGB"), "smaller than")
    files["bands300.tif"] = (write_tif(d / "bands300.tif", np.zeros((300, 16, 16), np.uint8)), "300 bands")
    files["allnodata.tif"] = (write_tif(d / "allnodata.tif", np.zeros((3, 64, 64), np.uint8), nodata=0, photometric="RGB"), None)
    files["complex.tif"] = (write_tif(d / "complex.tif", np.zeros((1, 32, 32), np.complex64), descriptions=["VV"]), "not supported")
    files["unknown.tif"] = (write_tif(d / "unknown.tif", np.zeros((5, 32, 32), np.uint16)), "--sensor")
    return files


def test_bad_files_fail_alone_and_lose_nothing(index_copy, tmp_path, encoder):
    d = tmp_path / "bad"
    d.mkdir()
    files = _bad_files(d)
    good = write_tif(d / "zz_good.tif", np.random.default_rng(1).integers(0, 255, (3, 64, 64), dtype=np.uint8), photometric="RGB")
    before = engine.open(index_copy).footprints()[["tile_id"]].copy()
    r = index([d, tmp_path / "does-not-exist.tif"], index_copy, encoder)
    failed = "\n".join(r.failed)
    for name, (path, match) in files.items():
        if match is None:
            continue
        line = next((f for f in r.failed if name in f), None)
        assert line is not None, f"{name} not reported: {failed}"
        assert match in line, line
        assert "\n" not in line
    assert "does-not-exist.tif: no such file" in failed
    # the good file of the same run is indexed; the all-no-data scene is recorded with 0 tiles
    scenes = engine.open(index_copy).scenes()
    assert str(good) in set(scenes.path)
    assert int(scenes.set_index("path").loc[str(files["allnodata.tif"][0]), "n_tiles"]) == 0
    after = engine.open(index_copy).footprints()
    assert set(before.tile_id) <= set(after.tile_id)
    assert check_index(index_copy)[0] == []


def test_huge_declared_dimensions_are_refused(tmp_path, encoder):
    import rasterio
    from rasterio.transform import from_origin

    p = tmp_path / "huge.tif"
    with rasterio.open(p, "w", driver="GTiff", count=1, width=200_000, height=200_000, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(0, 0, 1, 1), tiled=True,
                       sparse_ok=True, compress="deflate"):
        pass
    assert p.stat().st_size < 10_000_000
    r = index([p], tmp_path / "index", encoder)
    assert len(r.failed) == 1 and "pixel limit" in r.failed[0]


def test_hyperspectral_and_thermal_scenes_index_like_any_other(tmp_path, encoder):
    """A 150-band cube whose bands carry GDAL's CENTRAL_WAVELENGTH_UM metadata is detected as
    hyperspectral; a one-band thermal scene goes in with --sensor. Both are searchable."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    wl = np.linspace(0.4, 2.5, 150)
    cube = tmp_path / "cube.tif"
    with rasterio.open(cube, "w", driver="GTiff", count=150, width=80, height=80, dtype="int16",
                       crs="EPSG:32610", transform=from_origin(600000, 4070000, 4, 4)) as ds:
        ds.write(rng.integers(0, 6000, (150, 80, 80), dtype=np.int16))
        for i, w in enumerate(wl, 1):
            ds.update_tags(i, ns="IMAGERY", CENTRAL_WAVELENGTH_UM=f"{w:.4f}")
    thermal = write_tif(tmp_path / "thermal.tif", rng.integers(0, 255, (1, 64, 64), dtype=np.uint8))
    idx_path = tmp_path / "index"
    assert index([cube], idx_path, encoder).ok
    r = run_index([thermal], idx_path, encoder=encoder, override={"sensor": "thermal-lwir"}, **QUIET)
    assert r.ok and r.tiles_added == 1
    info = engine.open(idx_path).info()
    assert info["modalities"] == {"hyperspectral": 4, "infrared": 1}
    res = engine.open(idx_path).search(vector=np.ones(384, np.float32) / np.sqrt(384), k=5,
                                       modality="infrared")
    assert list(res.sensor) == ["thermal-lwir"]


def test_batched_footprints_equal_the_reference_transform():
    """The reader moves all tile rings of a strip with one transform call; the result must be
    the footprint engine.geo computes tile by tile (including the antimeridian cut)."""
    from engine.geo import footprint_4326
    from indexer.reader import footprints_4326

    bounds = [(600000 + 640 * i, 5200000, 600640 + 640 * i, 5200640) for i in range(10)]
    bounds.append((790000, 5500000, 860000, 5570000))  # UTM 60N across 180°
    for crs in ("EPSG:32614", "EPSG:32660"):
        got = footprints_4326(crs, bounds)
        for b, g in zip(bounds, got):
            ref = footprint_4326(crs, b)
            assert g.geom_type == ref.geom_type
            assert g.symmetric_difference(ref).area < 1e-12


def test_thumbnails_are_jpeg_with_no_data_painted_grey(tmp_path, encoder):
    import io

    from PIL import Image

    from engine.render import NODATA_RGB

    rng = np.random.default_rng(0)
    data = rng.integers(40, 200, (3, 64, 64), dtype=np.uint8)
    data[:, :, :24] = 0  # the left 24 columns are no-data (37.5 % of the tile: kept)
    path = write_tif(tmp_path / "rgb_nodata.tif", data, nodata=0, photometric="RGB")
    index([path], tmp_path / "idx", encoder, override={"sensor": "naip-rgb"})
    idx = engine.open(tmp_path / "idx")
    (tid,) = idx.footprints().tile_id.tolist()
    jpeg = idx.thumbnail(int(tid))
    img = np.asarray(Image.open(io.BytesIO(jpeg)))
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG" and img.shape == (64, 64, 3)
    # the no-data strip is the grey (within JPEG's error), the valid part is not
    assert np.abs(img[:, :16].astype(int) - NODATA_RGB).max() <= 12  # a whole 16 px JPEG block
    assert np.abs(img[:, 30:].astype(int) - NODATA_RGB).mean() > 40


def test_an_index_of_an_older_store_format_is_refused_and_left_alone(index_copy, encoder):
    import json

    from engine.errors import GLBError

    manifest = index_copy / "manifests" / (index_copy / "CURRENT").read_text().strip()
    doc = json.loads(manifest.read_text())
    doc["format"] = 1
    manifest.write_text(json.dumps(doc))
    before = sorted((p.relative_to(index_copy), p.stat().st_size) for p in index_copy.rglob("*") if p.is_file())
    with pytest.raises(GLBError, match="older GeoLangBind.*new folder"):
        engine.open(index_copy)
    with pytest.raises(GLBError, match="older GeoLangBind"):
        index(SMALL_SCENES[:1], index_copy, encoder)
    after = sorted((p.relative_to(index_copy), p.stat().st_size) for p in index_copy.rglob("*") if p.is_file()
                   if p.name != "LOCK")
    assert after == [b for b in before if b[0].name != "LOCK"]
