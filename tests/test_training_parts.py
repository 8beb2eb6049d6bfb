"""Training components that need no dataset: losses, translators, merging, teachers, release."""

import numpy as np
import pytest
import torch

from training.loss import (
    MultiPositiveInfoNCE,
    MultiPositiveSigLipLoss,
    distillation_loss,
    make_contrastive_loss,
    positives_mask,
)
from training.merge import apply, progressive_merge, task_vector
from training.model import ModalityLayerNorm, Translator


def test_multi_positive_siglip_reduces_to_open_clip_without_duplicates():
    from open_clip.loss import SigLipLoss

    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    ref = SigLipLoss()(img, txt, scale, bias)
    pos = positives_mask(torch.arange(8), torch.full((8,), -1))
    ours = MultiPositiveSigLipLoss()(img, txt, scale, bias, positives=pos)
    assert torch.allclose(ref, ours)


def test_duplicate_captions_are_positives_not_negatives():
    caps = torch.tensor([0, 0, 1, 2])
    labels = torch.tensor([5, 5, 6, -1])
    pos = positives_mask(caps, labels)
    assert pos[0, 1] and pos[1, 0] and not pos[0, 2] and not pos[3, 2] and pos[3, 3]
    # identical image/text pairs: marking them positive lowers the loss
    img = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [-1.0, 0]]), dim=-1)
    txt = img.clone()
    loss = MultiPositiveSigLipLoss()
    s, b = torch.tensor(10.0), torch.tensor(-5.0)
    assert loss(img, txt, s, b, positives=pos) < loss(img, txt, s, b, positives=torch.eye(4, dtype=torch.bool))


def test_multi_positive_softmax_reduces_to_clip_without_duplicates():
    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    logits = 30.0 * img @ txt.T
    target = torch.arange(8)
    ref = (torch.nn.functional.cross_entropy(logits, target)
           + torch.nn.functional.cross_entropy(logits.T, target)) / 2
    pos = positives_mask(torch.arange(8), torch.full((8,), -1))
    assert torch.allclose(MultiPositiveInfoNCE(30.0)(img, txt, positives=pos), ref)
    assert torch.allclose(MultiPositiveInfoNCE(30.0)(img, txt), ref)


def test_multi_positive_softmax_does_not_push_apart_same_label_tiles():
    # two tiles of one class, captioned with two phrasings: as positives of each other the
    # loss prefers the two tiles on one point; as negatives (identity targets) it pushes them apart
    caps, labels = torch.tensor([0, 1, 2]), torch.tensor([7, 7, 8])
    pos = positives_mask(caps, labels)
    norm = torch.nn.functional.normalize
    txt = norm(torch.tensor([[1.0, 0.1], [1.0, -0.1], [-1.0, 0]]), dim=-1)
    together = norm(torch.tensor([[1.0, 0], [1.0, 0], [-1.0, 0]]), dim=-1)
    apart = txt.clone()
    loss = MultiPositiveInfoNCE(30.0)
    assert loss(together, txt, positives=pos) < loss(apart, txt, positives=pos)
    eye = torch.eye(3, dtype=torch.bool)
    assert loss(together, txt, positives=eye) > loss(apart, txt, positives=eye)
    with pytest.raises(ValueError, match="unknown contrastive loss 'hinge'"):
        make_contrastive_loss("hinge")
    assert isinstance(make_contrastive_loss("siglip"), MultiPositiveSigLipLoss)


def test_distillation_loss_is_zero_only_at_the_target():
    t = torch.randn(2, 64, 32)
    assert distillation_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(t + 0.5, t).item() > 0.05


def test_modality_layernorm_depends_on_wavelengths_once_trained():
    ln = ModalityLayerNorm(16)
    x = torch.randn(3, 16)
    rgb, sar = torch.tensor([0.665, 0.56, 0.49]), torch.tensor([55500.0])
    assert torch.allclose(ln(x, rgb), ln(x, sar))  # zero-initialised: plain LayerNorm at start
    torch.nn.init.normal_(ln.to_affine[-1].weight)
    assert not torch.allclose(ln(x, rgb), ln(x, sar))
    tr = Translator(24, 40)
    assert tr(torch.randn(2, 64, 24), rgb).shape == (2, 64, 40)


def test_progressive_merge_never_worse_than_base_on_the_dev_score():
    base = {"w": torch.zeros(4)}
    good = {"w": torch.tensor([1.0, 0, 0, 0])}
    bad = {"w": torch.tensor([0, -1.0, 0, 0])}
    target = torch.tensor([0.75, 0, 0, 0])
    score = lambda s: -float((s["w"] - target).abs().sum())
    merged, hist = progressive_merge(base, {"good": good, "bad": bad}, score, log=lambda m: None)
    assert torch.allclose(merged["w"], target)
    assert [h.get("lambda") for h in hist[1:]] == [0.75, 0.0]
    assert score(merged) >= score(base)
    assert torch.allclose(apply(base, [(task_vector(good, base), 0.5)])["w"], torch.tensor([0.5, 0, 0, 0]))


def test_teachers_load_from_the_wheels_and_give_8x8_grids(tmp_path):
    from training.teachers import CSMaskTeacher, EfficientNetLiteTeacher, rgb_view

    t = EfficientNetLiteTeacher("lite0")
    view = rgb_view(np.random.default_rng(0).normal(-12, 3, (1, 64, 64)).astype(np.float32), [55500.0], "sar")
    assert view.shape == (3, 64, 64) and view.dtype == np.uint8
    assert t(view[None]).shape == (1, 64, t.dim)
    cs = CSMaskTeacher(tmp_path)
    s2 = [0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.865, 0.945, 1.375, 1.61, 2.19]
    assert cs.applies(s2, "multispectral") and not cs.applies([0.665, 0.56, 0.49], "rgb")
    refl = cs.reflectance(np.full((13, 64, 64), 1500, np.uint16), s2)
    assert refl.shape == (6, 64, 64) and refl.max() == pytest.approx(0.15)
    assert cs(refl[None]).shape == (1, 64, cs.dim)


def test_released_checkpoint_loads_into_the_engine(tmp_path):
    from engine.encoder import get_model_config, load_encoder
    from engine.encoder.vit import ImageTower
    from training.release import write_checkpoint

    cfg = get_model_config("glb-vit-s8")
    tower = ImageTower(cfg)
    p = write_checkpoint(tower.state_dict(), cfg, tmp_path / "m.safetensors", {"config": "test"})
    assert p.stat().st_size < 40 * 2**20
    enc = load_encoder(p)
    assert enc.trained and enc.identity.startswith("glb-vit-s8@")
    x = np.random.default_rng(0).integers(0, 255, (2, 3, 64, 64), dtype=np.uint8)
    with torch.inference_mode():
        ref = tower.eval()(enc.preprocess(x, [0.665, 0.56, 0.49], "rgb")[0], torch.tensor([0.665, 0.56, 0.49]))
    assert np.allclose(enc.encode_image(x, [0.665, 0.56, 0.49], "rgb"), ref.numpy(), atol=1e-5)


def test_equal_budget_reads_the_reference_run_and_counts_whole_steps():
    from conftest import ROOT
    from training.equal_budget import reference_walls, steps_for

    wall, mids = reference_walls((ROOT / "docs/runs/v2-cpu-d.log").read_text())
    assert wall == 1549 and mids["aid"] == (4000, 164.0) and mids["ucm"] == (1500, 73.0)
    assert steps_for(1000.0, 400.0, 7.0) == 85 and steps_for(300.0, 400.0, 7.0) == 0
    with pytest.raises(ValueError, match="released"):
        reference_walls("[04:26:28] cache: aid: 4000 samples in 14 s\n")


def test_equal_budget_ablation_arms_train_on_the_released_runs_data():
    from training.config import load_config

    ref, maka, plain = (load_config(n) for n in ("v2-cpu-d", "ablation-v2data-vit",
                                                  "ablation-v2data-vit-no-maka"))
    for key in ("sources", "max_per_source", "max_captions_per_sample", "seed"):
        assert maka[key] == ref[key] == plain[key], key
    assert maka["model"] == "glb-vit-s8" and maka["distill_weight"] == 1.0 and maka["teachers"]
    # the no-MaKA arm differs only in the distillation (no teachers, weight 0) and its steps
    diff = {k for k in set(maka) | set(plain) if maka.get(k) != plain.get(k)}
    assert diff <= {"name", "teachers", "distill_weight", "base_steps"}
    assert plain["distill_weight"] == 0.0 and plain["teachers"] == []
