"""The GPU search benchmark, prepared for a short window on a CUDA host (`pip install '.[gpu]'`
after uninstalling faiss-cpu; both install the module `faiss`):

    python -m glb.bench.gpu_search --vectors 10000000 --out gpu-search.json --write docs/BENCHMARKS.md

The same data, queries and cases as `glb bench search` (every bbox selectivity, attribute and
combined filters, recall@10 against the exact filtered top-10), answered by the CPU path
("ours") and by the vector index on the GPU ("ours_gpu": exact float16 flat up to
`gpu_flat_max_rows`, IVF-PQ above; engine/retrieval/gpu.py), one after the other in their own
processes. Without a GPU the GPU method is recorded as skipped: `--vectors 4096 --smoke` is the
CPU check of the script itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import search


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m glb.bench.gpu_search")
    p.add_argument("--vectors", type=int, default=10_000_000)
    p.add_argument("--smoke", action="store_true", help="seconds: check the script on the CPU")
    p.add_argument("--out", help="write the JSON here")
    p.add_argument("--write", help="merge the markdown table into this file (docs/BENCHMARKS.md)")
    args = p.parse_args(argv)
    r = search.run(args.vectors, smoke=args.smoke, methods=["ours", "ours_gpu"], text_encoder=False,
                   echo=lambda m: print(m, file=sys.stderr))
    r["gpu_benchmark"] = True
    text = json.dumps(r, default=str)
    if args.out:
        Path(args.out).write_text(text)
    if args.write:
        from .report import search_tables

        doc = Path(args.write)
        marker = f"gpu-search-{args.vectors}"
        block = f"<!-- {marker}:begin -->\n{search_tables(r)}\n<!-- {marker}:end -->"
        old = doc.read_text() if doc.exists() else ""
        begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
        if begin in old and end in old:
            new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
        else:
            new = old.rstrip() + "\n\n" + block + "\n"
        doc.write_text(new)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
