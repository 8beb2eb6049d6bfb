"""Small helpers shared by the benchmarks: load, memory, statistics, timing."""

from __future__ import annotations

import os
import platform
import time

import numpy as np


def loadavg() -> list[float]:
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return []


def proc_mem() -> dict:
    """Resident memory of this process, bytes: total, anonymous (heap) and file-backed."""
    out = {}
    try:
        for line in open("/proc/self/status"):
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def summarise_runs(per_run: list[list[float]]) -> dict:
    """Latency samples (ms) of repeated runs -> p50/p99 as the median over runs, with spread."""
    p50s = [pct(r, 50) for r in per_run if r]
    p99s = [pct(r, 99) for r in per_run if r]
    if not p50s:
        return {"p50_ms": None, "p99_ms": None}
    return {"p50_ms": round(float(np.median(p50s)), 3), "p99_ms": round(float(np.median(p99s)), 3),
            "p50_spread_ms": [round(min(p50s), 3), round(max(p50s), 3)],
            "p99_spread_ms": [round(min(p99s), 3), round(max(p99s), 3)],
            "runs": len(p50s), "queries_per_run": len(per_run[0])}


def median_spread(values: list[float], nd: int = 3) -> dict:
    v = [float(x) for x in values]
    return {"median": round(float(np.median(v)), nd), "min": round(min(v), nd), "max": round(max(v), nd),
            "runs": len(v)}


def machine() -> dict:
    import duckdb
    import faiss

    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "faiss": faiss.__version__, "duckdb": duckdb.__version__, "numpy": np.__version__,
            "faiss_threads": faiss.omp_get_max_threads()}


def dir_bytes(path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
