"""`glb train` end to end on a tiny config (real datasets, real teachers, a few steps), then
the released checkpoint through the engine and `glb eval`'s table."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

TINY = {
    "name": "tiny",
    "model": "glb-vit-s8",
    "seed": 0,
    "threads": 2,
    "sources": {"eurosat_rgb": {"split": "train", "max": 48}, "mstar": {"split": "train", "max": 48},
                "sen1floods11_s2": {"split": "train"}, "elevation": {"split": "train", "max": 24}},
    "teachers": ["effnet_lite0", "csmask_s2"],
    "distill_weight": 1.0,
    "batch": {"size": 32, "sources_per_batch": 3},
    "optim": {"lr": 1e-3, "weight_decay": 0.05, "warmup": 0.1},
    "base_steps": 6,
    "groups": {"optical": ["rgb", "multispectral"], "sar_elevation": ["sar", "elevation"]},
    "group_steps": 2,
    "group_lr": 3e-4,
    "replay": 0.25,
    "merge": True,
    "checkpoint_every": 3,
    "log_every": 3,
    "eval_after": False,
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    cfg = dict(TINY, cache_dir=str(d / "cache"))
    (d / "tiny.json").write_text(json.dumps(cfg))
    r = subprocess.run([sys.executable, "-m", "glb", "train", "--config", str(d / "tiny.json"),
                        "--out", str(d / "run")], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return d, r.stdout


def test_train_runs_all_stages_and_releases_a_loadable_checkpoint(tiny_run):
    from engine.encoder import load_encoder

    d, out = tiny_run
    for stage in ("base", "group-optical", "group-sar_elevation"):
        assert (d / "run" / f"{stage}-final.pt").exists()
    assert "merge: base" in out and "released" in out
    hist = json.loads((d / "run" / "merge.json").read_text())
    assert hist[0]["step"] == "base" and all(h["score"] >= hist[0]["score"] for h in hist)
    enc = load_encoder(d / "run" / "model.safetensors")
    assert enc.trained
    e = enc.encode_image(np.zeros((2, 3, 64, 64), np.uint8), [0.665, 0.56, 0.49], "rgb")
    assert e.shape == (2, 384) and np.isfinite(e).all()
    log = [json.loads(line) for line in (d / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r.get("stage") == "base"]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_resume_skips_finished_stages(tiny_run):
    d, _ = tiny_run
    r = subprocess.run([sys.executable, "-m", "glb", "train", "--config", str(d / "tiny.json"),
                        "--out", str(d / "run"), "--resume"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "base: done earlier" in r.stdout and "cache: loading" in r.stdout


def test_eval_writes_one_table(tiny_run, tmp_path):
    d, _ = tiny_run
    r = subprocess.run([sys.executable, "-m", "glb", "eval", "--checkpoint", str(d / "run" / "model.safetensors"),
                        "--out", str(tmp_path), "--tasks", "zs:eurosat_ms,retrieval:ombria_s1_s2,text_ap:ombria_flooded"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((tmp_path / "eval.json").read_text())["rows"]
    tasks = [row["task"] for row in rows]
    assert any("eurosat_ms" in t for t in tasks) and any("S1 -> S2" in t for t in tasks)
    for row in rows:
        assert 0.0 <= row["value"] <= 1.0 and 0.0 < row["chance"] < 1.0 and row["n"] > 0
    assert "| task |" in (tmp_path / "eval.md").read_text()
