"""`glb bench ray-index`: indexing throughput on a local Ray cluster against the sequential
`run_index`, on the same scenes, in the same process, with the same loaded encoder.

- sequential: `run_index` (reader, embedder and writer threads in this process), into a fresh
  index each run;
- Ray: the same run with `RayDistributor` (indexer/ray_distributor.py) on a local cluster:
  the cluster's start is timed on its own; the first run is "cold" (its workers import the
  code and torch, its embed actor receives and loads the encoder); the later runs reuse the
  actor ("warm"), which is what a long run on a cluster looks like after its first minute.
Both report tiles/s (tiles added / wall seconds of `run_index`); the tile ids of the Ray and
sequential builds are compared, so a fast wrong build cannot pass as a result.

What a small machine can show: the units here are whole scenes, a few per CPU; with two
cores the readers, the embed actor and the writers share the cores that the sequential run
already used, so Ray's per-task overhead is all that changes. The point of `--ray` is many
reader cores per GPU over many machines; this command is the same measurement there
(`GLB_RAY_ADDRESS=HOST:PORT` joins that cluster instead of starting a local one).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import loadavg, median_spread
from .index import sample_archive


def _tile_ids(root: Path) -> set[str]:
    from engine.store.layout import Layout
    from engine.store.manifest import read_current, read_tombstones
    from engine.store.segment import read_tiles

    layout = Layout(root)
    m = read_current(layout)
    dead = read_tombstones(layout, m)
    dead_pairs = set(zip(dead.column("segment").to_pylist(), dead.column("tile_id").to_pylist()))
    return {t for seg in m.segments for t in read_tiles(layout, seg.name).column("tile_id").to_pylist()
            if (seg.name, t) not in dead_pairs}


def run(smoke: bool = False, repeats: int = 2, cpus: int | None = None, echo=print) -> dict:
    import ray

    from engine.cluster import RayOptions, connect
    from engine.encoder import load_encoder
    from indexer.ray_distributor import RayDistributor
    from indexer.runner import IndexOptions, run_index

    paths, rules = sample_archive(smoke)
    if smoke:
        repeats = 1
    address = os.environ.get("GLB_RAY_ADDRESS") or None
    out: dict = {"paths": [str(p) for p in paths], "rules": str(rules), "loadavg_start": loadavg(),
                 "cpus_machine": os.cpu_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    enc = load_encoder(device="cpu")
    tmp = Path(tempfile.mkdtemp(prefix="glb-bench-ray-", dir=os.environ.get("GLB_BENCH_DIR")))

    def index(target: Path, distributor=None) -> tuple[float, int]:
        t0 = time.perf_counter()
        rep = run_index(paths, target, rules_file=rules, options=IndexOptions(progress=False),
                        encoder=enc, echo=lambda m: None, distributor=distributor)
        s = time.perf_counter() - t0
        if not rep.ok:
            raise RuntimeError(f"indexing failed: {rep.failed[:3]}")
        return s, rep.tiles_added

    started_here = False
    try:
        seq_s, seq_tiles = [], 0
        for r in range(repeats):
            s, seq_tiles = index(tmp / f"seq{r}")
            seq_s.append(s)
        echo(f"  sequential: {seq_tiles} tiles, {seq_s[-1]:.1f} s")
        reference = _tile_ids(tmp / "seq0")
        out["loadavg_sequential"] = loadavg()
        # the cluster: joined if this process is already connected (tests), else started
        t0 = time.perf_counter()
        if ray.is_initialized():
            out["cluster"] = "already connected"
        else:
            _, started_here = connect(RayOptions(address=address, local_cpus=cpus, local_gpus=0))
            out["cluster"] = address or "local"
        out["cluster_start_s"] = round(time.perf_counter() - t0, 2)
        res = ray.cluster_resources()
        out["cluster_cpus"], out["cluster_gpus"] = int(res.get("CPU", 0)), int(res.get("GPU", 0))
        distributor = RayDistributor(RayOptions(address=address))
        ray_s, ray_tiles = [], 0
        for r in range(repeats + 1):  # the first: cold (worker imports, actor loads the encoder)
            s, ray_tiles = index(tmp / f"ray{r}", distributor)
            ray_s.append(s)
            echo(f"  ray run {r} ({'cold' if r == 0 else 'warm'}): {ray_tiles} tiles, {s:.1f} s")
            if _tile_ids(tmp / f"ray{r}") != reference:
                raise RuntimeError(f"ray run {r}: its tiles differ from the sequential build's")
        out["loadavg_ray"] = loadavg()
    finally:
        if started_here:
            from indexer import ray_distributor

            ray_distributor._ACTORS.clear()
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    warm = ray_s[1:]
    out.update({
        "tiles": seq_tiles, "ray_tiles": ray_tiles, "same_tile_ids": True,
        "sequential_s": median_spread(seq_s, 2),
        "sequential_tiles_per_s": median_spread([seq_tiles / s for s in seq_s], 1),
        "ray_cold_s": round(ray_s[0], 2),
        "ray_cold_tiles_per_s": round(ray_tiles / ray_s[0], 1),
        "ray_warm_s": median_spread(warm, 2),
        "ray_warm_tiles_per_s": median_spread([ray_tiles / s for s in warm], 1),
        "ray_warm_over_sequential": round(float(np.median([ray_tiles / s for s in warm])
                                                / np.median([seq_tiles / s for s in seq_s])), 3),
        "loadavg_end": loadavg(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    echo(f"  ray-index: sequential {out['sequential_tiles_per_s']['median']} tiles/s, Ray warm "
         f"{out['ray_warm_tiles_per_s']['median']} tiles/s (cold {out['ray_cold_tiles_per_s']}, "
         f"cluster start {out['cluster_start_s']} s)")
    return out
