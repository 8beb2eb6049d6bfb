"""training.head_ensemble: heads of runs that share the frozen tower, combined into one checkpoint."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.encoder import create_image_tower, get_model_config, load_encoder
from training.head_ensemble import main as head_ensemble
from training.release import write_checkpoint

RGB = [0.665, 0.56, 0.49]


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory):
    """Three checkpoints with one trunk and stem and three independently initialised heads (with
    non-trivial LayerNorm affines), like the seed runs of one recipe; and one of another trunk."""
    d = tmp_path_factory.mktemp("heads")
    cfg = get_model_config("glb-effnet-l0", max_image_size=128)
    torch.manual_seed(0)
    base = create_image_tower(cfg).eval()
    with torch.no_grad():
        base.stem.anchor_kernels.normal_()
    towers, paths = [], []
    for seed in range(3):
        t = copy.deepcopy(base)
        torch.manual_seed(100 + seed)
        with torch.no_grad():
            for m in t.head:
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
            t.head[0].weight.uniform_(0.5, 1.5)
            t.head[0].bias.normal_(std=0.1)
            t.stem.residual[0].weight.normal_()  # feeds a zero last layer: allowed to differ
        paths.append(write_checkpoint(t.state_dict(), cfg, d / f"s{seed}.safetensors"))
        towers.append(t)
    other = create_image_tower(cfg).eval()  # another random trunk
    other_path = write_checkpoint(other.state_dict(), cfg, d / "other.safetensors")
    return cfg, towers, [str(p) for p in paths], str(other_path), d


def test_output_ensemble_is_the_mean_of_the_heads(seed_runs):
    cfg, towers, paths, _, d = seed_runs
    out = d / "outputs.safetensors"
    assert head_ensemble(["--mode", "outputs", str(out), *paths]) == 0
    enc = load_encoder(str(out), device="cpu")
    assert enc.image.cfg.vision.head_hidden == 3 * cfg.vision.head_hidden
    assert enc.max_image_size == 128
    rng = np.random.default_rng(0)
    for side in (64, 96):  # both input sizes go through the one combined head
        x = rng.integers(0, 255, (4, 3, side, side), dtype=np.uint8)
        got = enc.encode_image(x, RGB)
        xt, wl = enc.preprocess(x, RGB, "rgb")
        with torch.no_grad():
            feats = towers[0].features(towers[0].prefix(xt, wl))
            want = F.normalize(torch.stack([t.head(feats) for t in towers]).mean(0), dim=-1).numpy()
            single = towers[0].embed_features(feats).numpy()
        assert np.abs(got - want).max() < 1e-5
        assert np.abs(got - single).max() > 1e-2  # not just the first head


def test_weight_average_and_refusals(seed_runs, capsys):
    cfg, towers, paths, other, d = seed_runs
    out = d / "weights.safetensors"
    assert head_ensemble(["--mode", "weights", str(out), *paths]) == 0
    enc = load_encoder(str(out), device="cpu")
    assert enc.image.cfg.vision.head_hidden == cfg.vision.head_hidden
    mean = torch.stack([t.head[1].weight for t in towers]).mean(0)
    assert torch.allclose(enc.image.head[1].weight, mean)
    with pytest.raises(SystemExit, match="differs"):
        head_ensemble(["--mode", "outputs", str(d / "x.safetensors"), paths[0], other])
    with pytest.raises(SystemExit, match="at least two"):
        head_ensemble(["--mode", "outputs", str(d / "x.safetensors"), paths[0]])
