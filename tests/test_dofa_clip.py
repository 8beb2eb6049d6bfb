"""The paper's weights (DOFA-CLIP), proved without them: fixture checkpoints written here from
stock open_clip `ViT-B-16-SigLIP` + our DOFA patch embedding with seeded random weights, saved
the ways the published folders (and hand-made copies) may hold them, then loaded through the
registry exactly as a user's download would be.

Speed on two shared cores: the fixture model keeps the first 2 of the 12 blocks of each tower
(registry option `depth`; every other tensor at full B-16 size, DOFA's 25M-parameter kernel
generator included). That it differs from the full B-16 only by the missing blocks, and that
the full B-16 and SO400M key sets are the published architecture's, is checked by name and
shape on the meta device (nothing allocated).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from engine.errors import CheckpointError, InputError

TINY = "dofa-clip-b16-224-depth2"
RGB = [0.665, 0.56, 0.49]
TEXTS = ["flooded farmland", "ships in a harbour"]
WORDS = ("<pad> </s> <unk> flooded farmland ships in a harbour forest river city airport of "
         "satellite image aerial remote sensing").split()


def _spec():
    from engine.encoder import EncoderSpec, get_spec, register

    base = get_spec("dofa-clip-b16-224")
    return register(EncoderSpec(
        name=TINY, builder=base.builder, weights="folder", image_size=base.image_size,
        normalisation=base.normalisation, licence="test fixture", source="tests/test_dofa_clip.py",
        weights_env="GLB_WEIGHTS_TEST_DOFA", options={**base.options, "depth": 2}))


def _write_tokenizer(folder):
    """A small word-level tokenizer in Hugging Face's folder format (tokenizer.json +
    tokenizer_config.json), read by open_clip's HFTokenizer like the real SigLIP files."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "eos_token": "</s>",
        "unk_token": "<unk>", "model_max_length": 64}))


@pytest.fixture(scope="session")
def saved(tmp_path_factory):
    """The saving model, its reference embeddings, and one folder per checkpoint variant."""
    from safetensors.torch import save_file

    from engine.encoder.dofa_clip import create_model, image_features

    spec = _spec()
    model = create_model(spec, init_seed=0).eval()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    root = tmp_path_factory.mktemp("dofa")
    tok = root / "tokenizer"
    tok.mkdir()
    _write_tokenizer(tok)

    def folder(name):
        d = root / name
        d.mkdir()
        for f in tok.iterdir():
            shutil.copy(f, d / f.name)
        return d

    save_file(sd, str(folder("safetensors") / "open_clip_model.safetensors"))
    torch.save(sd, folder("bin") / "open_clip_pytorch_model.bin")
    save_file({k: v.half() for k, v in sd.items()}, str(folder("fp16") / "open_clip_model.safetensors"))
    extra = {f"module.{k}": v for k, v in sd.items()}
    extra["module.translators.dinov2.0.weight"] = torch.zeros(4, 4)  # training-only: dropped
    torch.save(extra, folder("module") / "open_clip_pytorch_model.bin")
    torch.save({"state_dict": sd, "epoch": 3}, folder("wrapped") / "open_clip_pytorch_model.bin")

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (2, 3, 40, 56)).astype(np.uint8)
    from engine.encoder.factory import BaseEncoder

    prep = BaseEncoder()
    prep.normalisation, prep.image_size = spec.normalisation, spec.image_size
    x, wl = prep.preprocess(pixels, RGB, "rgb")
    from open_clip.tokenizer import HFTokenizer

    tokens = HFTokenizer(str(tok), context_length=64, clean="canonicalize")(TEXTS)
    with torch.inference_mode():
        img = torch.nn.functional.normalize(image_features(model, x, wl), dim=-1).numpy()
        txt = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1).numpy()
    return {"spec": spec, "model": model, "state": sd, "root": root, "pixels": pixels, "x": x,
            "wl": wl, "img": img, "txt": txt}


@pytest.fixture(scope="session")
def dofa(saved):
    from engine.encoder import load_encoder

    return load_encoder(TINY, weights=saved["root"] / "safetensors", device="cpu")


# --- loading: exact, strict, every file variant ---------------------------------------------------
def test_safetensors_reproduces_the_saving_model(saved, dofa):
    np.testing.assert_array_equal(dofa.encode_image(saved["pixels"], RGB, "rgb"), saved["img"])
    assert np.abs(dofa.encode_text(TEXTS) - saved["txt"]).max() <= 1e-6
    assert dofa.identity.startswith(f"{TINY}@") and dofa.dim == 768 and dofa.image_size == 224
    d = dofa.describe()
    assert d["encoder"] == TINY and d["weights"] == str((saved["root"] / "safetensors").resolve())


@pytest.mark.parametrize("variant", ["bin", "module", "wrapped"])
def test_other_fp32_variants_load_exactly(saved, variant):
    from engine.encoder import load_encoder

    enc = load_encoder(TINY, weights=saved["root"] / variant, device="cpu")
    np.testing.assert_array_equal(enc.encode_image(saved["pixels"], RGB, "rgb"), saved["img"])
    assert np.abs(enc.encode_text(TEXTS) - saved["txt"]).max() <= 1e-6
    assert all(p.dtype == torch.float32 for p in enc.model.parameters())


def test_fp16_file_is_cast_to_fp32_within_fp16_noise(saved):
    from engine.encoder import load_encoder
    from engine.encoder.dofa_clip import create_model, image_features

    enc = load_encoder(TINY, weights=saved["root"] / "fp16", device="cpu")
    assert all(p.dtype == torch.float32 for p in enc.model.parameters())
    got = enc.encode_image(saved["pixels"], RGB, "rgb")
    # exactly the saving model with its weights rounded to fp16 ...
    rounded = create_model(saved["spec"], init_seed=None)
    rounded.load_state_dict({k: v.half().float() for k, v in saved["state"].items()})
    with torch.inference_mode():
        ref16 = torch.nn.functional.normalize(image_features(rounded.eval(), saved["x"], saved["wl"]), dim=-1)
    np.testing.assert_array_equal(got, ref16.numpy())
    # ... and close to the fp32 original
    assert np.abs(got - saved["img"]).max() < 2e-2
    assert (got * saved["img"]).sum(1).min() > 0.999
    assert enc.identity != load_identity(saved, "safetensors")


def load_identity(saved, variant):
    from engine.encoder.dofa_clip import file_sha256, find_weights_file

    return f"{TINY}@{file_sha256(find_weights_file(saved['spec'], saved['root'] / variant))[:12]}"


def test_stock_siglip_checkpoint_is_refused(saved, tmp_path):
    from safetensors.torch import save_file

    from engine.encoder import load_encoder

    stock = {k: v for k, v in saved["state"].items() if ".patch_embed." not in k}
    stock["visual.trunk.patch_embed.proj.weight"] = torch.zeros(768, 3, 16, 16)
    stock["visual.trunk.patch_embed.proj.bias"] = torch.zeros(768)
    save_file(stock, str(tmp_path / "open_clip_model.safetensors"))
    _write_tokenizer(tmp_path)
    with pytest.raises(CheckpointError, match="stock SigLIP checkpoint.*weight_generator"):
        load_encoder(TINY, weights=tmp_path)


def test_missing_and_unexpected_keys_are_refused(saved, tmp_path):
    from safetensors.torch import save_file

    from engine.encoder import load_encoder

    _write_tokenizer(tmp_path)
    short = {k: v for k, v in saved["state"].items() if k != "visual.trunk.norm.weight"}
    short["visual.trunk.blocks.7.mlp.fc1.weight"] = torch.zeros(1)  # e.g. a deeper model
    save_file(short, str(tmp_path / "open_clip_model.safetensors"))
    with pytest.raises(CheckpointError, match="missing 1 .*visual.trunk.norm.weight.*unexpected 1"):
        load_encoder(TINY, weights=tmp_path)


@pytest.mark.parametrize("case, match", [
    ("none", "needs its weights folder.*GLB_WEIGHTS_TEST_DOFA"),
    ("nowhere", "no such weights folder"),
    ("empty", "holds neither open_clip_model.safetensors nor open_clip_pytorch_model.bin"),
    ("no-tokenizer", "no tokenizer files"),
    ("other-model", "embed_dim is 1152 but encoder .* expects 768"),
])
def test_missing_or_wrong_weights_folder_is_one_clear_line(saved, tmp_path, case, match):
    from engine.encoder import load_encoder

    weights = {"none": None, "nowhere": tmp_path / "nope"}.get(case, tmp_path)
    if case in ("no-tokenizer", "other-model"):
        (tmp_path / "open_clip_model.safetensors").write_bytes(b"x")
    if case == "other-model":
        _write_tokenizer(tmp_path)
        (tmp_path / "open_clip_config.json").write_text(json.dumps(
            {"model_cfg": {"embed_dim": 1152, "vision_cfg": {"image_size": 384}}}))
    with pytest.raises(CheckpointError, match=match) as e:
        load_encoder(TINY, weights=weights)
    assert "\n" not in str(e.value)


# --- behaviour of the dynamic patch embedding -------------------------------------------------------
def test_band_permutation_with_wavelengths_leaves_embeddings_unchanged(dofa):
    rng = np.random.default_rng(1)
    wl = np.array([0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 1.61])
    x = rng.integers(0, 6000, (2, 9, 48, 48)).astype(np.uint16)
    perm = rng.permutation(9)
    a = dofa.encode_image(x, wl, "multispectral")
    b = dofa.encode_image(x[:, perm], wl[perm], "multispectral")
    assert np.abs(a - b).max() <= 1e-5
    c = dofa.encode_image(x, wl * 1.3, "multispectral")  # only the wavelengths change
    assert np.abs(a - c).max() > 1e-3


@pytest.mark.parametrize("bands", [1, 3, 9, 200])
def test_band_counts(dofa, bands):
    rng = np.random.default_rng(bands)
    wl = np.linspace(0.4, 2.5, bands)
    e = dofa.encode_image(rng.random((2, bands, 32, 32), dtype=np.float32), wl,
                          "rgb" if bands == 3 else "hyperspectral")
    assert e.shape == (2, 768) and np.isfinite(e).all()
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)


def test_single_band_is_repeated_to_three_like_the_authors(dofa):
    x = np.random.default_rng(2).random((1, 1, 32, 32), dtype=np.float32)
    one = dofa.encode_image(x, [0.842], "infrared")
    three = dofa.encode_image(np.repeat(x, 3, axis=1), [0.842] * 3, "infrared")
    np.testing.assert_array_equal(one, three)


def test_wavelength_count_must_match_channels(dofa):
    with pytest.raises(InputError, match="3 bands but 2 wavelengths"):
        dofa.encode_image(np.zeros((3, 32, 32), np.uint8), [0.665, 0.56], "rgb")
    with pytest.raises(ValueError, match="3 bands but 4 wavelengths"):
        dofa.model.visual.trunk.patch_embed(torch.zeros(1, 3, 224, 224), torch.tensor(RGB + [0.8]))


# --- the published architecture, by name and shape (meta device: nothing allocated) ---------------
def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _dofa_keys(k: int, width: int) -> dict:
    p = "visual.trunk.patch_embed."
    layer = p + "weight_generator.transformer_encoder.layers.0."
    return {p + "weight_generator.weight_tokens": (128, 128), p + "weight_generator.bias_token": (1, 128),
            layer + "self_attn.in_proj_weight": (384, 128), layer + "self_attn.in_proj_bias": (384,),
            layer + "self_attn.out_proj.weight": (128, 128), layer + "self_attn.out_proj.bias": (128,),
            layer + "linear1.weight": (2048, 128), layer + "linear1.bias": (2048,),
            layer + "linear2.weight": (128, 2048), layer + "linear2.bias": (128,),
            layer + "norm1.weight": (128,), layer + "norm1.bias": (128,),
            layer + "norm2.weight": (128,), layer + "norm2.bias": (128,),
            p + "weight_generator.fc_weight.weight": (k * k * width, 128),
            p + "weight_generator.fc_weight.bias": (k * k * width,),
            p + "weight_generator.fc_bias.weight": (width, 128), p + "weight_generator.fc_bias.bias": (width,),
            p + "fclayer.w1.weight": (128, 128), p + "fclayer.w1.bias": (128,),
            p + "fclayer.w2.weight": (128, 128), p + "fclayer.w2.bias": (128,)}


@pytest.mark.parametrize("name, stock, k, width, grid, depth, text_width, text_layers", [
    ("dofa-clip-b16-224", "ViT-B-16-SigLIP", 16, 768, 14, 12, 768, 12),
    ("dofa-clip-l14-384", "ViT-SO400M-14-SigLIP-384", 14, 1152, 27, 27, 1152, 27),
])
def test_key_set_is_stock_siglip_with_dofa_patch_embedding(name, stock, k, width, grid, depth,
                                                          text_width, text_layers):
    import open_clip

    from engine.encoder import get_spec
    from engine.encoder.dofa_clip import create_model

    ours = _shapes(create_model(get_spec(name), device="meta"))
    with torch.device("meta"):
        ref = _shapes(open_clip.create_model(stock, pretrained=None, device="meta", pretrained_text=False))
    stem = {"visual.trunk.patch_embed.proj.weight", "visual.trunk.patch_embed.proj.bias"}
    assert set(ref) >= stem
    expected = {**{kk: v for kk, v in ref.items() if kk not in stem}, **_dofa_keys(k, width)}
    assert ours == expected
    # the published sizes (authors' model configs and timm registrations)
    assert ours["visual.trunk.pos_embed"] == (1, grid * grid, width)
    assert sum(1 for kk in ours if kk.startswith("visual.trunk.blocks.") and kk.endswith(".norm1.weight")) == depth
    assert sum(1 for kk in ours if kk.startswith("text.transformer.resblocks.") and kk.endswith(".ln_1.weight")) == text_layers
    assert ours["text.token_embedding.weight"] == (32000, text_width)
    assert ours["text.positional_embedding"] == (64, text_width)
    assert ours["logit_scale"] == () and ours["logit_bias"] == ()  # scalars, SigLIP's sigmoid scores
    assert not any(kk.startswith("translators.") for kk in ours)


def test_fixture_differs_from_full_b16_only_by_depth(saved):
    from engine.encoder import get_spec
    from engine.encoder.dofa_clip import create_model

    full = _shapes(create_model(get_spec("dofa-clip-b16-224"), device="meta"))
    kept = {k: v for k, v in full.items()
            if not (k.startswith(("visual.trunk.blocks.", "text.transformer.resblocks."))
                    and int(k.split(".")[3]) >= 2)}
    assert {k: tuple(v.shape) for k, v in saved["state"].items()} == kept


# --- every reader uses the encoder an index was built with --------------------------------------------
@pytest.fixture(scope="session")
def dofa_index(tmp_path_factory, dofa):
    from conftest import write_tif
    from indexer.runner import IndexOptions, run_index

    d = tmp_path_factory.mktemp("dofa_index")
    tif = d / "scene.tif"
    write_tif(tif, np.random.default_rng(3).integers(0, 255, (3, 128, 128)).astype(np.uint8),
              descriptions=["red", "green", "blue"])
    report = run_index([tif], d / "index", override={"wavelengths": RGB, "modality": "rgb"},
                       options=IndexOptions(progress=False), encoder=dofa, echo=lambda m: None)
    assert report.ok, report.failed
    return d / "index"


def test_index_records_the_encoder_and_readers_use_it(saved, dofa, dofa_index, monkeypatch):
    import engine

    info = engine.open(dofa_index).info()
    assert info["encoder"]["identity"] == dofa.identity
    assert info["encoder"]["registry_name"] == TINY
    assert info["encoder"]["embedding_dim"] == 768
    # a fresh reader (no encoder handed in) loads the recorded encoder from the recorded folder
    from engine import Index

    idx = Index(dofa_index)
    res = idx.search("flooded farmland", k=3)
    assert len(res) == 3 and idx.encoder.identity == dofa.identity
    q = dofa.encode_text(["flooded farmland"])[0]
    snap = idx.snapshot
    all_vectors = snap.vectors.take(np.arange(len(snap.vectors)))
    assert abs(float(res["score"].iloc[0]) - float(np.max(all_vectors @ q))) < 1e-5


def test_reader_without_the_weights_folder_fails_with_one_line(saved, dofa_index, tmp_path, monkeypatch, capsys):
    from engine import Index
    from glb.cli import main

    moved = tmp_path / "index"
    shutil.copytree(dofa_index, moved)
    manifest_dir = moved / "manifests"
    for f in manifest_dir.glob("*.json"):  # as if the weights folder had moved away
        f.write_text(f.read_text().replace(str((saved["root"] / "safetensors").resolve()),
                                           str(tmp_path / "gone")))
    monkeypatch.delenv("GLB_WEIGHTS_TEST_DOFA", raising=False)
    with pytest.raises(CheckpointError, match=f"built with {TINY}@.* no longer exists.*GLB_WEIGHTS_TEST_DOFA"):
        Index(moved).search("flooded farmland", k=1)
    assert main(["search", "flooded farmland", "--index", str(moved)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "GLB_WEIGHTS_TEST_DOFA" in err and "--weights DIR" in err
    # the environment variable (config layer) or --weights points at the folder: it works
    monkeypatch.setenv("GLB_WEIGHTS_TEST_DOFA", str(saved["root"] / "safetensors"))
    assert len(Index(moved).search("flooded farmland", k=1)) == 1
    # the same weights in another file are another identity (the identity is the file's hash)
    monkeypatch.setenv("GLB_WEIGHTS_TEST_DOFA", str(saved["root"] / "bin"))
    with pytest.raises(InputError, match="built with encoder .* but the loaded encoder is"):
        Index(moved).search("flooded farmland", k=1)


def test_wrong_weights_for_an_index_is_refused(saved, dofa_index):
    from engine import Index

    with pytest.raises(InputError, match="built with encoder .* but the loaded encoder is"):
        Index(dofa_index, weights=saved["root"] / "fp16").search("flooded farmland", k=1)
    # and a writer refuses to add another encoder's vectors to it
    from engine.store.writer import StoreWriter

    with pytest.raises(Exception, match="index was built with encoder"):
        StoreWriter(dofa_index, {"identity": "glb-vit-s8@x", "dim": 384})


def test_cli_index_without_weights_names_what_is_expected(tmp_path, capsys, monkeypatch):
    from glb.cli import main

    monkeypatch.delenv("GLB_WEIGHTS_DOFA_CLIP_B16_224", raising=False)
    rc = main(["index", str(tmp_path), "--index", str(tmp_path / "ix"), "--encoder", "dofa-clip-b16-224", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert "dofa-clip-b16-224 needs its weights folder" in err and "GLB_WEIGHTS_DOFA_CLIP_B16_224" in err
    assert main(["index", str(tmp_path), "--index", str(tmp_path / "ix"), "--encoder", "nope"]) == 2
    assert "unknown encoder 'nope'" in capsys.readouterr().err


def test_registry_lists_the_paper_encoders(capsys):
    from engine.encoder import get_spec, list_encoders
    from glb.cli import main

    assert {"glb-vit-s8", "dofa-clip-b16-224", "dofa-clip-l14-384"} <= set(list_encoders())
    s = get_spec("dofa-clip-l14-384")
    assert (s.image_size, s.normalisation, s.weights) == (384, "siglip", "folder")
    assert "CC-BY-NC-4.0" in s.licence
    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    assert "dofa-clip-b16-224" in out and "GLB_WEIGHTS_DOFA_CLIP_L14_384" in out


def test_paper_zero_shot_reads_the_documented_layout(dofa, tmp_path):
    from PIL import Image

    from training.evaluate import paper_zero_shot

    rng = np.random.default_rng(4)
    for cls in ("forest", "river"):
        d = tmp_path / "eurosat" / cls
        d.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)).save(d / f"{i}.png")
    rows = paper_zero_shot(dofa, tmp_path, log=lambda m: None)
    assert len(rows) == 1 and rows[0]["n"] == 4 and rows[0]["chance"] == 0.5
    assert 0.0 <= rows[0]["value"] <= 1.0
    # `glb eval --encoder NAME --weights DIR --paper DIR --paper-only` writes the table
    from training.evaluate import main

    assert main(None, out=str(tmp_path / "out"), encoder=dofa, paper=str(tmp_path), paper_only=True) == 0
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert report["identity"] == dofa.identity and report["encoder"]["encoder"] == TINY
    assert [r["task"] for r in report["rows"]] == ["paper zero-shot eurosat (2 classes)"]
    assert report["speed"] is None  # 224 px on a CPU: not measured


def test_throughput_script_smoke(tmp_path):
    """The GPU throughput script (docs/BENCHMARKS.md, prepared) runs end to end on the CPU."""
    from glb.bench.dofa_throughput import main

    out = tmp_path / "t.json"
    assert main(["--smoke", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["encoder"] == "dofa-clip-l14-384" and r["image_size"] == 384 and r["depth"] == 1
    assert len(r["runs"]) == 1 and r["runs"][0]["images_per_s"] > 0
