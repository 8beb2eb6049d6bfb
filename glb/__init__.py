"""The `glb` command line: one entry point over engine, indexer, ui and training."""
