"""Everything frozen is computed once: preprocessed 64 x 64 student inputs (the engine's own
`Encoder.preprocess`, so training sees exactly what indexing feeds the model), teacher patch
features on the same view, and MiniLM embeddings of every caption and prompt. Training then
runs the student alone. Cached per (sources, caps, teachers) under runs/cache/.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.encoder.factory import Encoder
from engine.store.files import atomic_write

log = logging.getLogger("glb.train.cache")
CACHE_VERSION = 5
DEV_FRACTION = 10  # 1 in 10 training samples of a labelled source is held out as "dev" (merging)


@dataclass
class Group:
    """Samples of one source with one band layout."""

    source: str
    modality: str
    sensor: str
    wavelengths: torch.Tensor
    x: torch.Tensor                                   # (N, C, S, S) float16, standardised
    caption_ids: list[list[int]]
    label_ids: torch.Tensor                           # (N,) global label id, -1 = none
    keys: list[str]
    dev: torch.Tensor                                 # (N,) bool: held out for merging
    teachers: dict[str, torch.Tensor] = field(default_factory=dict)     # name -> (N, 64, D) f16
    teacher_mask: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (N,) bool

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass
class Cache:
    groups: list[Group]
    captions: list[str]
    caption_emb: torch.Tensor                         # (n_captions, 384)
    labels: list[tuple[str, str]]                     # global label id -> (source, class)
    prompts: dict[str, dict[str, list[int]]]          # source -> class -> caption ids of prompts
    teacher_dims: dict[str, int]
    teacher_stats: dict[str, tuple[torch.Tensor, torch.Tensor]]
    info: dict


def _is_dev(key: str) -> bool:
    return zlib.crc32(key.encode()) % DEV_FRACTION == 0


# Evaluation splits whose places must not be trained on through a sibling source (EuroSAT RGB
# and MS share patches; their pair_key is the file stem).
EVALUATION_SPLITS = {"eurosat_rgb": "val", "eurosat_ms": "test"}


def _family(source: str) -> str:
    return source.split("_")[0]


def held_out_pair_keys(splits: dict[str, str]) -> dict[str, set[str]]:
    from training.datasets import load as load_dataset

    out: dict[str, set[str]] = {}
    for source, split in splits.items():
        ds = load_dataset(source, split)
        keys = out.setdefault(_family(source), set())
        for i in range(len(ds)):
            pk = ds.pair_key_of(i) if hasattr(ds, "pair_key_of") else ds[i].pair_key
            if pk is not None:
                keys.add(pk)
    return out


def cache_key(cfg: dict) -> str:
    d = {"v": CACHE_VERSION, "sources": cfg["sources"],
         "max_per_source": cfg.get("max_per_source"), "teachers": sorted(cfg.get("teachers", [])),
         "max_captions": cfg.get("max_captions_per_sample"),
         "seed": cfg.get("seed", 0)}
    if cfg.get("model_overrides"):  # e.g. the input sizes: what the cached pixels are
        d["model_overrides"] = cfg["model_overrides"]
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def build_cache(cfg: dict, encoder: Encoder, cache_dir: Path, log_fn=print) -> Cache:
    path = cache_dir / f"cache-{cache_key(cfg)}.pt"
    if path.exists():
        log_fn(f"cache: loading {path}")
        return torch.load(path, weights_only=False)
    from training.datasets import load as load_dataset

    from .teachers import CSMaskTeacher, EfficientNetLiteTeacher, rgb_view

    t0 = time.time()
    teachers = {}
    for name in cfg.get("teachers", []):
        if name == "effnet_lite0":
            teachers[name] = EfficientNetLiteTeacher("lite0")
        elif name == "effnet_lite2":
            teachers[name] = EfficientNetLiteTeacher("lite2")
        elif name == "csmask_s2":
            teachers[name] = CSMaskTeacher(cache_dir)
        else:
            raise ValueError(f"unknown teacher {name!r}")
    captions: dict[str, int] = {}
    labels: dict[tuple[str, str], int] = {}
    prompts: dict[str, dict[str, list[int]]] = {}

    def cap_id(text: str) -> int:
        return captions.setdefault(text, len(captions))

    rng = np.random.default_rng(cfg.get("seed", 0))
    held_out = held_out_pair_keys(cfg.get("evaluation_splits", EVALUATION_SPLITS))
    dropped = 0
    groups: dict[tuple, dict] = {}
    cap = cfg.get("max_per_source")
    # captions kept per sample (all when unset): embedding them is a large share of a CPU run
    max_caps = cfg.get("max_captions_per_sample")
    for source, spec in cfg["sources"].items():
        ds = load_dataset(source, spec.get("split", "train"))
        n = len(ds)
        idx = np.arange(n)
        limit = spec.get("max", cap)
        if limit and n > limit:
            idx = np.sort(rng.choice(n, limit, replace=False))
        if ds.classes:
            prompts[source] = {c: [cap_id(p) for p in ps] for c, ps in ds.prompts().items()}
        ts = time.time()
        for i in idx:
            s = ds[int(i)]
            if s.pair_key is not None and s.pair_key in held_out.get(_family(source), ()):
                dropped += 1  # the same place is in an evaluation split of a sibling source
                continue
            x, _ = encoder.preprocess(s.pixels, s.wavelengths, s.modality)
            # one group per band layout and input size (the encoder may keep larger inputs larger)
            key = (s.source, tuple(round(w, 6) for w in s.wavelengths), s.modality, x.shape[-1])
            g = groups.setdefault(key, {"sensor": s.sensor, "x": [], "caps": [], "labels": [],
                                        "keys": [], "views": [], "refl": []})
            g["x"].append(x[0].half())
            caps = s.captions
            if max_caps and len(caps) > max_caps:  # a seeded choice per sample keeps every
                pick = np.random.default_rng(zlib.crc32(s.key.encode())).choice(  # phrasing in the pool
                    len(caps), max_caps, replace=False)
                caps = [caps[j] for j in sorted(pick)]
            g["caps"].append([cap_id(c) for c in caps])
            g["labels"].append(labels.setdefault((s.source, s.label), len(labels)) if s.label is not None else -1)
            g["keys"].append(s.key)
            if any(n.startswith("effnet") for n in teachers):
                v = torch.from_numpy(rgb_view(s.pixels, s.wavelengths, s.modality)).float()[None]
                g["views"].append(F.interpolate(v, size=(128, 128), mode="bilinear",
                                                antialias=True, align_corners=False)[0].byte())
            cs = teachers.get("csmask_s2")
            if cs is not None and cs.applies(s.wavelengths, s.modality):
                r = torch.from_numpy(cs.reflectance(s.pixels, s.wavelengths))[None]
                g["refl"].append(F.interpolate(r, size=(64, 64), mode="bilinear", antialias=True,
                                               align_corners=False)[0])
            else:
                g["refl"].append(None)
        log_fn(f"cache: {source}: {len(idx)} samples in {time.time() - ts:.0f} s")
    if dropped:
        log_fn(f"cache: dropped {dropped} training samples that share a place with an evaluation split")
    out_groups = []
    for (source, wl, modality, _), g in groups.items():
        n = len(g["x"])
        grp = Group(source=source, modality=modality, sensor=g["sensor"],
                    wavelengths=torch.tensor(wl, dtype=torch.float32), x=torch.stack(g["x"]),
                    caption_ids=g["caps"], label_ids=torch.tensor(g["labels"], dtype=torch.long),
                    keys=g["keys"], dev=torch.tensor([bool(c) and _is_dev(k) for k, c in zip(g["keys"], g["caps"])]))
        for name, t in teachers.items():
            feats = torch.zeros(n, 64, t.dim, dtype=torch.float16)
            mask = torch.zeros(n, dtype=torch.bool)
            for i in range(0, n, 64):
                if name.startswith("effnet"):
                    feats[i:i + 64] = t(torch.stack(g["views"][i:i + 64]).numpy()).half()
                    mask[i:i + 64] = True
                else:
                    rows = [j for j in range(i, min(n, i + 64)) if g["refl"][j] is not None]
                    if rows:
                        feats[rows] = t(torch.stack([g["refl"][j] for j in rows]).numpy()).half()
                        mask[rows] = True
            if mask.any():
                grp.teachers[name], grp.teacher_mask[name] = feats, mask
        out_groups.append(grp)
    # Per-teacher channel statistics over training (non-dev) tokens, for standardised targets.
    stats = {}
    for name in teachers:
        parts = [g.teachers[name][g.teacher_mask[name] & ~g.dev].float().reshape(-1, g.teachers[name].shape[-1])
                 for g in out_groups if name in g.teachers]
        if parts:
            allf = torch.cat(parts)
            stats[name] = (allf.mean(0), allf.std(0).clamp(min=1e-3))
    text = list(captions)
    log_fn(f"cache: embedding {len(text)} captions and prompts")
    emb = torch.zeros(len(text), encoder.dim)
    if text:  # by length, so each batch pads little (human captions vary from 3 to 40 words)
        order = sorted(range(len(text)), key=lambda i: len(text[i]))
        emb[order] = torch.from_numpy(encoder.encode_text([text[i] for i in order]))
    cache = Cache(out_groups, text, emb, [k for k, _ in sorted(labels.items(), key=lambda kv: kv[1])],
                  prompts, {n: t.dim for n, t in teachers.items()}, stats,
                  {"built_s": time.time() - t0, "samples": sum(len(g) for g in out_groups),
                   "key": cache_key(cfg)})
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: torch.save(cache, p), durable=False)
    log_fn(f"cache: {cache.info['samples']} samples, {len(out_groups)} groups, built in {cache.info['built_s']:.0f} s")
    return cache
