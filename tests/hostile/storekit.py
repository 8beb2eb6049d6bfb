"""Store-level scenarios for the crash tests: small synthetic scenes written through the real
StoreWriter (Parquet, .npy, manifests, CURRENT), no encoder. Importable without torch: a child
process can run a scenario in well under a second and SIGKILL itself at a crash point.

    python storekit.py ROOT INDEX SCENARIO     (GLB_CRASH_AT set by the caller)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import sys
import types

ENCODER = {"name": "synthetic", "identity": "synthetic@reliability", "dim": 8, "trained": False}
TILES_PER_SCENE = 12
SCENARIOS = ("add", "replace", "remove", "compact")


def _bare_engine(root: str) -> None:
    """Import engine.store without engine/__init__ (which loads torch)."""
    if "engine" not in sys.modules:
        pkg = types.ModuleType("engine")
        pkg.__path__ = [os.path.join(root, "engine")]
        sys.modules["engine"] = pkg


def make_scene(i: int, version: int = 1):
    import numpy as np
    from shapely.geometry import box

    from engine.store.writer import StagedScene, scene_id_for, tile_id_for

    path = f"/synthetic/scene{i:02d}.tif"
    sha = hashlib.sha256(f"{i}-{version}".encode()).hexdigest()
    sid = scene_id_for(path, sha)
    rng = np.random.default_rng(1000 * i + version)
    vec = rng.normal(size=(TILES_PER_SCENE, ENCODER["dim"])).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    lon0, lat0 = -60.0 + 10 * i, -30.0 + 5 * i
    tiles = []
    for k in range(TILES_PER_SCENE):
        g = box(lon0 + k * 0.01, lat0, lon0 + (k + 1) * 0.01, lat0 + 0.01)
        tiles.append({"tile_id": tile_id_for(f"{path}|{sha}", 0, k * 64, 64, 64), "scene_id": sid,
                      "scene": f"synthetic/scene{i:02d}.tif", "modality": "rgb", "sensor": "rgb",
                      "acquired": dt.date(2020, 1, 1 + i), "row_off": 0, "col_off": k * 64,
                      "height": 64, "width": 64, "minx": g.bounds[0], "miny": g.bounds[1],
                      "maxx": g.bounds[2], "maxy": g.bounds[3], "geometry": g.wkb,
                      "nodata_frac": 0.0})
    rec = {"scene_id": sid, "path": path, "scene": f"synthetic/scene{i:02d}.tif", "kind": "scene",
           "size": 1000 + version, "mtime_ns": version, "sha256": sha, "sensor": "rgb",
           "modality": "rgb", "acquired": dt.date(2020, 1, 1 + i), "n_tiles": 0, "segment": None,
           "crs": "EPSG:4326", "evidence": "synthetic", "minx": lon0, "miny": lat0,
           "maxx": lon0 + 0.12, "maxy": lat0 + 0.01, "indexed_at": None}
    jpeg = b"\xff\xd8\xff\xe0" + sha.encode()  # a JPEG's magic, then bytes unique to the scene
    return StagedScene(rec, tiles, vec, [jpeg + bytes([k]) for k in range(TILES_PER_SCENE)])


def build_base(index) -> None:
    """Three generations: scenes 0 and 1; scene 2; scene 2 replaced (so tombstones exist)."""
    from engine.store.writer import StoreWriter

    with StoreWriter(index, ENCODER) as w:
        w.stage(make_scene(0))
        w.stage(make_scene(1))
        w.commit()
        w.stage(make_scene(2))
        w.commit()
        w.stage(make_scene(2, version=2))
        w.commit()


def run_scenario(index, name: str) -> None:
    from engine.store.writer import StoreWriter

    with StoreWriter(index, ENCODER) as w:
        if name == "add":
            w.stage(make_scene(3))
            w.stage(make_scene(4))
            w.commit()
        elif name == "replace":
            w.stage(make_scene(1, version=2))
            w.commit()
        elif name == "remove":
            w.remove("/synthetic/scene00.tif")
            w.commit()
        elif name == "compact":
            w.compact()
        else:
            raise SystemExit(f"unknown scenario {name}")


if __name__ == "__main__":
    _bare_engine(sys.argv[1])
    run_scenario(sys.argv[2], sys.argv[3])
