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
