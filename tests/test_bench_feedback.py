"""`glb bench feedback --smoke` and `glb bench refine --smoke`: the seconds-long versions. Shapes
and ranges only (benchmarks are not tests): P@20 in [0, 1] per round, latencies positive."""

import json

from glb.cli import main


def _run(capsys, *argv):
    assert main(["bench", *argv]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bench_feedback_smoke(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GLB_BENCH_DIR", str(tmp_path))
    r = _run(capsys, "feedback", "--smoke", "--json")
    pool = r["pools"]["eurosat_ms_test"]
    assert pool["tiles"] == 54 and len(pool["classes"]) == 1
    for start in ("text", "random5"):
        for m in ("query", "rocchio-classic", "rocchio", "probe", "ceiling", "oracle"):
            curve = pool[f"{start}/{m}"]
            assert len(curve) == 4 and all(0.0 <= x <= 1.0 for x in curve), (start, m, curve)
            # against what was still findable: hits / min(20, relevant left) >= hits / 20
            # (None where nothing was left to find)
            fin = pool[f"{start}/{m}/findable"]
            assert len(fin) == 4 and all(f is None or new <= f + 1e-9 <= 1.0 + 1e-9
                                         for f, new in zip(fin, curve)), (start, m, fin, curve)
    # the oracle shows what is left first: all of it that fits, and round 1 (after the same round
    # 0 for every method) at or above every method's
    assert all(f is None or f == 1.0 for f in pool["text/oracle/findable"][1:])
    assert all(pool["text/oracle"][1] >= pool[f"text/{m}"][1] for m in ("query", "probe", "ceiling"))
    assert set(r["summary"]["targets"]) == {"new", "findable"}
    assert r["summary"]["targets"]["findable"]["probe"]["gain_pools"] in (0, 1)
    # round 0 of the text start is the query alone, whatever the method
    assert len({tuple(pool[f"text/{m}"][:1]) for m in ("query", "rocchio", "probe")}) == 1
    assert (tmp_path / "feedback").is_dir()   # embeddings cached per encoder


def test_bench_refine_smoke(capsys):
    r = _run(capsys, "refine", "--vectors", "4096", "--smoke", "--json")
    assert r["vectors"] == 4096 and set(r["cases"]) == {"none", "bbox+modality"}
    for c in r["cases"].values():
        assert c["plain_p50_ms"]["median"] > 0 and c["refine_p50_ms"]["median"] > 0
        assert c["feedback_fit_p50_ms"] > 0 and sum(c["blend_weights"].values()) == 3
        assert c["refine_one_vector_p50_ms"]["median"] > 0


def test_bench_feedback_set_and_bad_options(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GLB_BENCH_DIR", str(tmp_path))
    r = _run(capsys, "feedback", "--smoke", "--json", "--methods", "query,probe",
             "--set", "confidence=0", "--set", "margin_noise=0.25")
    assert r["config_changed"] == {"margin_noise": 0.25, "confidence": 0.0}
    assert r["methods"] == ["query", "probe"] and "text/rocchio" not in r["pools"]["eurosat_ms_test"]
    wide = _run(capsys, "feedback", "--smoke", "--json", "--methods", "probe", "--mark-neighbours", "5")
    assert wide["mark_neighbours"] == 5 and r["mark_neighbours"] == 0
    assert all(0.0 <= x <= 1.0 for x in wide["pools"]["eurosat_ms_test"]["text/probe"])
    for argv, word in ((["--set", "nope=1"], "nope"), (["--set", "confidence=high"], "high"),
                       (["--methods", "magic"], "magic"), (["--pools", "mars"], "mars")):
        assert main(["bench", "feedback", "--smoke", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and word in err[0], err
