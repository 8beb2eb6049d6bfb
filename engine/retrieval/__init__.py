"""The retrieval (search) layer: a read-only view of one published generation of an index,
and queries over it. Imports go one way only: retrieval -> store (never the reverse).

(Not named `engine.search`: that name is the public one-call function `engine.search(...)`,
which a subpackage of the same name would shadow.)

- `snapshot.py`: `Snapshot`, the segments of one generation loaded for searching (compact
  filter columns, the spatial grid, the vector index built on first use); `prepare(path)`
  builds the derived search files ahead of time.
- `vectors.py`: the vector indexes (exact Flat; IVF-PQ with exact re-ranking).
- `filters.py`: validated filters and `SpatialGrid`, the lon/lat grid behind spatial
  candidates and selectivity estimates.
- `index.py`: `Index` (what `engine.open` returns): query encoding, the filter planner,
  results as a GeoDataFrame.
"""
