"""GeoLangBind engine: encoder, store and search. Imports nothing from indexer, ui or training.

    import engine
    enc = engine.load_encoder()
    idx = engine.open("path/to/index")
    idx.search("flooded farmland", bbox=(min_lon, min_lat, max_lon, max_lat), k=20)
    engine.search("flooded farmland", bbox=(...), index="path/to/index")
"""

import os

# Before torch (and its OpenMP runtime) loads: idle OpenMP threads sleep instead of spinning.
# On two shared cores spinning threads starve every other process (indexing measured 41.6 vs
# 143.6 tiles/s under load; docs/BENCHMARKS.md). Set the variable yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .encoder import Encoder, load_encoder  # noqa: E402
from .errors import (CheckpointError, GLBError, IndexLockedError, IndexNotFoundError,  # noqa: E402
                     InputError, RasterError, UnknownSensorError)
from .index import Index, open_index, search  # noqa: E402
from .modalities import MODALITIES  # noqa: E402

open = open_index  # noqa: A001 - the public name the design fixes: engine.open(path)

__all__ = ["CheckpointError", "Encoder", "GLBError", "Index", "IndexLockedError",
           "IndexNotFoundError", "InputError", "MODALITIES", "RasterError", "UnknownSensorError",
           "load_encoder", "open", "open_index", "search"]
