"""`glb bench --smoke`: the seconds-long version CI runs. Checks the JSON's shape (what a script
comparing runs relies on) and that every recall is in [0, 1]; the numbers themselves are not
tested (benchmarks are not tests)."""

import json

import pytest

from glb.cli import main

METHODS = ["ours", "ours_disk", "numpy", "duckdb_vss"]
SELECTIVITIES = ["0.001%", "0.01%", "0.1%", "1%", "10%", "100%"]


def _run(capsys, *argv):
    assert main(["bench", *argv]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bench_search_smoke_json_shape(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GLB_BENCH_DIR", str(tmp_path))
    r = _run(capsys, "search", "--vectors", "4096", "--smoke", "--json")
    assert r["vectors"] == 4096 and r["smoke"] is True
    assert set(METHODS) <= set(r["methods"])
    for m in METHODS:
        v = r["methods"][m]
        assert isinstance(v["build_s"], (int, float)) and v["build_s"] >= 0, m
        assert v["bytes_per_vector"]["memory"] > 0, m
        for s in SELECTIVITIES:
            x = v["selectivity"][s]
            for key in ("p50_ms", "p99_ms"):
                assert x[key] is not None and x[key] >= 0, (m, s, key)
            assert x["recall_at_10"] is None or 0.0 <= x["recall_at_10"] <= 1.0, (m, s)
        for c in ("none", "modality", "date", "bbox+modality+date"):
            assert c in v["filters"], (m, c)
    # the ground truth is the NumPy method: it must agree with itself
    assert all(r["methods"]["numpy"]["selectivity"][s]["recall_at_10"] in (None, 1.0) for s in SELECTIVITIES)
    assert r["methods"]["ours"]["index"]["kind"] == "ivfpq"  # smoke forces the quantised path
    # the same lists memory-mapped from disk: the same answers
    disk = r["methods"]["ours_disk"]
    assert disk["index"]["lists_on_disk"] is True and r["methods"]["ours"]["index"]["lists_on_disk"] is False
    for s in SELECTIVITIES:
        assert disk["selectivity"][s]["recall_at_10"] == r["methods"]["ours"]["selectivity"][s]["recall_at_10"], s


@pytest.mark.slow
def test_bench_index_smoke_json_shape(capsys):
    r = _run(capsys, "index", "--smoke", "--json")
    assert r["tiles"] > 0
    assert r["end_to_end_tiles_per_s"]["median"] > 0
    assert r["encoder_ceiling_tiles_per_s"]["median"] > 0
    assert 0 < r["ratio"]
    assert "gpu" in r


def _fs_type(path) -> str:
    best, kind = "", ""
    for line in open("/proc/mounts"):
        _, mnt, fs = line.split()[:3]
        if str(path).startswith(mnt) and len(mnt) > len(best):
            best, kind = mnt, fs
    return kind


def test_pagecache_evict_drops_a_mapped_file(tmp_path):
    """The cold-cache benchmark's eviction: a file this process maps and has read is out of the
    page cache after `evict`, and reading it again fetches it from storage."""
    import numpy as np

    from glb.bench import pagecache

    if _fs_type(tmp_path) in ("tmpfs", "ramfs", "overlay"):
        pytest.skip(f"{tmp_path} is on {_fs_type(tmp_path)}: its pages cannot be dropped")
    p = tmp_path / "v.npy"
    np.save(p, np.arange(2_000_000, dtype=np.float32))
    m = np.load(p, mmap_mode="r")
    total = float(m.sum())
    assert pagecache.resident_bytes(p) > 7 * 2**20
    out = pagecache.evict(tmp_path)
    assert out == {"files": 1, "mappings": 1}
    assert pagecache.resident_bytes(p) < 2**20
    r0 = pagecache.read_bytes()
    assert float(m.sum()) == total  # the mapping stays valid
    assert pagecache.read_bytes() - r0 > 6 * 2**20


def test_bench_search_cold_cache_smoke(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GLB_BENCH_DIR", str(tmp_path))
    r = _run(capsys, "search", "--vectors", "4096", "--smoke", "--json", "--methods", "ours_disk,ours_disk_cold")
    cold = r["methods"]["ours_disk_cold"]
    assert cold["per_case"] == 5 and set(cold["cases"]) >= set(SELECTIVITIES)
    for c, x in cold["cases"].items():
        assert 0 < x["queries"] <= 5
        assert x["cold_p50_ms"] > 0 and x["warm_p50_ms"] > 0 and x["read_mib_max"] >= x["read_mib_p50"] >= 0
        # smoke runs 4 queries a case, all of them cold here: the same answers as the warm run
        warm = r["methods"]["ours_disk"]["selectivity"].get(c) or r["methods"]["ours_disk"]["filters"][c]
        assert x["recall_at_10"] == warm["recall_at_10"], c
    if _fs_type(tmp_path) not in ("tmpfs", "ramfs", "overlay"):
        assert max(x["read_mib_max"] for x in cold["cases"].values()) > 0  # cold queries read storage
