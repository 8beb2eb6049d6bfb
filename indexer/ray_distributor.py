"""Distributor on Ray: `glb index … --ray [ADDRESS]` runs the same reader -> mapper -> writer
stages as the local run, spread over a Ray cluster (clip-retrieval's distributor; Ray for us).

    driver (this process)            holds the writer lock, plans the units, commits
      read task   (CPU worker)       one unit (a scene, or a group of chips): open, tile,
                                     normalise, thumbnail -> tensors + tile records
      embed actor (GPU, else CPU)    keeps the encoder loaded; bf16 on a GPU (mapper.Embedder)
      write task  (CPU worker)       the unit's tiles, vectors, thumbnails and overview as one
                                     hidden, fsynced segment folder in the index folder
      driver                         renames finished folders into place and publishes the
                                     manifest: StoreWriter.stage_written + commit, so the
                                     consistency rule, the lock, tile ids, incremental re-runs
                                     and `glb check` are those of a local run

The index folder must be a filesystem every node sees at the same path, and so must the scenes.

Retries are idempotent: Ray re-runs a task whose worker died (`max_retries`); a unit's hidden
folder name is fixed by the run and the unit, and a rerun replaces what a dead attempt left, so
a retried unit leaves one copy; the driver stages each unit's result once. A run killed outright
loses only uncommitted units: the next writer deletes their hidden folders and the next run
indexes them again (same tile ids), reaching the same index as a sequential build.
"""

from __future__ import annotations

import os
import secrets
import time

import numpy as np

from engine.cluster import RAY_VERSION, RayOptions, RayUnavailableError, check_reachable, connect

__all__ = ["RayDistributor", "RayOptions", "RayUnavailableError", "connect", "parse_ray_flag"]

CRASH_VARS = ("GLB_CRASH_AT", "GLB_CRASH_ONCE")   # forwarded to the workers (engine/store/faults.py)

# Embed actors of this driver's last run: a loaded encoder costs a worker start and a model
# load, so a second run with the same encoder on the same connection reuses them.
_ACTORS: dict[tuple, list] = {}


def _folder_for(run: str, unit: int) -> str:
    """The hidden segment folder of one unit in one run: the same for every attempt."""
    return f".ray-{run}-{unit:06d}.tmp"


def _move(encoder, device: str) -> None:
    """The encoder's weights to `device` (an encoder with its own `to`, else its image tower)."""
    mover = getattr(encoder, "to", None)
    if callable(mover):
        mover(device)
    else:
        encoder.image.to(device)
    encoder.device = device


def _set_faults(faults: dict) -> None:
    for k in CRASH_VARS:
        if faults.get(k):
            os.environ[k] = faults[k]
        else:
            os.environ.pop(k, None)


# --- the stages, as Ray runs them ---------------------------------------------------------------
def _read(u: int, items: list, encoder, tile, faults: dict):
    """-> (tensors: [(x, wavelengths, layout)], records: ([(tiles, thumbs, scene_keys)], UnitDone))"""
    from engine.store.faults import crash_point

    from .reader import TileBatch, read_unit

    _set_faults(faults)
    crash_point("ray.read")
    xs, meta, done = [], [], None
    for item in read_unit(u, items, encoder, tile):
        if isinstance(item, TileBatch):
            xs.append((item.x, item.wavelengths, item.layout))
            meta.append((item.tiles, item.thumbs, item.scene_keys))
        else:
            done = item
    return xs, (meta, done)


class _EmbedActor:
    """Keeps one encoder loaded; on a GPU the batches run in bf16 (mapper.Embedder)."""

    def __init__(self, encoder, gpu: bool):
        import torch

        from .mapper import Embedder

        if gpu and torch.cuda.is_available():
            _move(encoder, "cuda")
        self.embedder = Embedder(encoder)

    def embed(self, xs: list) -> list[np.ndarray]:
        from .reader import TileBatch

        return [self.embedder(TileBatch(-1, lay, x, wl, [], [], [])) for x, wl, lay in xs]


def _write(root: str, folder: str, records, vectors: list[np.ndarray], dim: int, faults: dict):
    """The unit's scenes as one hidden segment folder -> (WrittenSegment, restamps, failed, n)."""
    import pyarrow as pa

    from engine.store.faults import crash_point
    from engine.store.layout import OVERVIEW_SCHEMA, THUMB_SCHEMA, TILE_SCHEMA, Layout
    from engine.store.segment import write_segment_files
    from engine.store.writer import WrittenSegment

    from .reader import TileBatch
    from .writer import unit_outcome

    _set_faults(faults)
    meta, done = records
    batches = [(TileBatch(done.unit, None, None, None, t, th, k), v) for (t, th, k), v in zip(meta, vectors)]
    out = unit_outcome(done, batches, dim)
    crash_point("ray.write")
    with_tiles = [s for s in out.staged if s.tiles]
    rows = []
    for s in out.staged:
        rows.append(dict(s.record, n_tiles=len(s.tiles)))
    n = sum(len(s.tiles) for s in with_tiles)
    if n:
        tiles = pa.Table.from_pylist([t for s in with_tiles for t in s.tiles], schema=TILE_SCHEMA)
        thumbs = pa.Table.from_pydict({"tile_id": tiles.column("tile_id"),
                                       "jpeg": [p for s in with_tiles for p in s.thumbs]},
                                      schema=THUMB_SCHEMA)
        overviews = pa.Table.from_pylist([s.overview for s in with_tiles if s.overview],
                                         schema=OVERVIEW_SCHEMA)
        write_segment_files(Layout(root), folder, tiles,
                            np.concatenate([s.vectors for s in with_tiles]), thumbs, overviews)
    return WrittenSegment(folder if n else None, n, rows), out.restamps, out.failed


class RayDistributor:
    """`run_index(..., distributor=RayDistributor(RayOptions(address)))`: the units of a run as
    Ray work; planning, the lock, commits and the report stay in the driver (runner.run_index)."""

    def __init__(self, options: RayOptions | None = None):
        self.options = options or RayOptions()

    def preflight(self) -> None:
        """Fail fast, before the lock and the encoder: Ray missing, or no cluster there."""
        try:
            import ray  # noqa: F401
        except ImportError:
            raise RayUnavailableError(f"Ray is not installed: pip install '.[ray]' (ray=={RAY_VERSION})") from None
        if self.options.address:
            check_reachable(self.options.address)

    def run(self, found, writer, encoder, opts, report, echo) -> None:
        from .runner import _Interrupt, plan_units

        units = plan_units(found, writer, report)
        if not units:  # nothing changed (the hourly cron run): no cluster to start
            return
        ray, started = connect(self.options)
        try:
            self._run(ray, units, writer, encoder, opts, report, echo, _Interrupt)
        finally:
            if started:
                _ACTORS.clear()
                ray.shutdown()

    def _run(self, ray, units, writer, encoder, opts, report, echo, interrupt_cls) -> None:
        o = self.options
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = max(1, int(resources.get("CPU", 1)))
        n_actors = o.embed_actors or (gpus if gpus else 1)
        gpu_each = 1 if gpus else 0
        if str(getattr(encoder, "device", "cpu")).startswith("cuda"):
            _move(encoder, "cpu")  # shipped to the workers through the object store
        faults = {k: os.environ.get(k) for k in CRASH_VARS if os.environ.get(k)}
        read = ray.remote(num_returns=2, max_retries=o.max_retries)(_read)
        write = ray.remote(max_retries=o.max_retries)(_write)
        # an embed actor holds a CPU only where it embeds on the CPU
        actor_cls = ray.remote(num_gpus=gpu_each, num_cpus=0 if gpu_each else 1, max_restarts=o.max_retries,
                               max_task_retries=o.max_retries)(_EmbedActor)
        key = (ray.get_runtime_context().get_job_id(), encoder.describe().get("identity"),
               id(encoder), n_actors, gpu_each)
        if key not in _ACTORS:  # kept for the next run of this driver (a notebook, a test session)
            _ACTORS.clear()     # with the encoder's ref: a restarted actor reads it again
            enc_ref = ray.put(encoder)
            _ACTORS[key] = ([actor_cls.remote(enc_ref, bool(gpu_each)) for _ in range(n_actors)], enc_ref)
        actors, enc_ref = _ACTORS[key]
        run_id = secrets.token_hex(4)
        dim = int(writer.encoder.get("dim", 384))
        root = str(writer.layout.root.resolve())
        in_flight = o.in_flight or 2 * cpus
        pending: dict = {}   # write ref -> unit number
        next_unit = 0
        last_commit = time.monotonic()
        bar = None
        if opts.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(units), unit="unit", desc="indexing (ray)", leave=False, dynamic_ncols=True)
        echo(f"ray: {len(units)} units on {cpus} CPUs, {gpus} GPUs, {n_actors} embed actor(s)")
        with interrupt_cls() as interrupt:
            try:
                while pending or next_unit < len(units):
                    while next_unit < len(units) and len(pending) < in_flight and not interrupt.flag.is_set():
                        u = next_unit
                        xs, records = read.remote(u, units[u], enc_ref, opts.tile, faults)
                        vecs = actors[u % n_actors].embed.remote(xs)
                        ref = write.remote(root, _folder_for(run_id, u), records, vecs, dim, faults)
                        pending[ref] = u
                        next_unit += 1
                    if not pending:
                        break
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                    for ref in ready:
                        pending.pop(ref)
                        written, restamps, failed = ray.get(ref)
                        for path, fields in restamps:
                            writer.touch(path, **fields)
                        report.restamped += len(restamps)
                        report.unchanged += len(restamps)
                        report.failed.extend(failed)
                        if written.scenes:
                            writer.stage_written(written)
                            report.indexed += len(written.scenes)
                            report.tiles_added += written.n_rows
                        if bar is not None:
                            bar.update(1)
                            bar.set_postfix(tiles=report.tiles_added, failed=len(report.failed))
                    if writer.should_commit() or time.monotonic() - last_commit > opts.commit_seconds:
                        writer.commit()
                        last_commit = time.monotonic()
                    if interrupt.flag.is_set() and not report.interrupted:
                        report.interrupted = True
                        for ref in pending:  # what is staged is committed by run_index
                            ray.cancel(ref, force=True)
                        pending.clear()
            finally:
                if bar is not None:
                    bar.close()


def parse_ray_flag(value: str | None) -> RayOptions:
    """`--ray` alone: a local cluster; `--ray ADDRESS`: that cluster."""
    return RayOptions(address=value or None)

