"""`glb eval [--checkpoint F | --encoder NAME --weights DIR]`: held-out evaluation through the
engine's public encoder path (the same preprocessing as indexing), written as one table
(markdown + JSON). `--paper DIR` adds a zero-shot run on the paper's benchmark images laid out
as DIR/<dataset>/<class name>/<image> (see `paper_zero_shot`).

Tasks: zero-shot top-1 from class-name prompts (prompt-ensembled) per dataset; OMBRIA test
Sentinel-1 -> Sentinel-2 retrieval of the same chip and phase (R@1, R@10); "flooded land" text ->
image average precision over OMBRIA test. Every number has its chance level beside it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

ZERO_SHOT = [
    ("eurosat_rgb", "val"),
    ("eurosat_ms", "test"),
    ("mstar", "val"),
    ("ombria_s1", "test"),
    ("ombria_s2", "test"),
    ("harvey", "test"),
    ("hit_uav", "test"),
    ("aid", "val"),
    ("ucm", "test"),
]
# "more like this": k labelled images per class, the rest classified by the nearest class
# centroid of image embeddings (no text), averaged over seeded episodes
FEW_SHOT = [("aid", "val"), ("ucm", "test")]
SHOTS, EPISODES = 5, 10
ALL_TASKS = ([f"zs:{d}" for d, _ in ZERO_SHOT] + ["retrieval:ombria_s1_s2", "text_ap:ombria_flooded"]
             + [f"fewshot:{d}" for d, _ in FEW_SHOT])
QUICK_LIMIT = 60  # `glb eval --quick`: at most this many evenly spaced images per split


def subset(n: int, limit: int | None) -> list[int]:
    if not limit or n <= limit:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist()))


def embed_dataset(encoder, ds, batch: int = 128, limit: int | None = None):
    """-> (embeddings (N, d), samples' labels, pair keys)."""
    groups: dict[tuple, list[int]] = {}
    samples = [ds[i] for i in subset(len(ds), limit)]
    for i, s in enumerate(samples):
        groups.setdefault((tuple(s.wavelengths), s.modality, s.pixels.shape), []).append(i)
    out = np.zeros((len(samples), encoder.dim), np.float32)
    for (wl, modality, _), idx in groups.items():
        for j in range(0, len(idx), batch):
            sel = idx[j:j + batch]
            arr = np.stack([samples[i].pixels for i in sel])
            out[sel] = encoder.encode_image(arr, list(wl), modality)
    return out, [s.label for s in samples], [s.pair_key for s in samples]


def class_embeddings(encoder, ds) -> tuple[list[str], np.ndarray]:
    return prompt_embeddings(encoder, ds.prompts())


def prompt_embeddings(encoder, prompts: dict[str, list[str]]) -> tuple[list[str], np.ndarray]:
    """class -> phrasings  ->  (class names, their unit mean-of-phrasings text embeddings)."""
    names = list(prompts)
    embs = []
    for c in names:
        e = encoder.encode_text(prompts[c]).mean(0)
        embs.append(e / np.linalg.norm(e))
    return names, np.stack(embs)


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    order = np.argsort(-scores)
    pos = positive[order].astype(float)
    if pos.sum() == 0:
        return float("nan")
    hits = np.cumsum(pos)
    return float((hits / np.arange(1, len(pos) + 1) * pos).sum() / pos.sum())


def few_shot_accuracy(e: np.ndarray, labels: list, shots: int = SHOTS, episodes: int = EPISODES,
                      seed: int = 0) -> tuple[float, int]:
    """Mean nearest-centroid accuracy over episodes -> (accuracy, queries per episode)."""
    rng = np.random.default_rng(seed)
    labels = np.array(labels, dtype=object)
    classes = sorted(set(labels.tolist()))
    accs, nq = [], 0
    for _ in range(episodes):
        support, query = [], []
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            support.append(idx[:shots])
            query.append(idx[shots:])
        cent = np.stack([e[s].mean(0) for s in support])
        cent /= np.linalg.norm(cent, axis=1, keepdims=True)
        q = np.concatenate(query)
        truth = np.concatenate([[ci] * len(qq) for ci, qq in enumerate(query)])
        accs.append(float(((e[q] @ cent.T).argmax(1) == truth).mean()))
        nq = len(q)
    return float(np.mean(accs)), nq


def run(encoder, tasks: list[str] | None = None, log=print, limit: int | None = None) -> list[dict]:
    from training.datasets import load

    tasks = tasks or ALL_TASKS
    rows = []
    cache: dict[tuple, tuple] = {}

    def emb(name, split):
        if (name, split) not in cache:
            ds = load(name, split)
            cache[(name, split)] = (ds, *embed_dataset(encoder, ds, limit=limit))
        return cache[(name, split)]

    for name, split in ZERO_SHOT:
        if f"zs:{name}" not in tasks:
            continue
        t0 = time.time()
        ds, e, labels, _ = emb(name, split)
        names, ce = class_embeddings(encoder, ds)
        pred = (e @ ce.T).argmax(1)
        ok = [names[p] == l for p, l in zip(pred, labels) if l is not None]
        counts = {c: sum(1 for l in labels if l == c) for c in names}
        rows.append({"task": f"zero-shot {name} {split} ({len(names)} classes)", "metric": "top-1",
                     "value": float(np.mean(ok)), "chance": 1.0 / len(names),
                     "majority": max(counts.values()) / max(1, len(ok)), "n": len(ok)})
        log(f"eval {rows[-1]['task']}: {rows[-1]['value']:.3f} ({time.time() - t0:.0f} s)")
    if "retrieval:ombria_s1_s2" in tasks:
        _, e1, _, k1 = emb("ombria_s1", "test")
        _, e2, _, k2 = emb("ombria_s2", "test")
        where = {k: i for i, k in enumerate(k2)}
        q = [i for i, k in enumerate(k1) if k in where]
        sims = e1[q] @ e2.T
        target = np.array([where[k1[i]] for i in q])
        rank = (sims > sims[np.arange(len(q)), target][:, None]).sum(1)
        for kk in (1, 10):
            rows.append({"task": "OMBRIA test S1 -> S2 partner retrieval", "metric": f"R@{kk}",
                         "value": float(np.mean(rank < kk)), "chance": kk / e2.shape[0],
                         "majority": None, "n": len(q)})
        log(f"eval S1->S2: R@1 {rows[-2]['value']:.3f} R@10 {rows[-1]['value']:.3f}")
    if "text_ap:ombria_flooded" in tasks:
        q = encoder.encode_text(["flooded land"])[0]
        for sensors in (("ombria_s1",), ("ombria_s2",), ("ombria_s1", "ombria_s2")):
            es, pos = [], []
            for sname in sensors:
                ds, e, labels, _ = emb(sname, "test")
                es.append(e)
                pos += [l == "flooded" for l in labels]
            scores = np.concatenate(es) @ q
            pos = np.array(pos)
            rows.append({"task": f"text 'flooded land' -> {'+'.join(s[-2:].upper() for s in sensors)} OMBRIA test",
                         "metric": "AP", "value": average_precision(scores, pos),
                         "chance": float(pos.mean()), "majority": None, "n": int(len(pos))})
            log(f"eval {rows[-1]['task']}: AP {rows[-1]['value']:.3f}")
    for name, split in FEW_SHOT:
        if f"fewshot:{name}" not in tasks:
            continue
        ds, e, labels, _ = emb(name, split)
        shots = SHOTS if not limit else 1
        acc, nq = few_shot_accuracy(e, labels, shots=shots)
        n_cls = len(set(labels))
        rows.append({"task": f"{shots}-shot nearest centroid {name} {split} ({n_cls} classes, "
                             f"image embeddings, {EPISODES} episodes)", "metric": "top-1",
                     "value": acc, "chance": 1.0 / n_cls, "majority": None, "n": nq})
        log(f"eval {rows[-1]['task']}: {acc:.3f}")
    return rows


def measure_speed(encoder, tiles: int = 1024, batch: int = 64, repeats: int = 5,
                  side: int = 64) -> dict:
    """Tiles of side x side, 64 by default: the index's tile size (13-band Sentinel-2, uint16, the archive's widest common layout, and
    3-band RGB) embedded per second through the public encode_image path, median of repeats."""
    import torch

    rng = np.random.default_rng(0)
    out = {"threads": torch.get_num_threads(), "device": str(encoder.device), "repeats": repeats,
           "tiles": tiles, "side": side}
    layouts = {"rgb": (np.array([0.665, 0.56, 0.49]), np.uint8, 255),
               "multispectral": (np.array([0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842,
                                           0.865, 0.945, 1.375, 1.61, 2.19]), np.uint16, 6000)}
    for name, (wl, dtype, hi) in layouts.items():
        x = rng.integers(0, hi, (tiles, len(wl), side, side)).astype(dtype)
        encoder.encode_image(x[:batch], wl, name, batch_size=batch)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            encoder.encode_image(x, wl, name, batch_size=batch)
            times.append(time.perf_counter() - t0)
        rates = sorted(tiles / t for t in times)
        out[name] = {"tiles_per_s": rates[len(rates) // 2], "min": rates[0], "max": rates[-1]}
    return out


def to_markdown(rows: list[dict], title: str) -> str:
    lines = [f"### {title}", "", "| task | metric | ours | chance | majority | n |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        maj = f"{100 * r['majority']:.1f}" if r.get("majority") is not None else ""
        lines.append(f"| {r['task']} | {r['metric']} | {100 * r['value']:.1f} | "
                     f"{100 * r['chance']:.1f} | {maj} | {r['n']} |")
    return "\n".join(lines) + "\n"


PAPER_TEMPLATES = ("a satellite image of {}.", "an aerial image of {}.",
                   "a remote sensing image of {}.")
PAPER_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
RGB_WAVELENGTHS = (0.665, 0.56, 0.49)


def paper_zero_shot(encoder, root: str | Path, log=print, batch: int = 64) -> list[dict]:
    """Zero-shot top-1 on benchmark images as the paper reports them (EuroSAT, AID, RESISC45,
    PatternNet, ...). Layout: root/<dataset>/<class name>/<image>; class names are the folder
    names with '_' read as spaces; images are read by the engine (PNG/JPEG as RGB with
    wavelengths 0.665, 0.56, 0.49 µm; a GeoTIFF by its own metadata, or by
    root/<dataset>/wavelengths.txt, one µm value per band, comma-separated). Text: the mean
    embedding of PAPER_TEMPLATES per class. Comparable to the paper's table, not identical:
    the authors' prompt templates and image resizing are not published with the weights."""
    from engine.raster import read_image

    root = Path(root)
    if not root.is_dir():
        from engine.errors import InputError

        raise InputError(f"--paper {root}: no such folder (expected {root}/<dataset>/<class>/<image>)")
    rows = []
    for ds_dir in sorted(d for d in root.iterdir() if d.is_dir()):
        classes = sorted(d for d in ds_dir.iterdir() if d.is_dir())
        if len(classes) < 2:
            log(f"paper {ds_dir.name}: skipped (needs at least two class folders)")
            continue
        wl_file = ds_dir / "wavelengths.txt"
        wl = [float(v) for v in wl_file.read_text().replace("\n", ",").split(",") if v.strip()] \
            if wl_file.is_file() else None
        names = [c.name.replace("_", " ") for c in classes]
        ce = []
        for n in names:
            e = encoder.encode_text([t.format(n) for t in PAPER_TEMPLATES]).mean(0)
            ce.append(e / np.linalg.norm(e))
        ce = np.stack(ce)
        t0 = time.time()
        correct = total = 0
        groups: dict[tuple, list[tuple[np.ndarray, int]]] = {}
        for ci, c in enumerate(classes):
            for f in sorted(c.iterdir()):
                if f.suffix.lower() not in PAPER_IMAGE_SUFFIXES:
                    continue
                is_plain = f.suffix.lower() not in (".tif", ".tiff")
                bands = wl or (RGB_WAVELENGTHS if is_plain else None)
                arr, lay = read_image(f, wavelengths=bands, modality=None if bands is None else
                                      ("rgb" if len(bands) <= 3 else "multispectral"))
                key = (lay.wavelengths, lay.modality, arr.shape)
                groups.setdefault(key, []).append((arr, ci))
                if len(groups[key]) >= batch:
                    correct += _score(encoder, key, groups.pop(key), ce)
                    total += batch
        for key, items in groups.items():
            correct += _score(encoder, key, items, ce)
            total += len(items)
        if total:
            rows.append({"task": f"paper zero-shot {ds_dir.name} ({len(names)} classes)",
                         "metric": "top-1", "value": correct / total, "chance": 1.0 / len(names),
                         "majority": None, "n": total})
            log(f"eval {rows[-1]['task']}: {rows[-1]['value']:.3f} ({time.time() - t0:.0f} s)")
    return rows


def _score(encoder, key, items, class_emb) -> int:
    wl, modality, _ = key
    e = encoder.encode_image(np.stack([a for a, _ in items]), list(wl), modality)
    pred = (e @ class_emb.T).argmax(1)
    return int(sum(int(p == ci) for p, (_, ci) in zip(pred, items, strict=True)))


def main(checkpoint: str | None, out: str | None = None, tasks: list[str] | None = None,
         exclude_train: list[str] | None = None, speed: bool | None = None, encoder=None,
         paper: str | None = None, paper_only: bool = False, quick: bool = False) -> int:
    """quick: every task on at most QUICK_LIMIT images per split (1-shot for the few-shot
    rows) and a short speed measurement: the smoke test of CI, not the model card's numbers.
    paper: also the paper-comparable zero-shot rows (paper_zero_shot); paper_only skips ours."""
    from engine.encoder import load_encoder

    enc = encoder if encoder is not None else load_encoder(checkpoint)
    t0 = time.time()
    rows = [] if (paper and paper_only) else run(enc, tasks, limit=QUICK_LIMIT if quick else None)
    if paper:
        rows += paper_zero_shot(enc, paper)
    title = f"{enc.name} ({enc.identity})" + (f", trained without {', '.join(exclude_train)}" if exclude_train else "")
    if quick:
        title += f", QUICK (at most {QUICK_LIMIT} images per split)"
    md = to_markdown(rows, title)
    if speed is None:  # 1024 tiles through a 224/384 px ViT on a CPU would take many minutes
        speed = enc.image_size <= 64 or str(enc.device).startswith("cuda")
    perf = (measure_speed(enc, tiles=128, repeats=1) if quick else measure_speed(enc)) if speed else None
    if perf:
        md += (f"\nEncoder speed ({perf['device']}, {perf['threads']} threads, batch 64, "
               f"median of {perf['repeats']}, {perf['tiles']} tiles): "
               f"{perf['rgb']['tiles_per_s']:.0f} RGB tiles/s, "
               f"{perf['multispectral']['tiles_per_s']:.0f} 13-band tiles/s (64 x 64 px).\n")
    print(md)
    if out:
        p = Path(out)
        p.mkdir(parents=True, exist_ok=True)
        (p / "eval.md").write_text(md)
        (p / "eval.json").write_text(json.dumps({"checkpoint": checkpoint, "identity": enc.identity,
                                                 "encoder": enc.describe(),
                                                 "seconds": time.time() - t0, "rows": rows,
                                                 "speed": perf}, indent=1))
    return 0


if __name__ == "__main__":
    # python -m training.evaluate speed [CHECKPOINT ...]: tiles/s of each checkpoint (default: the
    # released one; 512 tiles, median of 3), measured one after the other in this process, so
    # the shared machine's load is as alike as it can be between them
    import sys

    from engine.encoder import load_encoder

    if len(sys.argv) < 2 or sys.argv[1] != "speed":
        raise SystemExit("usage: python -m training.evaluate speed [--side N] [--tiles N] "
                         "[CHECKPOINT | untrained:MODEL ...]")
    args, side, tiles = sys.argv[2:], 64, 512
    while args[:1] in (["--side"], ["--tiles"]):  # fewer tiles: large sides are slow per tile
        if args[0] == "--side":
            side = int(args[1])
        else:
            tiles = int(args[1])
        args = args[2:]
    for ck in args or [None]:
        if ck is not None and ck.startswith("untrained:"):
            # a trunk's speed before any training: the wheel's ImageNet trunk, the head at its
            # initialisation (a few matrix products: its values do not change the rate)
            from engine.encoder import get_model_config
            from engine.encoder.factory import Encoder

            from .model import pretrained_effnet_tower

            cfg = get_model_config(ck.removeprefix("untrained:"))
            e = Encoder(pretrained_effnet_tower(cfg), cfg.text, name=f"{cfg.name}-untrained-head",
                        trained=False, device="cpu")
        else:
            e = load_encoder(ck, device="cpu")
        print(json.dumps({"identity": e.identity, **measure_speed(e, tiles=tiles, repeats=3, side=side)}))
