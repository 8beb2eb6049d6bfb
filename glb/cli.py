"""`glb` — index, search, inspect, check, serve the UI, train, evaluate, benchmark.

Exit status: 0 success; 1 the run finished but some inputs failed (each named on stderr), or
`glb check` found problems; 2 bad arguments or an error that stopped the command (one line on
stderr); 3 an internal error (a bug: one line, the traceback with -v); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import engine  # before any command loads torch or FAISS: it sets OMP_WAIT_POLICY

DEFAULT_INDEX = os.environ.get("GLB_INDEX", ".glb/index")


def _add_ranking_options(p: argparse.ArgumentParser, per: str, score_note: str) -> None:
    """The ranking options of a search and of a saved one (`glb search`, `glb watch add`;
    engine/retrieval/ranking.py): one definition, so the two commands cannot drift apart."""
    p.add_argument("--undated", action="store_true",
                   help="with --start/--end: also keep tiles that have no date")
    p.add_argument("--calibrated", action="store_true",
                   help="rank by the per-modality calibrated score, as the UI's 'a fair share per "
                        f"sensor' order does ({score_note})")
    p.add_argument("--evidence", action="store_true",
                   help="rank each sensor's best tiles by the query's evidence against a bank of "
                        "other prompts (engine/retrieval/evidence.py), as the UI's default order "
                        "does: comparable across sensors without giving a sensor that matches "
                        f"nothing a place in the list ({score_note}; not with --calibrated)")
    p.add_argument("--diversify", type=int, metavar="N",
                   help=f"at most N {per} per scene, one per place")
    p.add_argument("--min-relevance", type=float, metavar="PERCENTILE",
                   help="only tiles at or above this relevance percentile (0-100)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glb", description="GeoLangBind: search Earth-observation imagery by text, image and region.")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", required=True)

    ix = sub.add_parser("index", help="index scenes and chip collections (incremental)")
    ix.add_argument("paths", nargs="*", help="files or folders")
    ix.add_argument("--stac", action="append", metavar="CATALOG",
                    help="a STAC catalogue, collection or item (file or http(s) URL) whose image "
                         "assets to index; repeatable")
    ix.add_argument("--index", default=DEFAULT_INDEX, help="index folder (created if missing)")
    ix.add_argument("--rules", help="TOML rules: sensors, dates, chip locations, skips")
    ix.add_argument("--sensor", help="sensor of every file (see `glb sensors`)")
    ix.add_argument("--wavelengths", help="band centres in µm, comma-separated, for every file")
    ix.add_argument("--modality", help="modality of every file (with --wavelengths)")
    ix.add_argument("--tile-size", type=int, default=64)
    ix.add_argument("--stride", type=int, help="default: the tile size (no overlap)")
    ix.add_argument("--max-nodata", type=float, default=0.5, help="drop tiles with more no-data than this fraction")
    ix.add_argument("--batch-size", type=int, default=64)
    ix.add_argument("--commit-every", type=int, default=2048, help="tiles per commit")
    ix.add_argument("--prune", action="store_true", help="remove indexed files that no longer exist")
    ix.add_argument("--checkpoint", help="our encoder's checkpoint file (default: the released one)")
    ix.add_argument("--encoder", help="encoder name (see `glb encoders`; default: the one an existing "
                                      "index was built with, else ours)")
    ix.add_argument("--weights", help="the encoder's weights folder (or its environment variable, "
                                      "see `glb encoders`)")
    ix.add_argument("--quiet", action="store_true", help="no progress bar")
    ix.add_argument("--json", action="store_true", help="print the run report as JSON")
    ix.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                    help="run on a Ray cluster (pip install '.[ray]'): ADDRESS (HOST:PORT, auto, "
                         "ray://HOST:PORT) or, alone, a local one; index and scenes on a shared "
                         "filesystem")

    se = sub.add_parser("search", help="search an index by text, tile id or image file")
    se.add_argument("text", nargs="?", help="what to look for")
    se.add_argument("--index", default=DEFAULT_INDEX)
    se.add_argument("--bbox", help="min_lon,min_lat,max_lon,max_lat")
    se.add_argument("--region", help="polygon as GeoJSON or WKT (instead of --bbox)")
    se.add_argument("--k", type=int, default=10)
    se.add_argument("--modality", action="append", help="repeatable")
    se.add_argument("--sensor", action="append", help="repeatable")
    se.add_argument("--start", help="acquired on or after YYYY-MM-DD")
    se.add_argument("--end", help="acquired on or before YYYY-MM-DD")
    se.add_argument("--stac-collection", action="append", metavar="ID",
                    help="only scenes indexed from this STAC collection (glb index --stac; repeatable)")
    se.add_argument("--stac-item", action="append", metavar="ID",
                    help="only scenes indexed from this STAC item (repeatable)")
    se.add_argument("--tile-id", type=int, help="more like this tile")
    se.add_argument("--image", help="query image file (GeoTIFF, PNG, JPEG)")
    se.add_argument("--image-sensor", help="sensor of --image when its metadata does not say")
    se.add_argument("--image-wavelengths", help="band centres (µm) of --image")
    se.add_argument("--like", action="append", type=int, metavar="TILE_ID",
                    help="a tile marked relevant (repeatable): relevance feedback; "
                         "with marks the query TEXT may be omitted")
    se.add_argument("--unlike", action="append", type=int, metavar="TILE_ID",
                    help="a tile marked not relevant (repeatable)")
    se.add_argument("--exclude-marked", action="store_true",
                    help="leave the marked tiles out of the results (show only new ones)")
    _add_ranking_options(se, "results", "the score column is then that score")
    se.add_argument("--export-marks", metavar="FILE",
                    help="write the marks as labelled footprints: .geojson, .csv or .parquet (GeoParquet)")
    se.add_argument("--checkpoint", help="our encoder's checkpoint, where the index used another")
    se.add_argument("--weights", help="weights folder of the encoder the index was built with "
                                      "(default: its environment variable, else the recorded folder)")
    se.add_argument("--json", action="store_true", help="GeoJSON FeatureCollection on stdout (= --format geojson)")
    se.add_argument("--format", choices=["table", "geojson", "csv", "parquet"],
                    help="output: a table (default), GeoJSON, CSV or GeoParquet")
    se.add_argument("--out", help="write the results to this file (format from its suffix "
                                  "unless --format says): .geojson, .csv, .parquet")

    wa = sub.add_parser("watch", help="saved searches and their alerts on newly indexed tiles")
    wsub = wa.add_subparsers(dest="watch_command", required=True)
    wadd = wsub.add_parser("add", help="save a search under a name; alerts start from now")
    wadd.add_argument("name")
    wadd.add_argument("text", nargs="?", help="what to look for")
    wadd.add_argument("--tile-id", type=int, help="more like this tile")
    wadd.add_argument("--like", action="append", type=int, metavar="TILE_ID")
    wadd.add_argument("--unlike", action="append", type=int, metavar="TILE_ID")
    wadd.add_argument("--bbox")
    wadd.add_argument("--region")
    wadd.add_argument("--modality", action="append")
    wadd.add_argument("--sensor", action="append")
    wadd.add_argument("--start")
    wadd.add_argument("--end")
    wadd.add_argument("--stac-collection", action="append", metavar="ID")
    wadd.add_argument("--stac-item", action="append", metavar="ID")
    wadd.add_argument("--k", type=int, default=20, help="at most this many alerts a run (default 20)")
    wadd.add_argument("--min-score", type=float,
                      help="alert on new tiles scoring at least this (default: the score of "
                           "today's k-th result)")
    _add_ranking_options(wadd, "alerts a run", "--min-score is then in that score's units")
    wadd.add_argument("--replace", action="store_true", help="replace a saved search of that name")
    for name, hlp in (("list", "saved searches, with their alert counts"),
                      ("show", "a saved search and its alerts (marks them seen)"),
                      ("remove", "delete a saved search and its alerts"),
                      ("check", "check every saved search now (indexing runs do this themselves)")):
        w = wsub.add_parser(name, help=hlp)
        if name in ("show", "remove"):
            w.add_argument("name")
        if name == "show":
            w.add_argument("--new", action="store_true", help="only alerts not seen before")
        w.add_argument("--json", action="store_true") if name != "remove" else None
    for w in wsub.choices.values():
        w.add_argument("--index", default=DEFAULT_INDEX)

    inf = sub.add_parser("info", help="what an index holds")
    inf.add_argument("--index", default=DEFAULT_INDEX)
    inf.add_argument("--json", action="store_true")

    ck = sub.add_parser("check", help="verify an index's invariants")
    ck.add_argument("--index", default=DEFAULT_INDEX)
    ck.add_argument("--json", action="store_true")
    ck.add_argument("--repair", action="store_true",
                    help="bring a damaged index back to a consistent generation: drop what cannot "
                         "be recovered (the next `glb index` indexes those files again), re-derive "
                         "what can; prints what it did")

    sub.add_parser("sensors", help="list known sensors and their bands")

    ui = sub.add_parser("ui", help="start the search UI (Streamlit)")
    ui.add_argument("--index", default=DEFAULT_INDEX)
    ui.add_argument("--port", type=int, default=8501)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--weights", help="weights folder of the encoder the index was built with")

    sub.add_parser("encoders", help="list the encoders (name, weights, input size, licence)")

    tr = sub.add_parser("train", help="train the encoder")
    tr.add_argument("--config", default="training/configs/cpu-default.json")
    tr.add_argument("--out", help="run folder (default runs/<config name>)")
    tr.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")

    ev = sub.add_parser("eval", help="evaluate an encoder on the held-out splits")
    ev.add_argument("--checkpoint", help="our encoder's checkpoint (default: the released one)")
    ev.add_argument("--encoder", help="encoder name (see `glb encoders`)")
    ev.add_argument("--weights", help="the encoder's weights folder")
    ev.add_argument("--paper", metavar="DIR",
                    help="also run the paper-comparable zero-shot benchmark on DIR/<dataset>/<class>/"
                         "<image> (layout: docs/MODEL_CARD.md)")
    ev.add_argument("--paper-only", action="store_true", help="with --paper: skip our held-out table")
    ev.add_argument("--out", help="write the table (markdown and JSON) here")
    ev.add_argument("--tasks", help="comma-separated subset")
    ev.add_argument("--quick", action="store_true",
                    help="smoke run: at most a few dozen images per split (not the card's numbers)")

    be = sub.add_parser("bench", help="benchmarks (see docs/BENCHMARKS.md)")
    be.add_argument("what", choices=["search", "index", "all", "feedback", "refine", "ray-index"])
    be.add_argument("--vectors", type=int, default=100_000)
    be.add_argument("--json", action="store_true")
    be.add_argument("--smoke", action="store_true", help="seconds-long version for CI")
    be.add_argument("--write", help="write the markdown report here")
    be.add_argument("--methods", help="search: comma-separated subset of ours,ours_disk,ours_disk_cold,ours_gpu,numpy,"
                                      "duckdb_vss (ours_disk_cold: lists on disk, page cache evicted before each query) "
                                      "(results merge into an existing report); feedback: of "
                                      "query,rocchio-classic,rocchio,probe")
    be.add_argument("--encoder", help="feedback: the encoder whose embeddings the simulated analysts "
                                      "search (a name from `glb encoders`; default: the default encoder)")
    be.add_argument("--set", action="append", metavar="KEY=VALUE", dest="feedback_set",
                    help="feedback: a FeedbackConfig field for the feedback methods (repeatable; "
                         "e.g. --set confidence=0 --set margin_noise=0.25)")
    be.add_argument("--mark-neighbours", type=int, default=0, metavar="M",
                    help="feedback: a variant of the re-rank (measured, not adopted): its candidates "
                         "also take each relevant mark's M nearest unseen tiles")
    be.add_argument("--pools", help="feedback: comma-separated subset of the held-out pools "
                                    "(glb/bench/feedback_data.py)")
    be.add_argument("--repeats", type=int, default=3,
                    help="refine: runs of the query set (medians over runs are reported)")
    return p


_NUMBER_LIST = re.compile(r"^-(\d|\.\d)")


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string, in every subcommand, that takes one value."""
    out = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out |= _value_options(sub)
        elif action.option_strings and action.nargs is None:
            out.update(action.option_strings)
    return out


def _attach_negative_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`--bbox -77.06,38.80,-77.04,38.82` as users type it: argparse takes a value that starts
    with a minus for an option unless it is one plain number, so a coordinate list is joined to
    its option (`--bbox=-77.06,...`) before parsing."""
    takes_value = _value_options(parser)
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        if tok in takes_value and i + 1 < len(argv) and _NUMBER_LIST.match(argv[i + 1]):
            out.append(f"{tok}={argv[i + 1]}")
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(_attach_negative_values(parser, sys.argv[1:] if argv is None else list(argv)))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # GDAL's notes about odd-but-readable TIFF tags are noise to a user; real failures raise.
    logging.getLogger("rasterio").setLevel(logging.INFO if args.verbose else logging.ERROR)
    from engine.errors import GLBError

    try:
        return COMMANDS[args.command](args)
    except GLBError as e:
        print(f"glb {args.command}: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"glb {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug: still one line, the traceback with -v
        if args.verbose:
            import traceback

            traceback.print_exc()
        first = str(e).splitlines()[0][:300] if str(e) else ""
        print(f"glb {args.command}: internal error: {type(e).__name__}: {first} "
              f"(run with -v for the traceback)", file=sys.stderr)
        return 3


def _one_line(text: str) -> str:
    """Messages quote paths and arguments as given; a newline or escape in a file name must not
    break the one-line-per-problem contract (or a terminal)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _encoder(args):
    """The encoder a command asked for: --encoder NAME [--weights DIR] (a folder encoder's
    weights also from its environment variable); `glb index` into an existing index without
    --encoder uses the encoder that index was built with."""
    from engine.encoder import get_spec, load_encoder, weights_from_env
    from engine.encoder.factory import load_encoder_for_index

    name = getattr(args, "encoder", None)
    weights = getattr(args, "weights", None)
    checkpoint = getattr(args, "checkpoint", None)
    if name is None and args.command == "index":
        recorded = _recorded_encoder(args.index)
        if recorded is not None:
            return load_encoder_for_index(recorded, index=args.index, weights=weights,
                                          checkpoint=checkpoint)
    if name is None:
        return load_encoder(checkpoint, weights=weights) if checkpoint else load_encoder(weights=weights)
    spec = get_spec(name)
    if spec.weights == "folder":
        weights = weights or weights_from_env(spec)
    return load_encoder(name, weights=weights or checkpoint)


def _recorded_encoder(index) -> dict | None:
    """The encoder record of an existing index (None where there is no index yet)."""
    from engine.errors import GLBError
    from engine.store.layout import Layout
    from engine.store.manifest import read_current

    layout = Layout(Path(index))
    if not layout.exists():
        return None
    try:
        return read_current(layout).encoder
    except GLBError:  # unreadable: the writer reports it
        return None


def cmd_index(args) -> int:
    from engine.errors import InputError
    from engine.sensors import parse_wavelengths
    from indexer.reader import TileOptions
    from indexer.runner import IndexOptions, run_index

    if not args.paths and not args.stac:
        raise InputError("give files or folders to index, or --stac CATALOG")
    if args.tile_size < 16:
        raise InputError(f"--tile-size {args.tile_size} is below the minimum of 16")
    stride = args.stride if args.stride is not None else args.tile_size
    if stride < 1:
        raise InputError(f"--stride {stride} must be at least 1")
    if not 0 <= args.max_nodata <= 1:
        raise InputError(f"--max-nodata {args.max_nodata} must be between 0 and 1")
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size} must be at least 1")
    override = {"sensor": args.sensor, "modality": args.modality,
                "wavelengths": parse_wavelengths(args.wavelengths) if args.wavelengths else None}
    if args.sensor:
        from engine.sensors import get_sensor

        get_sensor(args.sensor)
    opts = IndexOptions(TileOptions(args.tile_size, stride, args.max_nodata, args.batch_size),
                        prune=args.prune, commit_every=args.commit_every,
                        progress=not args.quiet and sys.stderr.isatty())
    echo = lambda m: print(_one_line(m), file=sys.stderr)
    distributor = None
    if args.ray is not None:
        from indexer.ray_distributor import RayDistributor, parse_ray_flag

        distributor = RayDistributor(parse_ray_flag(args.ray))
        distributor.preflight()
    # The encoder loads once the writer lock is held: a second run started at the same time
    # is refused at once instead of after loading a model.
    report = run_index(args.paths, args.index, rules_file=args.rules, override=override,
                       options=opts, encoder=lambda: _encoder(args), echo=echo,
                       distributor=distributor, stac=args.stac)
    for line in report.failed:
        print(f"glb index: failed: {_one_line(line)}", file=sys.stderr)
    for line in report.watch_problems:
        print(f"glb index: {_one_line(line)}", file=sys.stderr)
    for line in report.notes:
        print(f"glb index: note: {_one_line(line)}", file=sys.stderr)
    if report.missing:
        print(f"glb index: {report.missing} indexed files no longer exist; --prune removes them",
              file=sys.stderr)
    if args.json:
        d = dict(report.__dict__)
        print(json.dumps(d, default=str, indent=1))
    else:
        print(_one_line(report.summary()))
    if report.interrupted:
        return 130
    return 0 if not report.failed and not report.watch_problems else 1


def cmd_search(args) -> int:
    from engine.errors import InputError

    if args.text is not None:
        try:  # bytes that are not UTF-8 reach argv as lone surrogates; the tokenizer chokes on them
            args.text.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError("query text is not valid UTF-8") from None
    idx = engine.open(args.index, checkpoint=args.checkpoint, weights=args.weights,
                      config=engine.SearchConfig.from_env())
    kw = dict(bbox=args.bbox, region=args.region, k=args.k, modality=args.modality,
              sensor=args.sensor, start=args.start, end=args.end,
              stac_collection=args.stac_collection, stac_item=args.stac_item,
              positives=args.like, negatives=args.unlike,
              exclude=(args.like or []) + (args.unlike or []) if args.exclude_marked else None,
              undated=args.undated, calibrated=args.calibrated, diversify=args.diversify,
              min_relevance=args.min_relevance, evidence=args.evidence)
    if args.export_marks:
        if not (args.like or args.unlike):
            raise InputError("--export-marks needs marks (--like / --unlike)")
        _write_marks(idx.marks(args.like or [], args.unlike or [], query=args.text), args.export_marks,
                     {"text": args.text, "like": args.like, "unlike": args.unlike})
    if args.image:
        from engine.raster import read_image
        from engine.sensors import parse_wavelengths

        arr, lay = read_image(args.image, sensor=args.image_sensor,
                              wavelengths=parse_wavelengths(args.image_wavelengths) if args.image_wavelengths else None)
        res = idx.search(image=arr, wavelengths=lay.wavelengths, image_modality=lay.modality, **kw)
    elif args.tile_id is not None:
        res = idx.search(tile_id=args.tile_id, **kw)
    elif args.text is not None or args.like:
        res = idx.search(args.text, **kw)
    else:
        raise InputError("give a query: TEXT, --tile-id, --image or --like")
    fmt = "geojson" if args.json and not args.format else args.format
    if args.out or fmt in ("geojson", "csv", "parquet"):
        from engine.export import export_results, format_for, write_results

        query = {"text": args.text, "tile_id": args.tile_id, "image": args.image, "k": args.k,
                 "bbox": args.bbox, "like": args.like, "unlike": args.unlike,
                 "ranking": res.attrs.get("ranking"), "plan": res.attrs.get("plan")}
        if args.out:
            fmt = format_for(args.out, fmt if fmt != "table" else None)
            write_results(res, args.out, fmt, query=query)
            print(f"{len(res)} results written to {args.out} ({fmt})", file=sys.stderr)
            return 0
        if fmt == "parquet" and sys.stdout.isatty():
            raise InputError("--format parquet writes binary: give --out FILE or redirect stdout")
        data = export_results(res, fmt, query=query)
        if fmt == "parquet":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        else:
            print(data.decode())
    else:
        if res.empty:
            print("no results")
            return 0
        cols = ["rank", "score", "modality", "sensor", "acquired", "scene", "tile_id"]
        rk = res.attrs.get("ranking") or {}
        if rk.get("calibrated") or rk.get("evidence") or rk.get("min_relevance") is not None:
            cols[2:2] = ["score_raw", "relevance"]   # what the ranking ordered and floored by
        hidden = [f"{n} {what}" for n, what in ((rk.get("hidden_by_diversify", 0), "hidden by --diversify"),
                                                (rk.get("below_floor", 0), "below --min-relevance")) if n]
        if hidden:
            print(f"{len(res)} results ({', '.join(hidden)})", file=sys.stderr)
        stac = [c for c in ("stac_collection", "stac_item") if res[c].notna().any()]
        out = res[cols + stac].copy()
        out["acquired"] = out["acquired"].dt.strftime("%Y-%m-%d").fillna("")
        for c in ("modality", "sensor", "scene", *stac):  # names from files: never raw escapes
            out[c] = out[c].map(lambda v: "" if v is None else _one_line(str(v)))
        print(out.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _write_marks(df, path: str, query: dict) -> None:
    """The marks as labelled footprints, through the one exporter (engine/export.py)."""
    from engine.errors import InputError
    from engine.export import SUFFIXES, write_results

    if Path(path).suffix.lower() not in SUFFIXES:
        raise InputError(f"--export-marks {path}: give a .csv, .geojson or .parquet file name")
    write_results(df, path, query=query)
    print(f"{len(df)} marks written to {path}", file=sys.stderr)


def cmd_watch(args) -> int:
    import engine
    from engine.errors import InputError

    idx = engine.open(args.index)
    w = idx.watches
    sub = args.watch_command
    if sub == "add":
        if args.text is None and args.tile_id is None and not args.like:
            raise InputError("give what to watch for: TEXT, --tile-id or --like")
        doc = w.add(args.name, args.text, k=args.k, min_score=args.min_score, replace=args.replace,
                    tile_id=args.tile_id, positives=args.like, negatives=args.unlike,
                    bbox=args.bbox, region=args.region, modality=args.modality,
                    sensor=args.sensor, start=args.start, end=args.end,
                    stac_collection=args.stac_collection, stac_item=args.stac_item,
                    undated=args.undated, calibrated=args.calibrated, diversify=args.diversify,
                    min_relevance=args.min_relevance, evidence=args.evidence)
        ms = doc["min_score"]
        print(f"saved search {doc['name']!r}: alerts on new tiles scoring "
              f"{'at least ' + format(ms, '.4f') if ms is not None else 'best'} (at most "
              f"{doc['k']} a run), from generation {doc['generation']} on")
    elif sub == "list":
        rows = w.list()
        if args.json:
            print(json.dumps(rows, default=str))
        elif not rows:
            print("no saved searches")
        for r in rows if not args.json else []:
            if "error" in r:
                print(f"{r['name']}: {_one_line(r['error'])}")
                continue
            q = r["query"]
            what = q.get("text") or (f"tile {q['tile_id']}" if q.get("tile_id") else "marks")
            print(f"{r['name']}: {what!r}, {r['alerts']} alerts ({r['new']} new), "
                  f"checked to generation {(r.get('checked') or {}).get('generation')}")
    elif sub == "show":
        doc = w.show(args.name)
        log = doc.pop("log")
        new = log[len(log) - doc["new"]:] if doc["new"] else []
        if args.new:
            log = new
        w.mark_seen(args.name)
        if args.json:
            print(json.dumps({**doc, "type": "FeatureCollection", "features": log}, default=str))
        else:
            print(json.dumps({k: v for k, v in doc.items()}, default=str, indent=1))
            for f in log:
                p = f["properties"]
                mark = "*" if f in new else " "
                print(f"{mark} {p['time']}  score {p['score']:.4f}  {p['modality']:<13} "
                      f"{p['scene']}  tile {p['tile_id']}")
    elif sub == "remove":
        w.remove(args.name)
        print(f"removed saved search {args.name!r}")
    elif sub == "check":
        from pathlib import Path

        from engine.retrieval.watch import check_watches
        from engine.store.lock import WriterLock

        with WriterLock(Path(args.index)):
            rep = check_watches(args.index)
        for line in rep.problems:
            print(f"glb watch: {_one_line(line)}", file=sys.stderr)
        if args.json:
            print(json.dumps(rep.__dict__, default=str))
        else:
            print(rep.summary() or "no saved search had new tiles to check")
        return 0 if not rep.problems else 1
    return 0


def cmd_info(args) -> int:
    info = engine.open(args.index, config=engine.SearchConfig.from_env()).info()
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:>22}: {_one_line(str(v))}")
    return 0


def cmd_check(args) -> int:
    from engine.check import check_index

    if args.repair:
        return _repair(args)
    problems, stats = check_index(args.index)
    if args.json:
        print(json.dumps({"ok": not problems, "problems": problems, **stats}))
    else:
        for p in problems:
            print(f"glb check: {_one_line(p)}", file=sys.stderr)
        if problems and os.path.isdir(os.path.join(args.index, "manifests")):
            print(f"glb check: to repair: glb check --repair --index {_one_line(str(args.index))} "
                  f"(drops what cannot be recovered; the next `glb index` indexes those files "
                  f"again)", file=sys.stderr)
        print(f"{_one_line(str(args.index))}: {'OK' if not problems else f'{len(problems)} problems'} "
              f"({stats.get('tiles', 0)} tiles, generation {stats.get('generation')})")
    return 0 if not problems else 1


def _repair(args) -> int:
    from engine.check import check_index
    from engine.repair import repair_index

    report = repair_index(args.index)
    stats = check_index(args.index, search=False)[1]
    if args.json:
        print(json.dumps({"ok": not report.problems_after, **report.__dict__, **stats}, default=str))
    else:
        for a in report.actions:
            print(f"repaired: {_one_line(a)}")
        for p in report.problems_after:
            print(f"glb check: {_one_line(p)}", file=sys.stderr)
        state = "OK" if not report.problems_after else f"{len(report.problems_after)} problems left"
        what = "nothing to repair" if not report.actions else f"{len(report.actions)} repairs"
        print(f"{args.index}: {what}; {state} ({stats.get('tiles', 0)} tiles, generation "
              f"{stats.get('generation')})")
    return 0 if not report.problems_after else 1


def cmd_sensors(args) -> int:
    from engine.sensors import registry

    for s in registry().values():
        bands = ", ".join(f"{b} {w:g}" for b, w in zip(s.bands, s.wavelengths))
        print(f"{s.name:<28} {s.modality:<13} {s.description}\n{'':<28} {bands}")
    return 0


def cmd_ui(args) -> int:
    from ui.launch import launch

    if args.weights:  # the page opens the index with engine.open: hand it the folder the same way
        from engine.encoder import get_spec

        recorded = _recorded_encoder(args.index) or {}
        spec = get_spec(recorded.get("encoder") or "glb-vit-s8")
        if spec.weights_env:
            os.environ[spec.weights_env] = str(Path(args.weights).expanduser().resolve())
    return launch(args.index, host=args.host, port=args.port)


def cmd_train(args) -> int:
    from training.train import main as train_main

    return train_main(args.config, out=args.out, resume=args.resume)


def cmd_eval(args) -> int:
    from training.evaluate import main as eval_main

    return eval_main(args.checkpoint, out=args.out, tasks=args.tasks.split(",") if args.tasks else None,
                     encoder=_encoder(args), paper=args.paper, paper_only=args.paper_only,
                     quick=args.quick)


def cmd_encoders(args) -> int:
    from engine.encoder import get_spec, list_encoders

    for name in list_encoders():
        s = get_spec(name)
        where = ("bundled" if s.weights == "bundled" else
                 f"folder: --weights DIR or {s.weights_env}=DIR")
        print(f"{name:<20} {s.image_size:>4} px  {s.normalisation:<7} {where}\n{'':<20} {s.description}\n"
              f"{'':<20} licence: {s.licence}; source: {s.source}")
    return 0


def cmd_bench(args) -> int:
    from engine.errors import InputError
    from glb.bench import main as bench_main

    if args.vectors < 1024:
        raise InputError(f"--vectors {args.vectors} is below the minimum of 1024")
    known = {"ours", "ours_disk", "ours_disk_cold", "ours_gpu", "numpy", "duckdb_vss"}
    if args.what in ("search", "all") and args.methods and not set(args.methods.split(",")) <= known:
        raise InputError(f"--methods {args.methods!r}: choose from {', '.join(sorted(known))}")
    return bench_main(args)


COMMANDS = {"index": cmd_index, "search": cmd_search, "info": cmd_info, "check": cmd_check,
            "sensors": cmd_sensors, "encoders": cmd_encoders, "ui": cmd_ui, "train": cmd_train,
            "eval": cmd_eval, "bench": cmd_bench, "watch": cmd_watch}

if __name__ == "__main__":
    sys.exit(main())
