"""The training config as one validated object, and the pieces that left training/train.py
(optimiser groups, schedule, checkpoints)."""

import json
import pickle

import numpy as np
import pytest
import torch

from engine.errors import InputError
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import CONFIGS, load_config
from training.params import make_optimizer
from training.scheduler import warmup_cosine, warmup_cosine_schedule


def _write(folder, name, data):
    p = folder / f"{name}.json"
    p.write_text(json.dumps(data))
    return p


def test_every_shipped_config_loads():
    names = sorted(p.stem for p in CONFIGS.glob("*.json"))
    assert names
    for name in names:
        cfg = load_config(name)
        assert cfg["name"] and "extends" not in cfg


def test_extends_is_resolved_once_child_keys_win(tmp_path):
    _write(tmp_path, "base", {"name": "base", "seed": 1, "batch": {"size": 8}, "base_steps": 10})
    _write(tmp_path, "mid", {"extends": "base.json", "name": "mid", "seed": 2})
    cfg = load_config(_write(tmp_path, "leaf", {"extends": "mid.json", "name": "leaf", "base_steps": 3}))
    assert dict(cfg) == {"name": "leaf", "seed": 2, "batch": {"size": 8}, "base_steps": 3}
    assert json.loads(json.dumps(cfg)) == dict(cfg)          # a dict to json and to the run folder
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    with pytest.raises(TypeError, match="read-only"):
        cfg["seed"] = 5


@pytest.mark.parametrize("data, message", [
    ({"name": "x", "learning_rate": 0.1}, "unknown keys ['learning_rate']"),
    ({"name": "x", "seed": "1"}, "seed must be int"),
    ({"name": "x", "merge": 1}, "merge must be bool"),
    ({"name": "x", "group_steps": True}, "group_steps must be int"),
    ({"seed": 1}, "no name"),
    ({"name": "x", "extends": "loop.json"}, "loops back"),
    ({"name": "x", "extends": "missing.json"}, "no such file"),
])
def test_a_bad_config_is_one_line_naming_the_key(tmp_path, data, message):
    _write(tmp_path, "loop", {"extends": "loop.json", "name": "loop"})
    with pytest.raises(InputError) as e:
        load_config(_write(tmp_path, "bad", data))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_optimiser_decays_matrices_only_and_the_schedule_warms_then_decays():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = make_optimizer(model, 1e-3, {"weight_decay": 0.1})
    decayed, plain = opt.param_groups
    assert [p.ndim for p in decayed["params"]] == [2] and decayed["weight_decay"] == 0.1
    assert all(p.ndim == 1 for p in plain["params"]) and plain["weight_decay"] == 0.0
    f = [warmup_cosine(s, 100, 10) for s in range(100)]
    assert f[0] == pytest.approx(0.1, rel=0.01) and max(f) == f[9] and f[-1] < 0.01
    assert all(a >= b for a, b in zip(f[9:], f[10:]))


def test_checkpoint_restores_model_optimiser_schedule_and_randomness(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = make_optimizer(model, 1e-2, {})
    sched = warmup_cosine_schedule(opt, 50, 0.1)
    rng = np.random.default_rng(3)
    for _ in range(5):
        model(torch.randn(8, 4)).sum().backward()
        opt.step()
        sched.step()
    rng.integers(0, 10, 4)
    save_checkpoint(tmp_path / "c.pt", model, opt, sched, 5, rng)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]   # no temporary left behind
    expect = (rng.integers(0, 1000), torch.rand(1).item(), sched.get_last_lr()[0])
    model2 = torch.nn.Linear(4, 2)
    opt2 = make_optimizer(model2, 1e-2, {})
    sched2 = warmup_cosine_schedule(opt2, 50, 0.1)
    rng2 = np.random.default_rng(99)
    assert load_checkpoint(tmp_path / "c.pt", model2, opt2, sched2, rng2, "cpu") == 5
    assert torch.equal(model.weight, model2.weight)
    assert (rng2.integers(0, 1000), torch.rand(1).item(), sched2.get_last_lr()[0]) == expect
