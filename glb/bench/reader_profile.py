"""The indexer's reader alone over ../shared/data/scenes, three passes, one torch thread:
what the reader-cost table of docs/BENCHMARKS.md profiles.

    py-spy record -f raw -r 200 -o reader.txt -- .venv/bin/python -m glb.bench.reader_profile
"""

import time

import torch

from engine.encoder import load_encoder
from glb.bench.index import ROOT, _collect_batches, data_dir


def main() -> None:
    torch.set_num_threads(1)
    enc = load_encoder(device="cpu")
    paths, rules = [data_dir() / "scenes"], ROOT / "indexer" / "archives" / "sample.toml"
    n = sum(int(x.shape[0]) for x, _, _ in _collect_batches(paths, rules, enc, 64))  # warm-up
    for _ in range(3):
        t0 = time.perf_counter()
        _collect_batches(paths, rules, enc, 64)
        dt = time.perf_counter() - t0
        print(f"{n} tiles: {n / dt:.0f} tiles/s, {1000 * dt / n:.2f} ms a tile")


if __name__ == "__main__":
    main()
