"""Indexing on Ray (indexer/ray_distributor.py) against the sequential build, on a local
cluster shared by the session (conftest.ray_cluster): same tiles, vectors, thumbnails and
scenes; a worker killed mid-write is retried and leaves one copy; a cluster that is not there
is a one-line error."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SMALL_SCENES
from engine.store.layout import Layout
from engine.store.manifest import read_current, read_scenes, read_tombstones
from engine.store.segment import read_thumbs, read_tiles, read_vectors
from indexer.ray_distributor import RayDistributor, RayOptions, RayUnavailableError
from indexer.runner import IndexOptions, run_index

SCENE_COLS = ["scene_id", "path", "scene", "kind", "size", "mtime_ns", "sha256", "sensor",
              "modality", "acquired", "n_tiles", "crs", "evidence", "minx", "miny", "maxx", "maxy"]


def live_tiles(root):
    """tile_id -> (tile record without segment, vector, thumbnail) of every live tile."""
    layout = Layout(root)
    m = read_current(layout)
    dead = read_tombstones(layout, m)
    dead = set(zip(dead.column("segment").to_pylist(), dead.column("tile_id").to_pylist()))
    out = {}
    for seg in m.segments:
        t = read_tiles(layout, seg.name)
        v = read_vectors(layout, seg.name)
        th = dict(zip(*read_thumbs(layout, seg.name).to_pydict().values()))
        for i, rec in enumerate(t.to_pylist()):
            if (seg.name, rec["tile_id"]) in dead:
                continue
            assert rec["tile_id"] not in out, f"tile {rec['tile_id']} is live twice"
            out[rec["tile_id"]] = (rec, v[i], th[rec["tile_id"]])
    scenes = {r["path"]: {c: r[c] for c in SCENE_COLS}
              for r in read_scenes(layout, m).to_pylist()}
    return out, scenes


def assert_same_index(a, b):
    ta, sa = live_tiles(a)
    tb, sb = live_tiles(b)
    assert sa == sb
    assert ta.keys() == tb.keys() and len(ta) > 0
    for tid, (rec, vec, thumb) in ta.items():
        rec2, vec2, thumb2 = tb[tid]
        assert rec == rec2
        assert thumb == thumb2
        np.testing.assert_allclose(vec, vec2, atol=1e-5)


def ray_index(paths, root, encoder, **kw):
    return run_index(paths, root, options=IndexOptions(progress=False), encoder=encoder,
                     echo=lambda m: None, distributor=RayDistributor(RayOptions(**kw)))


def test_ray_build_equals_the_sequential_build_and_reruns_incrementally(ray_cluster, small_index,
                                                                        tmp_path, encoder):
    from engine.check import check_index

    root = tmp_path / "ray-index"
    report = ray_index(SMALL_SCENES, root, encoder)
    assert report.ok and report.indexed == len(SMALL_SCENES), report.failed
    assert_same_index(small_index, root)
    problems, _ = check_index(root)
    assert problems == []
    gen = read_current(Layout(root)).generation
    again = ray_index(SMALL_SCENES, root, encoder)
    assert (again.indexed, again.unchanged, again.tiles_added) == (0, len(SMALL_SCENES), 0)
    assert read_current(Layout(root)).generation == gen
    assert not any(p.name.startswith(".") for p in (root / "segments").iterdir())


def test_a_worker_killed_mid_write_is_retried_without_duplicates(ray_cluster, small_index, tmp_path,
                                                                  encoder, monkeypatch):
    marker = tmp_path / "killed-once"
    monkeypatch.setenv("GLB_CRASH_AT", "segment.vectors")   # SIGKILL after vectors.npy is written
    monkeypatch.setenv("GLB_CRASH_ONCE", str(marker))
    root = tmp_path / "ray-index"
    report = ray_index(SMALL_SCENES[:2], root, encoder)
    assert marker.exists(), "no worker was killed: the test did not test anything"
    assert report.ok, report.failed
    tiles, scenes = live_tiles(root)
    want, want_scenes = live_tiles(small_index)
    assert set(scenes) == {str(p) for p in SMALL_SCENES[:2]}
    assert {t: r for t, r in want.items() if r[0]["scene_id"] in
            {s["scene_id"] for s in scenes.values()}}.keys() == tiles.keys()
    n_rows = sum(s.n_rows for s in read_current(Layout(root)).segments)
    assert n_rows == len(tiles)                  # one copy: no dead rows, no second segment
    assert not any(p.name.startswith(".") for p in (root / "segments").iterdir())


def test_a_cluster_that_is_not_there_is_a_clear_error(tmp_path):
    from glb.cli import main

    d = RayDistributor(RayOptions(address="127.0.0.1:9"))
    with pytest.raises(RayUnavailableError, match="no Ray cluster at 127.0.0.1:9"):
        d.preflight()
    assert main(["index", str(SMALL_SCENES[0]), "--index", str(tmp_path / "i"), "--ray", "127.0.0.1:9"]) == 2
    assert not (tmp_path / "i").exists()


def test_bench_ray_index_smoke_times_both_builds_of_the_same_tiles(ray_cluster, capsys, tmp_path,
                                                                   monkeypatch):
    """`glb bench ray-index --smoke` on the session's cluster: both builds timed, same tiles."""
    import json

    from glb.cli import main

    monkeypatch.setenv("GLB_BENCH_DIR", str(tmp_path))
    assert main(["bench", "ray-index", "--smoke", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["tiles"] > 0 and r["ray_tiles"] == r["tiles"] and r["same_tile_ids"] is True
    assert r["cluster"] == "already connected" and r["cluster_cpus"] == 2
    for key in ("sequential_tiles_per_s", "ray_warm_tiles_per_s"):
        assert r[key]["median"] > 0 and r[key]["runs"] == 1, key
    assert r["ray_cold_tiles_per_s"] > 0 and r["ray_warm_over_sequential"] > 0
    assert list(tmp_path.iterdir()) == []  # its indexes are deleted
