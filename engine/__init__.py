"""GeoLangBind engine: encoder, store and search. Imports nothing from indexer, ui or training.

    import engine
    enc = engine.load_encoder()
    idx = engine.open("path/to/index")
    idx.search("flooded farmland", bbox=(min_lon, min_lat, max_lon, max_lat), k=20)
    engine.search("flooded farmland", bbox=(...), index="path/to/index")
"""

from .encoder import Encoder, load_encoder
from .errors import (CheckpointError, GLBError, IndexLockedError, IndexNotFoundError, InputError,
                     RasterError, UnknownSensorError)
from .index import Index, open_index, search
from .modalities import MODALITIES

open = open_index  # noqa: A001 - the public name the design fixes: engine.open(path)

__all__ = ["CheckpointError", "Encoder", "GLBError", "Index", "IndexLockedError",
           "IndexNotFoundError", "InputError", "MODALITIES", "RasterError", "UnknownSensorError",
           "load_encoder", "open", "open_index", "search"]
