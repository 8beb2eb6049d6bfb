"""The store: an index's files on disk (layout, segments, manifests, the commit point), its
one writer and its lock. Imports nothing from the layers above it (engine.retrieval)."""
