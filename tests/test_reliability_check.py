"""`glb check` finds each way an index can be broken (a check that cannot fail proves nothing):
every corruption below must be named, and exit status 1."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.check import check_index


def _seg(index):
    return sorted(p for p in (index / "segments").iterdir() if not p.name.startswith("."))[0]


def _manifest(index):
    return index / "manifests" / (index / "CURRENT").read_text().strip()


def _rewrite(path, fn):
    t = pq.read_table(path)
    pq.write_table(fn(t), path)


def _set_col(t, name, values):
    i = t.schema.get_field_index(name)
    return t.set_column(i, t.schema.field(i), pa.array(values, t.schema.field(i).type))


def drop_vector(index):
    v = np.load(_seg(index) / "vectors.npy")
    np.save(_seg(index) / "vectors.npy", v[:-1])


def nan_vector(index):
    v = np.load(_seg(index) / "vectors.npy")
    v[3, 7] = np.nan
    np.save(_seg(index) / "vectors.npy", v)


def long_vector(index):
    v = np.load(_seg(index) / "vectors.npy")
    v[0] *= 3
    np.save(_seg(index) / "vectors.npy", v)


def float64_vectors(index):
    v = np.load(_seg(index) / "vectors.npy")
    np.save(_seg(index) / "vectors.npy", v.astype(np.float64))


def drop_thumb(index):
    _rewrite(_seg(index) / "thumbs.parquet", lambda t: t.slice(1))


def bad_thumb(index):
    _rewrite(_seg(index) / "thumbs.parquet",
             lambda t: _set_col(t, "jpeg", [b"GIF89a..."] + t.column("jpeg").to_pylist()[1:]))


def garbage_tiles(index):
    (_seg(index) / "tiles.parquet").write_bytes(b"PAR1 garbage")


def missing_segment(index):
    shutil.rmtree(_seg(index))


def duplicate_scene(index):
    m = json.loads(_manifest(index).read_text())
    _rewrite(index / "manifests" / m["scenes_file"], lambda t: pa.concat_tables([t, t.slice(0, 1)]))


def wrong_scene_count(index):
    m = json.loads(_manifest(index).read_text())
    _rewrite(index / "manifests" / m["scenes_file"],
             lambda t: _set_col(t, "n_tiles", [t.column("n_tiles")[0].as_py() + 1] + t.column("n_tiles").to_pylist()[1:]))


def wrong_sensor(index):
    _rewrite(_seg(index) / "tiles.parquet",
             lambda t: _set_col(t, "sensor", ["naip"] + t.column("sensor").to_pylist()[1:]))


def moved_envelope(index):
    _rewrite(_seg(index) / "tiles.parquet",
             lambda t: _set_col(t, "minx", [t.column("minx")[0].as_py() - 1] + t.column("minx").to_pylist()[1:]))


def foreign_tombstone(index):
    m = json.loads(_manifest(index).read_text())
    m["tombstones_file"] = m["scenes_file"].replace("scenes", "tombstones")
    pq.write_table(pa.table({"segment": [_seg(index).name], "tile_id": pa.array([12345], pa.int64())}),
                   index / "manifests" / m["tombstones_file"])
    _manifest(index).write_text(json.dumps(m))


def wrong_manifest_count(index):
    m = json.loads(_manifest(index).read_text())
    m["n_tiles"] += 5
    _manifest(index).write_text(json.dumps(m))


def dangling_current(index):
    (index / "CURRENT").write_text("000000999.json\n")


def tile_twice(index):
    seg = _seg(index)
    twin = seg.with_name(seg.name[:10] + "ffffffff")
    shutil.copytree(seg, twin)
    m = json.loads(_manifest(index).read_text())
    m["segments"].append({"name": twin.name, "n_rows": m["segments"][0]["n_rows"]})
    _manifest(index).write_text(json.dumps(m))


CORRUPTIONS = [
    (drop_vector, "vectors"), (nan_vector, "NaN or Inf"), (long_vector, "not unit length"),
    (float64_vectors, "float32"), (drop_thumb, "thumbnails do not match"),
    (bad_thumb, "not JPEG"), (garbage_tiles, "unreadable"), (missing_segment, "unreadable"),
    (duplicate_scene, "recorded more than once"), (wrong_scene_count, "record says"),
    (wrong_sensor, "disagree with their scene"), (moved_envelope, "footprint polygons"),
    (foreign_tombstone, "tombstones name tiles it does not hold"),
    (wrong_manifest_count, "manifest says"), (dangling_current, "does not exist"),
    (tile_twice, "live more than once"),
]


@pytest.mark.parametrize("corrupt, match", CORRUPTIONS, ids=[c[0].__name__ for c in CORRUPTIONS])
def test_check_names_each_corruption(index_copy, corrupt, match, capsys):
    from glb.cli import main

    assert check_index(index_copy)[0] == []
    corrupt(index_copy)
    problems, _ = check_index(index_copy)
    assert any(match in p for p in problems), problems
    assert main(["check", "--index", str(index_copy)]) == 1
    err = capsys.readouterr().err
    assert match in err


def test_duckdb_counts_catch_a_vector_file_out_of_step(index_copy):
    drop_vector(index_copy)
    problems, _ = check_index(index_copy)
    assert any(p.startswith("DuckDB:") and "vectors" in p for p in problems), problems


def test_leftovers_of_an_unfinished_commit_are_not_problems(index_copy):
    (index_copy / "segments" / ".000000099-deadbeef.tmp").mkdir()
    (index_copy / "manifests" / "000000099.scenes.parquet").write_bytes(b"half")
    (index_copy / ".CURRENT.tmp-123").write_bytes(b"000000099.json")
    problems, stats = check_index(index_copy)
    assert problems == [] and stats["leftovers"] == 3
