"""GeoLangBind engine: encoder, store and search. Imports nothing from indexer, ui or training.

    import engine
    enc = engine.load_encoder()            # ours; or by registry name (engine/encoder/encoders.toml):
    enc = engine.load_encoder("dofa-clip-b16-224", weights="DIR")   # the paper's weights, user-supplied
    idx = engine.open("path/to/index")     # queries use the encoder the index was built with;
                                           # or engine.open(path, config=engine.SearchConfig(...))
    idx.search("flooded farmland", bbox=(min_lon, min_lat, max_lon, max_lat), k=20)
    engine.search("flooded farmland", bbox=(...), index="path/to/index")
    engine.write_results(results, "found.parquet")   # or .geojson / .csv (engine/export.py)

The search side (DuckDB, FAISS, shapely, geopandas) is imported on first use, so code that only
needs the encoder (training, a GPU box) does not need those libraries installed.
"""

import os

# The one place this is set, before torch or FAISS (and their OpenMP runtime) load: idle
# OpenMP threads sleep instead of spinning, which on a small shared machine starves every other
# process (measured in docs/BENCHMARKS.md). Code that loads torch or FAISS imports `engine`
# first; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import (
    CheckpointError,
    CorruptIndexError,
    EncoderMismatchError,
    GLBError,
    IndexLockedError,
    IndexNotFoundError,
    IndexWriteError,
    InputError,
    RasterError,
    UnknownSensorError,
)
from .modalities import MODALITIES

_LAZY = {"Encoder": ".encoder", "load_encoder": ".encoder", "Index": ".retrieval.index",
         "open_index": ".retrieval.index", "search": ".retrieval.index", "open": ".retrieval.index",
         "SearchConfig": ".retrieval.config", "PlannerConfig": ".retrieval.config",
         "VectorIndexConfig": ".retrieval.config", "check_k": ".retrieval.index",
         "parse_wavelengths": ".sensors", "FeedbackConfig": ".retrieval.config",
         "parse_bbox": ".geo", "parse_region": ".geo", "bbox_geometry": ".geo",
         "export_results": ".export", "write_results": ".export",
         "try_atomic_write": ".store.files"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod = importlib.import_module(_LAZY[name], __name__)
        value = getattr(mod, "open_index" if name == "open" else name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


__all__ = ["CheckpointError", "CorruptIndexError", "Encoder", "EncoderMismatchError", "FeedbackConfig",
           "GLBError", "Index", "IndexLockedError", "IndexNotFoundError", "IndexWriteError", "InputError",
           "MODALITIES", "PlannerConfig", "RasterError", "SearchConfig", "UnknownSensorError",
           "VectorIndexConfig", "bbox_geometry", "check_k", "export_results", "load_encoder", "open",
           "open_index", "parse_bbox", "parse_region", "parse_wavelengths", "search", "try_atomic_write",
           "write_results"]
