"""Held-out labelled pools for the simulated-analyst benchmark (glb/bench/feedback.py).

Each pool is one dataset split embedded through the public encoder path (the same one indexing
uses), with a boolean relevance matrix (tiles x classes) and one text prompt per class: what
an analyst would type. Embeddings are cached under $GLB_BENCH_DIR/feedback/<encoder identity>/,
so a new encoder re-embeds and an unchanged one does not.

Pools (held out from training): aid/val, ucm/test (RGB scene classes, loaded here: no training
loader reads them), EuroSAT-MS test, OMBRIA test S1 and S2, MSTAR val, HIT-UAV test (day /
night and the objects in the frame: people, cars, bicycles).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RGB_UM = (0.665, 0.56, 0.49)
POOLS = ("aid_val", "ucm_test", "eurosat_ms_test", "ombria_s1_test", "ombria_s2_test",
         "mstar_val", "hit_uav_test")


@dataclass
class Pool:
    name: str
    modality: str
    vectors: np.ndarray        # (n, d) float32, unit rows
    relevant: np.ndarray       # (n, c) bool
    classes: list[str]
    prompts: list[str]         # one per class


def bench_dir() -> Path:
    return Path(os.environ.get("GLB_BENCH_DIR", "/tmp/glb-bench"))


def _words(name: str) -> str:
    """'DenseResidential' -> 'dense residential'; 'baseballdiamond' stays as it is."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).lower()


UCM_WORDS = {"baseballdiamond": "baseball diamond", "denseresidential": "dense residential",
             "golfcourse": "golf course", "mediumresidential": "medium residential",
             "mobilehomepark": "mobile home park", "parkinglot": "parking lot",
             "sparseresidential": "sparse residential", "storagetanks": "storage tanks",
             "tenniscourt": "tennis court"}


def _folder_pool(root: Path, words) -> tuple[list, list[str], list[str], list[int]]:
    from PIL import Image

    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    arrs, labels = [], []
    for ci, c in enumerate(classes):
        for f in sorted((root / c).glob("*.jpg")):
            with Image.open(f) as im:
                arrs.append(np.asarray(im.convert("RGB")).transpose(2, 0, 1).copy())
            labels.append(ci)
    prompts = [f"an aerial image of {words(c)}" for c in classes]
    return arrs, classes, prompts, labels


def _embed_groups(encoder, arrs, wavelengths, modality, batch=64) -> np.ndarray:
    out = np.zeros((len(arrs), encoder.dim), np.float32)
    groups: dict = {}
    for i, a in enumerate(arrs):
        groups.setdefault(a.shape, []).append(i)
    for idx in groups.values():
        for j in range(0, len(idx), batch):
            sel = idx[j:j + batch]
            out[sel] = encoder.encode_image(np.stack([arrs[i] for i in sel]), list(wavelengths), modality)
    return out


DATASET_POOLS = {"eurosat_ms_test": ("eurosat_ms", "test"), "ombria_s1_test": ("ombria_s1", "test"),
                 "ombria_s2_test": ("ombria_s2", "test"), "mstar_val": ("mstar", "val"),
                 "hit_uav_test": ("hit_uav", "test")}
HIT_UAV_OBJECTS = (("Person", "people"), ("Car", "cars"), ("Bicycle", "bicycles"))


def _build(name: str, encoder, data_root: Path) -> dict:
    if name in ("aid_val", "ucm_test"):
        sub = ("aid", "val") if name == "aid_val" else ("ucm", "test")
        words = _words if name == "aid_val" else (lambda c: UCM_WORDS.get(c, c))
        arrs, classes, prompts, labels = _folder_pool(data_root.joinpath(*sub), words)
        vec = _embed_groups(encoder, arrs, RGB_UM, "rgb")
        rel = np.zeros((len(arrs), len(classes)), bool)
        rel[np.arange(len(arrs)), labels] = True
        return {"vectors": vec, "relevant": rel, "classes": classes, "prompts": prompts, "modality": "rgb"}
    from training.datasets import load
    from training.evaluate import embed_dataset

    ds = load(*DATASET_POOLS[name], root=data_root)
    vec, labels, _ = embed_dataset(encoder, ds)
    classes = list(ds.classes)
    rel = np.array([[lab == c for c in classes] for lab in labels], bool)
    if ds.name == "hit_uav":  # objects in the frame, as an analyst would look for them
        counts = [ds[i].meta["counts"] for i in range(len(ds))]
        for key, word in HIT_UAV_OBJECTS:
            classes.append(word)
            rel = np.concatenate([rel, np.array([[c.get(key, 0) > 0] for c in counts], bool)], 1)
    return {"vectors": vec, "relevant": rel, "classes": classes, "prompts": _dataset_prompts(ds, classes),
            "modality": ds.modality}


def _dataset_prompts(ds, classes: list[str]) -> list[str]:
    """One text prompt per class: the dataset's first zero-shot prompt (its class wording as the
    evaluation has it now), or the object a HIT-UAV frame holds."""
    first = {c: ps[0] for c, ps in ds.prompts().items()}
    return [first[c] if c in first else f"a thermal infrared drone image of {c}" for c in classes]


def load_pool(name: str, encoder, data_root: Path | None = None, echo=print) -> Pool:
    """The pool's embeddings and labels, from the cache when this encoder made them."""
    import json

    if data_root is None:
        data_root = Path(os.environ.get("GLB_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
    cache = bench_dir() / "feedback" / encoder.identity.replace("/", "_") / f"{name}.npz"
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        d = {"vectors": z["vectors"], "relevant": z["relevant"], **meta}
        if name in DATASET_POOLS:  # the prompts as the dataset words them now, not when cached
            from training.datasets import load

            d["prompts"] = _dataset_prompts(load(*DATASET_POOLS[name], root=Path(data_root)), d["classes"])
    else:
        import time

        t0 = time.time()
        d = _build(name, encoder, Path(data_root))
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.tmp.npz")
        np.savez(tmp, vectors=d["vectors"], relevant=d["relevant"],
                 meta=json.dumps({k: d[k] for k in ("classes", "prompts", "modality")}))
        os.replace(tmp, cache)
        echo(f"embedded {name}: {len(d['vectors'])} tiles in {time.time() - t0:.0f} s")
    v = np.asarray(d["vectors"], np.float32)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return Pool(name, d["modality"], v, np.asarray(d["relevant"], bool), list(d["classes"]),
                list(d["prompts"]))


if __name__ == "__main__":  # embed every pool once (fills the cache)
    import sys

    from engine.encoder import load_encoder

    enc = load_encoder()
    for n in (sys.argv[1:] or POOLS):
        p = load_pool(n, enc, echo=lambda m: print(m, flush=True))
        print(n, p.vectors.shape, p.relevant.sum(0).tolist(), flush=True)
