"""`glb bench`: search and indexing benchmarks (see docs/BENCHMARKS.md).

    glb bench search --vectors N [--json] [--smoke]
    glb bench index [--json] [--smoke]
    glb bench all --write docs/BENCHMARKS.md
    glb bench feedback [--encoder NAME] [--pools A,B] [--methods M,N] [--json] [--write FILE]
                                                 simulated analysts (docs/FEEDBACK.md)
    glb bench refine --vectors N [--repeats R] [--json] [--smoke]   latency of a relevance-feedback refine
    glb bench ray-index [--smoke]                  indexing on a local Ray cluster against the
                                                 sequential run (tiles/s, same scenes)

Benchmarks print numbers; CI runs only `--smoke` (seconds). Generated data goes under
$GLB_BENCH_DIR (default /tmp/glb-bench), never into the repository.
"""

from __future__ import annotations

import json
import sys


def _feedback_config(pairs: list[str]):
    """`--set KEY=VALUE` pairs -> a FeedbackConfig (numbers as the field's type)."""
    from dataclasses import fields, replace

    from engine.errors import InputError
    from engine.retrieval.feedback import FeedbackConfig

    cfg = FeedbackConfig()
    types = {f.name: type(getattr(cfg, f.name)) for f in fields(cfg)}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in types or key == "method" or not value:
            raise InputError(f"--set {pair!r}: give KEY=VALUE with KEY one of "
                             f"{', '.join(k for k in types if k != 'method')}")
        try:
            v = (tuple(float(x) for x in value.split(",")) if types[key] is tuple
                 else types[key](value))
        except ValueError:
            raise InputError(f"--set {pair!r}: {value!r} is not a {types[key].__name__}") from None
        cfg = replace(cfg, **{key: v})
    return cfg.check()


def main(args) -> int:
    echo = (lambda m: print(m, file=sys.stderr, flush=True))
    out: dict = {}
    if args.what == "feedback":
        from .feedback import METHODS as FEEDBACK_METHODS
        from .feedback import POOLS, to_markdown
        from .feedback import run as run_feedback

        pools = tuple(args.pools.split(",")) if getattr(args, "pools", None) else POOLS
        methods = tuple(args.methods.split(",")) if getattr(args, "methods", None) else FEEDBACK_METHODS
        unknown = sorted(set(pools) - set(POOLS)) + sorted(set(methods) - set(FEEDBACK_METHODS))
        if unknown:
            from engine.errors import InputError

            raise InputError(f"glb bench feedback: unknown pool or method {unknown[0]!r} (pools: "
                             f"{', '.join(POOLS)}; methods: {', '.join(FEEDBACK_METHODS)})")
        config = _feedback_config(getattr(args, "feedback_set", None) or [])
        res = run_feedback(pools=("eurosat_ms_test",) if args.smoke else pools, methods=methods,
                           smoke=args.smoke, echo=echo, encoder=getattr(args, "encoder", None),
                           config=config, mark_neighbours=getattr(args, "mark_neighbours", 0) or 0)
        md = to_markdown(res)
        if args.write:
            from pathlib import Path

            Path(args.write).write_text(md)
        print(json.dumps(res, default=str) if args.json else md)
        return 0
    if args.what == "refine":
        from .refine import run as run_refine

        repeats = getattr(args, "repeats", 3)
        if repeats < 1:
            from engine.errors import InputError

            raise InputError(f"glb bench refine: --repeats {repeats}: give at least 1")
        res = run_refine(min(args.vectors, 4096) if args.smoke else args.vectors, smoke=args.smoke,
                         echo=echo, repeats=repeats)
        print(json.dumps(res, default=str))
        return 0
    if args.what == "ray-index":
        from .ray_index import run as run_ray_index

        res = run_ray_index(smoke=args.smoke, echo=echo)
        print(json.dumps(res, default=str))
        return 0
    if args.what in ("search", "all"):
        from .search import run as run_search

        sizes = [args.vectors] if args.what == "search" else (
            [4096] if args.smoke else [100_000, 1_000_000])
        if args.smoke and args.what == "search":
            sizes = [min(args.vectors, 4096)]
        methods = args.methods.split(",") if getattr(args, "methods", None) else None
        runs = [run_search(n, smoke=args.smoke, methods=methods, echo=echo) for n in sizes]
        out["search"] = runs[0] if args.what == "search" else runs
    if args.what in ("index", "all"):
        from .index import run as run_index

        out["index"] = run_index(smoke=args.smoke, echo=echo)
    if args.write:
        from .report import write

        write(args.write, out, echo=echo)
    if args.json or not args.write:
        print(json.dumps(out[args.what] if args.what in out else out, default=str))
    return 0
