"""`glb bench index`: indexing throughput, end to end against the encoder alone.

- end to end: the real `run_index` over ../shared/data/scenes with the sample rules (read,
  tile, drop no-data, normalise, thumbnail, embed, store), into a fresh index each run;
- ceiling: `Encoder.embed_preprocessed` alone over the same tiles, preprocessed beforehand and
  held in memory as the batches the indexer makes.
Both in tiles per second, median over runs with spread, same process, same encoder.
On a GPU (when CUDA is present) also: batch size swept in bf16, the model's FLOPs per tile
(PyTorch's FLOP counter), achieved FLOP/s against the card's measured bf16 matmul peak.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import loadavg, median_spread

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RULES = ROOT / "indexer" / "archives" / "sample.toml"


def data_dir() -> Path:
    return Path(os.environ.get("GLB_DATA", ROOT.parent / "shared" / "data")).resolve()


def sample_archive(smoke: bool = False) -> tuple[list[Path], Path]:
    """The scenes and rules an indexing benchmark reads: the sample archive, or two small
    scenes for a smoke run."""
    scenes = data_dir() / "scenes"
    if smoke:
        return [scenes / "elevation" / "dsm.tif", scenes / "zion" / "dem.tif"], SAMPLE_RULES
    return [scenes], SAMPLE_RULES


def _collect_batches(paths, rules, encoder, batch_size: int):
    """The indexer's own reader, run once: preprocessed batches held in memory."""
    from indexer.reader import SceneResult, TileOptions, read_scene
    from indexer.rules import load_rules
    from indexer.sources import discover

    found = discover(paths, load_rules(rules), None)
    batches = []
    for i, src in enumerate(found.sources):
        if src.kind != "scene":
            continue
        try:
            for b in read_scene(i, src, encoder, TileOptions(batch_size=batch_size), SceneResult(src)):
                batches.append((b.x, b.wavelengths, b.layout.modality))
        except Exception:  # noqa: BLE001 - files the indexer refuses are not part of either figure
            continue
    return batches


def _embed_all(encoder, batches, sync=None, autocast=None) -> float:
    import contextlib

    t0 = time.perf_counter()
    ctx = autocast or contextlib.nullcontext
    with ctx():
        for x, wl, mod in batches:
            encoder.embed_preprocessed(x, wl, mod)
    if sync:
        sync()
    return time.perf_counter() - t0


def run(smoke: bool = False, repeats: int = 3, echo=print) -> dict:
    import torch

    from engine.encoder import load_encoder
    from indexer.runner import IndexOptions, run_index

    paths, rules = sample_archive(smoke)
    if smoke:
        repeats = 1
    out = {"paths": [str(p) for p in paths], "rules": str(rules), "loadavg_start": loadavg(),
           "torch_threads": torch.get_num_threads(), "device": "cpu"}
    enc = load_encoder(device="cpu")
    batch_size = 64
    # the reader alone (read, tile, no-data, normalise, footprints, thumbnails, overviews), once
    # as warm-up and to hold its batches: the ceiling's input
    t0 = time.perf_counter()
    batches = _collect_batches(paths, rules, enc, batch_size)
    n_tiles = sum(int(x.shape[0]) for x, _, _ in batches)
    _embed_all(enc, batches[:2])  # warm-up
    # ceiling and end to end interleaved (the machine is shared: drift hits both alike)
    ceil, e2e, secs, reader = [], [], [], []
    tiles, rep = 0, None
    tmp = Path(tempfile.mkdtemp(prefix="glb-bench-index-", dir=os.environ.get("GLB_BENCH_DIR")))
    try:
        for r in range(repeats):
            ceil.append(n_tiles / _embed_all(enc, batches))
            target = tmp / f"run{r}"
            t0 = time.perf_counter()
            rep = run_index(paths, target, rules_file=rules,
                            options=IndexOptions(progress=False), encoder=enc, echo=lambda m: None)
            s = time.perf_counter() - t0
            tiles = rep.tiles_added
            e2e.append(tiles / s)
            secs.append(s)
            shutil.rmtree(target, ignore_errors=True)
            t0 = time.perf_counter()
            _collect_batches(paths, rules, enc, batch_size)
            reader.append(n_tiles / (time.perf_counter() - t0))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out.update({
        "tiles": tiles, "tiles_ceiling_set": n_tiles, "batch_size": batch_size,
        "end_to_end_tiles_per_s": median_spread(e2e, 1), "end_to_end_s": median_spread(secs, 2),
        "encoder_ceiling_tiles_per_s": median_spread(ceil, 1),
        "reader_alone_tiles_per_s": median_spread(reader, 1),
        "ratio": round(float(np.median(e2e) / np.median(ceil)), 3),
        "files_failed": len(rep.failed) if rep is not None else None,
        "loadavg_end": loadavg()})
    echo(f"  index: {out['end_to_end_tiles_per_s']['median']} tiles/s end to end, ceiling "
         f"{out['encoder_ceiling_tiles_per_s']['median']} tiles/s, ratio {out['ratio']}")
    if torch.cuda.is_available():
        out["gpu"] = gpu(paths, rules, batches, echo=echo)
    else:
        out["gpu"] = {"measured": False, "reason": "no CUDA device on this machine"}
    return out


def gpu(paths, rules, cpu_batches, echo=print) -> dict:
    """On a CUDA machine: the encoder alone (glb/bench/gpu.py: bf16 batch sweep, FLOP/s
    against the measured matmul peak), then indexing end to end with the encoder there."""
    from engine.encoder import load_encoder
    from indexer.runner import IndexOptions, run_index

    from .gpu import run as gpu_run

    out = {"measured": True, **gpu_run(echo=echo)}
    enc = load_encoder(device="cuda")
    tmp = Path(tempfile.mkdtemp(prefix="glb-bench-gpu-"))
    try:
        e2e = []
        for r in range(2):
            t0 = time.perf_counter()
            rep = run_index(paths, tmp / f"r{r}", rules_file=rules, options=IndexOptions(progress=False),
                            encoder=enc, echo=lambda m: None)
            e2e.append(rep.tiles_added / (time.perf_counter() - t0))
        out["end_to_end_tiles_per_s"] = median_spread(e2e, 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
