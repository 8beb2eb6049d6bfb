"""DuckDB connections with the spatial extension loaded from its wheel, never downloaded."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import duckdb

DUCKDB_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


@lru_cache(maxsize=None)
def extension_path(name: str) -> str:
    import importlib

    mod = importlib.import_module(f"duckdb_extension_{name}")
    found = sorted(Path(str(mod.__file__)).parent.rglob(f"{name}.duckdb_extension"))
    if not found:
        raise RuntimeError(f"duckdb-extension-{name} is installed but holds no {name}.duckdb_extension")
    return str(found[-1])


def connect(database: str = ":memory:", *, read_only: bool = False,
            extensions: tuple[str, ...] = ("spatial",)) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(database, read_only=read_only, config=dict(DUCKDB_CONFIG))
    for ext in extensions:
        con.execute(f"LOAD '{extension_path(ext)}'")
    return con
