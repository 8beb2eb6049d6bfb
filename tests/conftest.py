"""Shared fixtures: the real sample data, a real encoder, small real indexes, GeoTIFF makers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GLB_DATA", ROOT.parent / "shared" / "data")).resolve()
SCENES = DATA / "scenes"

# A handful of real scenes covering four modalities, four CRSs and three dtypes: quick to index.
SMALL_SCENES = [
    SCENES / "landsat5_tm" / "LT52240631988227CUB02_B1-7.tif",
    SCENES / "sentinel1" / "S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif",
    SCENES / "elevation" / "dsm.tif",
    SCENES / "rmnp" / "rmnp-rgb.tif",
    SCENES / "zion" / "dem.tif",
]


def pytest_configure(config):
    if not SCENES.is_dir():
        raise pytest.UsageError(f"sample data not found at {DATA}; set GLB_DATA")


@pytest.fixture(scope="session")
def encoder():
    from engine.encoder import load_encoder

    return load_encoder()


@pytest.fixture(scope="session")
def small_index(tmp_path_factory, encoder):
    """An index of SMALL_SCENES, built once per test session. Tests must not modify it."""
    from indexer.runner import IndexOptions, run_index

    path = tmp_path_factory.mktemp("small") / "index"
    report = run_index(SMALL_SCENES, path, options=IndexOptions(progress=False), encoder=encoder,
                       echo=lambda m: None)
    assert report.ok, report.failed
    return path


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole test session (starting one takes seconds): two CPUs,
    no GPU; its workers import this checkout (indexer/ray_distributor.py sets PYTHONPATH)."""
    import ray

    from engine.cluster import RayOptions, connect

    if ray.is_initialized():
        yield ray
        return
    connect(RayOptions(local_cpus=2, local_gpus=0))
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def index_copy(small_index, tmp_path):
    """A private copy of the small index that a test may change."""
    dst = tmp_path / "index"
    shutil.copytree(small_index, dst)
    return dst


def write_tif(path: Path, data: np.ndarray, *, crs="EPSG:32633", transform=None, nodata=None,
              descriptions=None, gcps=None, **profile):
    """Write a real GeoTIFF. data: (C, H, W). gcps=True: three ground control points in
    EPSG:4326 instead of a CRS and geotransform."""
    import rasterio
    from rasterio.transform import from_origin

    c, h, w = data.shape
    prof = {"driver": "GTiff", "count": c, "height": h, "width": w, "dtype": data.dtype}
    if crs is not None and gcps is None:
        prof["crs"] = crs
    if transform is None and crs is not None and gcps is None:
        transform = from_origin(500000, 5000000, 10, 10)
    if transform is not None:
        prof["transform"] = transform
    if nodata is not None:
        prof["nodata"] = nodata
    prof.update(profile)
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(data)
        if descriptions:
            for i, d in enumerate(descriptions, 1):
                ds.set_band_description(i, d)
        if gcps is not None:
            from rasterio.control import GroundControlPoint as G

            ds.gcps = ([G(0, 0, 10.0, 50.0), G(0, w, 10.1, 50.0), G(h, 0, 10.0, 49.9)], "EPSG:4326")
    return path


@pytest.fixture
def rgb_tif(tmp_path):
    """A small valid 3-band RGB GeoTIFF (colour interpretation says R,G,B)."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (3, 96, 96), dtype=np.uint8)
    return write_tif(tmp_path / "rgb.tif", data, photometric="RGB")
