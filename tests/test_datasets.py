"""The training data layer on the real sample data: every dataset and split reads, its samples
meet the `Sample` contract, splits are disjoint and deterministic, and each caption generator
says what the labels and metadata say (checked against the source files independently)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from scipy import ndimage
from scipy.io import loadmat

from conftest import DATA
from engine.modalities import C_BAND_UM, ELEVATION_UM, LWIR_UM, MODALITIES, X_BAND_UM
from engine.sensors import get_sensor
from training.datasets import DATASETS, load

UNLABELLED = {"jasper_ridge", "urban", "scenes_unlabelled"}  # captions may be empty
DTYPES = {np.dtype(t) for t in ("uint8", "uint16", "int16", "float32")}
PAIRS = [(name, split) for name, cls in DATASETS.items() for split in cls.splits]
PCT = re.compile(r"(<?\d+(?:\.\d)?)%")


def _pct(caption: str) -> float:
    m = PCT.search(caption)
    assert m, caption
    v = m.group(1)
    return 0.0 if v.startswith("<") else float(v)


@pytest.fixture(scope="module")
def summaries():
    """(name, split) -> per-sample facts, read once; pixels are checked and then dropped."""
    cache: dict[tuple[str, str], list[dict]] = {}

    def get(name: str, split: str) -> list[dict]:
        if (name, split) not in cache:
            ds = load(name, split, root=DATA)
            out = []
            for i in range(len(ds)):
                s = ds[i]
                px = s.pixels
                out.append({
                    "key": s.key, "pair_key": s.pair_key, "label": s.label,
                    "captions": s.captions, "shape": px.shape, "dtype": px.dtype,
                    "finite": bool(np.isfinite(px).all()) if px.dtype.kind == "f" else True,
                    "n_wl": len(s.wavelengths), "wl_ok": all(w > 0 for w in s.wavelengths),
                    "modality": s.modality, "sensor": s.sensor, "source": s.source,
                })
            cache[(name, split)] = out
        return cache[(name, split)]

    return get


@pytest.mark.parametrize("name,split", PAIRS, ids=[f"{n}-{s}" for n, s in PAIRS])
def test_every_sample_meets_the_contract(name, split, summaries):
    cls = DATASETS[name]
    rows = summaries(name, split)
    assert len(rows) > 0
    assert cls.modality in MODALITIES or (name == "scenes_unlabelled" and cls.modality == "mixed")
    keys = [r["key"] for r in rows]
    assert len(set(keys)) == len(keys), "keys must be unique"
    for r in rows:
        c, h, w = r["shape"]
        assert r["dtype"] in DTYPES, (r["key"], r["dtype"])
        assert r["finite"], r["key"]
        assert r["n_wl"] == c and r["wl_ok"], r["key"]
        assert h >= 16 and w >= 16, (r["key"], r["shape"])  # the encoder's minimum side
        assert r["modality"] in MODALITIES
        assert r["source"] == name and r["sensor"]
        if r["label"] is not None:
            assert r["label"] in cls.classes, (r["key"], r["label"])
        if name in UNLABELLED:
            assert r["captions"] == [] and r["label"] is None
        else:
            assert len(set(r["captions"])) >= 3, (r["key"], r["captions"])
            assert all(isinstance(t, str) and t.strip() for t in r["captions"])
    if cls.classes:  # a zero-shot source: every sample of a labelled split has a label
        labelled = [r for r in rows if r["label"] is not None]
        assert labelled, "no labelled samples"


@pytest.mark.parametrize("name", list(DATASETS))
def test_splits_are_disjoint(name, summaries):
    cls = DATASETS[name]
    seen: dict[str, str] = {}
    for split in cls.splits:
        for r in summaries(name, split):
            assert r["key"] not in seen, f"{r['key']} in {seen.get(r['key'])} and {split}"
            seen[r["key"]] = split


@pytest.mark.parametrize("name", list(DATASETS))
def test_deterministic_and_prompts(name):
    cls = DATASETS[name]
    split = cls.splits[-1]
    a, b = load(name, split, root=DATA), load(name, split, root=DATA, seed=1)
    assert len(a) == len(b)
    for i in sorted({0, len(a) // 2, len(a) - 1}):
        sa, sb = a[i], b[i]
        assert sa.key == sb.key and sa.captions == sb.captions and sa.label == sb.label
        assert np.array_equal(sa.pixels, sb.pixels) and sa.wavelengths == sb.wavelengths
    prompts = a.prompts()
    assert list(prompts) == list(cls.classes)
    for c, ps in prompts.items():
        assert len(set(ps)) >= 3 and all(cls.class_words.get(c, c) in p for p in ps)


def test_registry_and_errors(monkeypatch):
    assert {"eurosat_rgb", "eurosat_ms", "ombria_s1", "ombria_s2", "harvey", "mstar", "hit_uav",
            "opensarship", "hrsid", "salinas_a", "samson", "jasper_ridge", "urban",
            "sen1floods11_s1", "sen1floods11_s2", "bigearthnet_s1", "bigearthnet_s2",
            "elevation", "scenes_unlabelled"} <= set(DATASETS)
    with pytest.raises(ValueError, match="train, val"):
        load("eurosat_rgb", "test", root=DATA)
    with pytest.raises(ValueError, match="unknown dataset"):
        load("nope", "train", root=DATA)
    monkeypatch.setenv("GLB_DATA", str(DATA))
    assert load("hrsid", "test").root == DATA


# --- caption generators, checked against the source files ---------------------------------

def test_eurosat(summaries):
    from training.datasets.eurosat import CLASS_WORDS

    ms = load("eurosat_ms", "train", root=DATA)
    s = ms[0]
    assert s.sensor == "sentinel2-eurosat" and s.wavelengths[-1] == 0.865  # B8A last
    assert s.pixels.dtype == np.uint16 and s.pixels.shape == (13, 64, 64)
    rgb = load("eurosat_rgb", "val", root=DATA)[0]
    assert rgb.wavelengths == get_sensor("sentinel2-rgb").wavelengths
    for name in ("eurosat_rgb", "eurosat_ms"):
        for split in DATASETS[name].splits:
            for r in summaries(name, split)[::97]:
                assert r["label"] == r["key"].split("/")[2]  # the folder name exactly
                assert CLASS_WORDS[r["label"]] in r["captions"][0]
    # the same EuroSAT patch in both folders shares a pair_key
    pk_rgb = {r["pair_key"] for sp in ("train", "val") for r in summaries("eurosat_rgb", sp)}
    pk_ms = {r["pair_key"] for sp in ("train", "test") for r in summaries("eurosat_ms", sp)}
    assert len(pk_rgb & pk_ms) > 0


def test_ombria_pairs_and_flooded_fraction(summaries):
    from training.datasets.ombria import FLOOD_THRESHOLD

    for split in DATASETS["ombria_s1"].splits:
        s1, s2 = summaries("ombria_s1", split), summaries("ombria_s2", split)
        assert [r["pair_key"] for r in s1] == [r["pair_key"] for r in s2]
        assert [r["label"] for r in s1] == [r["label"] for r in s2]
        assert all(r["shape"][0] == 1 for r in s1) and all(r["shape"][0] == 3 for r in s2)
    ds = load("ombria_s1", "2021_france", root=DATA)
    checked = Counter()
    for i in range(len(ds)):
        s = ds[i]
        assert s.pair_key == f"2021_france/{s.meta['chip']}/{s.meta['phase']}"
        assert s.wavelengths == (C_BAND_UM,)
        if s.meta["phase"] == "before":
            assert s.label == "not flooded" and "before" in s.captions[0]
            continue
        mask = np.asarray(Image.open(s.meta["mask"]).convert("L")) > 127
        frac = mask.mean()
        assert abs(_pct(s.captions[0]) - 100 * frac) <= (0.05 if frac < 0.1 else 0.5), s.captions[0]
        assert s.label == ("flooded" if frac > FLOOD_THRESHOLD else "not flooded")
        checked[s.label] += 1
    assert checked["flooded"] > 0 and checked["not flooded"] > 0
    # The dry class's zero-shot prompts never say "flood": MiniLM reads "not flooded" next to
    # "flooded" (docs/MODEL_CARD.md), and the evidence bank holds the same first prompt.
    from engine.retrieval.evidence import PROMPT_BANK

    for name in ("ombria_s1", "ombria_s2", "sen1floods11_s1"):
        prompts = load(name, "test" if "ombria" in name else DATASETS[name].splits[0], root=DATA).prompts()
        assert prompts["not flooded"] and not any("flood" in p for p in prompts["not flooded"]), name
        assert all("flood" in p for p in prompts["flooded"]), name
    first = load("ombria_s2", "test", root=DATA).prompts()["not flooded"][0]
    assert first in PROMPT_BANK and not any("not flooded" in p for p in PROMPT_BANK)


def test_harvey():
    seen = set()
    for split in ("train", "val", "test"):
        ds = load("harvey", split, root=DATA)
        for i in (0, len(ds) - 1):
            s = ds[i]
            lon, lat = map(float, Path(s.key).stem.split("_"))
            assert (s.meta["lon"], s.meta["lat"]) == (lon, lat)
            assert s.label == {"damage": "damaged", "no_damage": "not damaged"}[s.key.split("/")[2]]
            assert all("Harvey" in c or "hurricane" in c or "storm" in c for c in s.captions)
            word = "flooded or damaged" if s.label == "damaged" else "undamaged"
            assert word in s.captions[0]
        ident = {(p.name, f) for p, f in ds._records}
        assert not ident & seen, "a (file name, class) duplicated across splits"
        seen |= ident


def test_mstar():
    from training.datasets.mstar import VEHICLES

    for split, dep in (("train", 17), ("val", 15)):
        ds = load("mstar", split, root=DATA)
        for i in range(0, len(ds), 400):
            s = ds[i]
            assert s.wavelengths == (X_BAND_UM,) and s.sensor == "x-band-sar"
            assert s.pixels.shape == (1, 128, 128) and s.pixels.dtype == np.uint8
            assert "X-band" in s.captions[0] and VEHICLES[s.label][0] in s.captions[0]
            assert f"{dep}°" in " ".join(s.captions)


def test_hit_uav_counts_match_annotations():
    ann = {r["image"]: r for r in json.loads((DATA / "hit_uav/annotations.json").read_text())}
    nouns = {"Person": ("person", "people"), "Car": ("car", "cars"),
             "Bicycle": ("bicycle", "bicycles"),
             "OtherVehicle": ("other vehicle", "other vehicles")}
    for split in ("train", "val", "test"):
        ds = load("hit_uav", split, root=DATA)
        assert len(ds) == sum(r["split"] == split for r in ann.values())
        for i in range(0, len(ds), 97):
            s = ds[i]
            rec = ann[s.key.split("/", 1)[1]]
            assert s.pixels.shape == (1, 256, 320) and s.wavelengths == (LWIR_UM,)
            assert s.label == rec["scenario"]
            cap = s.captions[0]
            assert ("night" in cap) == (rec["scenario"] == "night")
            assert f"{rec['altitude_m']} m" in cap
            counts = Counter(o["label"] for o in rec["objects"])
            for k, (one, many) in nouns.items():
                n = counts.get(k, 0)
                if n:
                    assert f"{n} {one if n == 1 else many}" in cap, (cap, counts)
                else:
                    assert not re.search(rf"\d+ ({one}|{many})\b", cap), (cap, counts)


def test_opensarship():
    from training.datasets.opensarship import TYPE_WORDS

    scenes = {}
    for split in ("train", "test"):
        ds = load("opensarship", split, root=DATA)
        scenes[split] = {ds[i].meta["scene"] for i in range(len(ds))}
        for i in range(0, len(ds), 25):
            s = ds[i]
            ship_type = Path(s.key).name.split("_x")[0]
            assert s.label == ship_type
            c = s.pixels.shape[0]
            assert (s.sensor, s.wavelengths) == (("sentinel1", (C_BAND_UM, C_BAND_UM * 1.05))
                                                 if c == 2 else ("sentinel1-vv", (C_BAND_UM,)))
            assert ("1SDV" in s.key) == (c == 2)
            assert TYPE_WORDS[ship_type] in s.captions[0] and "Sentinel-1" in s.captions[0]
    assert not scenes["train"] & scenes["test"]
    n_test = len(load("opensarship", "test", root=DATA))
    assert 0.1 <= n_test / (n_test + len(load("opensarship", "train", root=DATA))) <= 0.3


def test_hrsid_ship_count_from_mask():
    total = 0
    for split in ("train", "test"):
        ds = load("hrsid", split, root=DATA)
        total += len(ds)
        for i in range(len(ds)):
            s = ds[i]
            m = np.asarray(Image.open(DATA / "hrsid/masks" / (Path(s.key).stem + ".png")))
            _, n = ndimage.label(m.max(-1) > 127, structure=np.ones((3, 3)))
            assert n >= 1 and s.meta["ships"] == n
            assert re.search(rf"\b{n} ships?\b", s.captions[0]), s.captions[0]
            assert s.pixels.shape == (1, 400, 400)
    assert total == 36


def test_hyperspectral():
    from training.datasets.hsi import SALINAS_CLASSES, SAMSON_WORDS

    sal = load("salinas_a", "train", root=DATA)
    wl = sal[0].wavelengths
    full = np.linspace(0.4, 2.5, 224)
    assert len(wl) == 204 and wl[0] == pytest.approx(0.4, abs=1e-4)
    assert wl[-1] == pytest.approx(full[222], abs=1e-4)  # band 224 removed, 223 kept
    for removed in (108, 112, 154, 167):  # 1-based water-absorption bands are absent
        assert not np.isclose(wl, full[removed - 1], atol=1e-4).any()
    assert np.isclose(wl, full[106], atol=1e-4).any() and np.isclose(wl, full[167], atol=1e-4).any()
    gt = loadmat(DATA / "hsi/salinas_a_gt.mat")["salinasA_gt"]
    words = {v[0]: v[1] for v in SALINAS_CLASSES.values()}
    codes = {v[0]: k for k, v in SALINAS_CLASSES.items()}
    for split in ("train", "test"):
        ds = load("salinas_a", split, root=DATA)
        for i in range(0, len(ds), 7):
            s = ds[i]
            r, c = s.meta["row"], s.meta["col"]
            patch = gt[r:r + 16, c:c + 16]
            v, n = np.unique(patch[patch > 0], return_counts=True)
            assert codes[s.label] == v[n.argmax()]
            assert words[s.label] in s.captions[0]
            assert (c + 16 <= 69) if split == "train" else (c >= 69)
    for split in ("train", "test"):
        ds = load("samson", split, root=DATA)
        for i in range(0, len(ds), 11):
            s = ds[i]
            assert SAMSON_WORDS[s.label] in s.captions[0] and len(s.wavelengths) == 156
    assert len(load("jasper_ridge", "test", root=DATA)[0].wavelengths) == 198
    u = load("urban", "train", root=DATA)[0]
    assert len(u.wavelengths) == 162 and np.all(np.diff(u.wavelengths) > 0)


def test_sen1floods11_water_fraction_and_pairs(summaries):
    lab = rasterio.open(DATA / "sen1floods11/Labels/Spain_7370579_LabelHand.tif").read(1)
    for split in ("train", "test"):
        s1, s2 = summaries("sen1floods11_s1", split), summaries("sen1floods11_s2", split)
        assert [r["pair_key"] for r in s1] == [r["pair_key"] for r in s2]
        assert [r["label"] for r in s1] == [r["label"] for r in s2]
        ds = load("sen1floods11_s2", split, root=DATA)
        for i in range(0, len(ds), 5):
            s = ds[i]
            w = lab[s.meta["row"]:s.meta["row"] + 64, s.meta["col"]:s.meta["col"] + 64]
            frac = (w == 1).sum() / (w >= 0).sum()
            assert abs(_pct(s.captions[0]) - 100 * frac) <= 0.5, s.captions[0]
            assert s.pixels.shape == (13, 64, 64) and s.sensor == "sentinel2-l1c"


def test_bigearthnet():
    s2 = load("bigearthnet_s2", "train", root=DATA)
    s1 = load("bigearthnet_s1", "train", root=DATA)
    keys2 = {s2[i].pair_key for i in range(len(s2))}
    assert {s1[i].pair_key for i in range(len(s1))} == keys2 and len(keys2) == 6
    s = s2[0]
    assert s.pixels.shape == (12, 120, 120) and s.pixels.dtype == np.uint16
    assert s.wavelengths == get_sensor("sentinel2-l2a").wavelengths
    # the 20 m band B05 is repeated 2x2 from the file's 60x60 grid
    b05 = rasterio.open(Path(s.meta["path"]) / f"{Path(s.meta['path']).name}_B05.tif").read(1)
    assert np.array_equal(s.pixels[4, ::2, ::2], b05)
    from training.datasets.bigearthnet import corine_words
    for ds in (s1, s2):
        for i in range(len(ds)):
            x = ds[i]
            assert all(w in x.captions[0] for w in corine_words(x.meta["labels"]))


def test_elevation_relief_and_landcover():
    from training.datasets.elevation import relief_class

    n_nlcd = 0
    for split in ("train", "test"):
        ds = load("elevation", split, root=DATA)
        for i in range(len(ds)):
            s = ds[i]
            assert "zion_nlcd" not in s.key and s.wavelengths == (ELEVATION_UM,)
            assert s.pixels.shape == (1, 64, 64)
            if s.meta["product"] in ("dsm", "hag"):
                assert s.label is None
                continue
            z = s.pixels[0]
            lo, hi = round(float(z.min())), round(float(z.max()))
            assert f"heights from {lo} to {hi} m" in s.captions[1]
            st = {k[len("relief_"):]: v for k, v in s.meta.items() if k.startswith("relief_")}
            assert s.label == relief_class(st)
            if "zion/srtm" in s.key:
                assert "nlcd" in s.meta and "land cover" in s.captions[-1]
                n_nlcd += 1
    assert n_nlcd > 10


def test_scenes_unlabelled():
    ds = load("scenes_unlabelled", "train", root=DATA)
    sensors = Counter()
    for i in range(0, len(ds), 37):
        s = ds[i]
        assert s.captions == [] and s.label is None
        assert s.wavelengths == get_sensor(s.sensor).wavelengths
        assert s.modality == get_sensor(s.sensor).modality
        assert "elevation" not in s.key and "labels/" not in s.key and "-dem" not in s.key
        sensors[s.sensor] += 1
    assert len(sensors) >= 3


def test_scene_sets_aid_ucm_uavic():
    """AID and UCM: one class per folder; UCM train captions are the human ones from
    captions.tsv (read here independently), test has none; UAVIC: captions only, no labels."""
    import csv

    aid = load("aid", "val", root=DATA)
    assert len(aid.classes) == 30 and len(aid) == 2000
    s = aid[0]
    assert s.label == Path(s.key).parent.name and s.modality == "rgb" and s.pixels.shape[0] == 3
    human: dict[str, list[str]] = {}
    with open(DATA / "ucm" / "captions.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            human.setdefault(row["path"], []).append(row["caption"].strip())
    tr = load("ucm", "train", root=DATA)
    assert len(tr.classes) == 21 and len(tr) == 1680
    for i in (0, 777, len(tr) - 1):
        s = tr[i]
        rel = s.key.removeprefix("ucm/")
        assert set(human[rel]) <= set(s.captions) and s.label == Path(rel).parent.name
    te = load("ucm", "test", root=DATA)
    assert len(te) == 420 and not any(k.startswith("test/") for k in human)
    assert all(c not in set(sum(human.values(), [])) for c in te[0].captions)
    uav = load("uavic", "train", root=DATA)
    s = uav[0]
    assert s.label is None and len(s.captions) >= 3
    total = len(uav) + len(load("uavic", "test", root=DATA))
    assert total == len({r["path"] for r in csv.DictReader(open(DATA / "uavic" / "captions.tsv"),
                                                           delimiter="\t")})
    with pytest.raises(FileNotFoundError, match="aid"):
        load("aid", "train", root=DATA / "nowhere")


def test_training_configs_never_train_on_evaluation_splits():
    from training.train import load_config

    for p in sorted((Path(__file__).resolve().parents[1] / "training" / "configs").glob("*.json")):
        cfg = load_config(p)
        for src in ("aid", "ucm", "uavic"):
            if src in cfg.get("sources", {}):
                assert cfg["sources"][src].get("split", "train") == "train", (p.name, src)
