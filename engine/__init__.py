"""GeoLangBind engine: encoder, store and search. Imports nothing from indexer, ui or training.

    import engine
    enc = engine.load_encoder()
    idx = engine.open("path/to/index")            # or engine.open(path, config=engine.SearchConfig(...))
    idx.search("flooded farmland", bbox=(min_lon, min_lat, max_lon, max_lat), k=20)
    engine.search("flooded farmland", bbox=(...), index="path/to/index")

The search side (DuckDB, FAISS, shapely, geopandas) is imported on first use, so code that only
needs the encoder (training, a GPU box) does not need those libraries installed.
"""

import os

# Before torch (and its OpenMP runtime) loads: idle OpenMP threads sleep instead of spinning.
# On two shared cores spinning threads starve every other process (indexing measured 41.6 vs
# 143.6 tiles/s under load; docs/BENCHMARKS.md). Set the variable yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import (CheckpointError, GLBError, IndexLockedError, IndexNotFoundError,  # noqa: E402
                     InputError, RasterError, UnknownSensorError)
from .modalities import MODALITIES  # noqa: E402

_LAZY = {"Encoder": ".encoder", "load_encoder": ".encoder", "Index": ".retrieval.index",
         "open_index": ".retrieval.index", "search": ".retrieval.index", "open": ".retrieval.index",
         "SearchConfig": ".retrieval.config", "PlannerConfig": ".retrieval.config",
         "VectorIndexConfig": ".retrieval.config"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod = importlib.import_module(_LAZY[name], __name__)
        value = getattr(mod, "open_index" if name == "open" else name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


__all__ = ["CheckpointError", "Encoder", "GLBError", "Index", "IndexLockedError",
           "IndexNotFoundError", "InputError", "MODALITIES", "PlannerConfig", "RasterError",
           "SearchConfig", "UnknownSensorError", "VectorIndexConfig", "load_encoder", "open",
           "open_index", "search"]
