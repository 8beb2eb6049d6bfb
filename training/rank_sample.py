"""The three orders across sensors on one real index: what each puts in the top 10 of a few
queries, and what each costs a search.

    python -m training.rank_sample INDEX [--repeats 5]

For every query: the modality:sensor of the top 10 with the plain ranking, `calibrated=True`
and `evidence=True` (docs/RANKING.md, "Evidence"); then the latency of `Index.search(vector=v,
k=20, diversify=5, ...)` for each order, the query vectors embedded beforehand (median and 90th
percentile over queries x repeats, one process, the orders interleaved), and the time to embed
the evidence bank once.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

QUERIES = ["flooded farmland", "a river", "forest", "mountains", "bare fields",
           "a radar image of a flood", "a harbour", "a parking lot", "storage tanks", "a bridge"]
ORDERS = {"plain": {}, "calibrated": {"calibrated": True}, "evidence": {"evidence": True}}


def main(argv=None) -> int:
    import engine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("index")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    idx = engine.open(args.index)
    idx._encoder_for(idx.snapshot)   # the encoder loaded before the bank is timed
    t0 = time.perf_counter()
    idx.bank()
    bank_s = time.perf_counter() - t0
    for text in QUERIES[:6]:
        for name, kw in ORDERS.items():
            r = idx.search(text, k=10, **kw)
            print(f"{text:26s} {name:10s}", " ".join(f"{m}:{s}" for m, s in zip(r.modality, r.sensor)))
    vecs = idx._encoder_for(idx.snapshot).encode_text(QUERIES)
    print(f"\nevidence bank embedded in {bank_s:.3f} s")
    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, kw in ORDERS.items():
            for v in vecs:
                t = time.perf_counter()
                idx.search(vector=v, k=20, diversify=5, **kw)
                times.setdefault(name, []).append(time.perf_counter() - t)
    for name, t in times.items():
        print(f"{name:10s} p50 {1000 * np.median(t):.1f} ms, p90 {1000 * np.percentile(t, 90):.1f} ms "
              f"({len(t)} searches)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
