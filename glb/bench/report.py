"""docs/BENCHMARKS.md from `glb bench all` results (the measured part; the prose around it is
kept in the template below and says how to read the numbers)."""

from __future__ import annotations

import json
from pathlib import Path

CASE_ORDER = ["0.001%", "0.01%", "0.1%", "1%", "10%", "100%", "none", "modality", "date",
              "bbox+modality+date"]
LABEL = {"ours": "ours (engine.search)", "ours_disk": "ours, IVF lists on disk",
         "ours_gpu": "ours, vector index on the GPU", "numpy": "NumPy brute force", "duckdb_vss": "DuckDB VSS + spatial"}


def _f(v, nd=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def search_tables(r: dict) -> str:
    lines = []
    n = r["tiles"]
    lines.append(f"#### {n:,} vectors\n")
    disk_load = f"ours_disk {r.get('loadavg_ours_disk')}, " if r.get("loadavg_ours_disk") else ""
    lines.append(f"Load average: start {r.get('loadavg_start')}, ours {r.get('loadavg_ours')}, {disk_load}"
                 f"numpy {r.get('loadavg_numpy')}, duckdb {r.get('loadavg_duckdb')}, end {r.get('loadavg_end')}. "
                 f"{r['queries_per_case']} queries per case, {r['repeats']} runs; p50/p99 are medians over "
                 f"runs, [min–max] over runs.\n")
    methods = {m: v for m, v in r["methods"].items() if m != "ours_disk_cold"}
    head = "| case | selectivity | " + " | ".join(
        f"{LABEL[m]} p50 / p99 ms | recall@10" for m in methods if "skipped" not in methods[m]) + " |"
    lines.append(head)
    lines.append("|" + "---|" * (2 + 2 * sum(1 for m in methods if "skipped" not in methods[m])))
    for c in CASE_ORDER:
        row, sel = [], None
        for m, v in methods.items():
            if "skipped" in v:
                continue
            x = v["selectivity"].get(c) or v["filters"].get(c)
            if not x:
                row += ["–", "–"]
                continue
            sel = sel if sel is not None else x.get("selectivity")
            extra = ""
            if m in ("ours", "ours_disk", "ours_gpu") and x.get("strategy"):
                extra = " (" + ", ".join(f"{k}" for k in x["strategy"]) + ")"
            if m == "duckdb_vss" and x.get("plan"):
                extra = f" ({x['plan']})"
            spread = x.get("p99_spread_ms")
            row.append(f"{_f(x['p50_ms'])} / {_f(x['p99_ms'])}"
                       + (f" [{_f(spread[0])}–{_f(spread[1])}]" if spread else "") + extra)
            row.append(_f(x.get("recall_at_10"), 3) + (f" (min {_f(x.get('recall_min'), 2)})" if x.get("recall_min") is not None and x.get("recall_min") < 1 else ""))
        lines.append(f"| {c} | {(_f(100 * sel, 4) + ' %') if sel is not None else '–'} | " + " | ".join(row) + " |")
    lines.append("")
    lines.append("| method | build s | bytes/vector in memory | bytes/vector on disk | notes |")
    lines.append("|---|---|---|---|---|")
    for m, v in methods.items():
        if "skipped" in v:
            lines.append(f"| {LABEL[m]} | – | – | – | {v['skipped']} |")
            continue
        b = v.get("bytes_per_vector", {})
        note = ""
        if m in ("ours", "ours_disk", "ours_gpu"):
            o = v["open_s"]
            if v.get("build_s") is None:
                v["build_s"] = round(v["write_s"] + v["prepare_s"], 2)
            note = (f"write {v['write_s']} s + prepare (train, encode, tile files) {v['prepare_s']} s"
                    + (" (files from an earlier run reused: see the text for the first build)"
                       if v.get("data_reused", True) else "") + "; "
                    f"engine.open {o['median']} s [{o['min']}–{o['max']}]; index {v['index'].get('kind')} "
                    f"{json.dumps({k: v['index'][k] for k in v['index'] if k != 'kind'})}; "
                    f"structures {b.get('memory_structures')} B/vector; float32 vectors "
                    f"{b.get('disk_vectors_float32')} B/vector on disk (memory-mapped), derived files "
                    f"{b.get('disk_derived')} B/vector")
        elif m == "duckdb_vss":
            note = (f"load {v['load_s']} s, R-tree {v['rtree_build_s']} s, HNSW {v['hnsw_build_s']} s "
                    f"({v['hnsw_build_vectors_per_s']} vectors/s); in-memory database")
        elif m == "numpy":
            note = v.get("note", "float32 matrix in RAM + metadata columns")
        lines.append(f"| {LABEL[m]} | {_f(v.get('build_s'))} | {_f(b.get('memory'), 0)} | {_f(b.get('disk'), 0)} | {note} |")
    sp = methods.get("ours", {}).get("spatial_candidates")
    if sp:
        lines.append("")
        lines.append("Spatial candidates alone (p50 ms, same boxes): grid (ours) vs O(n) NumPy envelope mask vs "
                     f"DuckDB R-tree (built in {_f(methods['ours'].get('duckdb_rtree_build_s'))} s)")
        lines.append("")
        lines.append("| box | candidates | grid | NumPy mask | DuckDB R-tree |")
        lines.append("|---|---|---|---|---|")
        for c in CASE_ORDER:
            if c in sp:
                x = sp[c]
                lines.append(f"| {c} | {x['candidates_p50']:,} | {_f(x['grid_p50_ms'], 3)} | "
                             f"{_f(x['numpy_mask_p50_ms'], 3)} | {_f(x['duckdb_rtree_p50_ms'], 3)} |")
    cold = r["methods"].get("ours_disk_cold")
    if cold:
        lines.append("")
        lines.append(f"Cold page cache, IVF lists on disk ({cold['per_case']} queries a case; before each "
                     "one every file of the index evicted from the page cache; then the same query warm; "
                     f"load average {r.get('loadavg_ours_disk_cold')}):")
        lines.append("")
        lines.append("| case | cold p50 / max ms | warm p50 / max ms | read from storage p50 / max MiB | recall@10 |")
        lines.append("|---|---|---|---|---|")
        for c in CASE_ORDER:
            x = cold["cases"].get(c)
            if x:
                lines.append(f"| {c} | {_f(x['cold_p50_ms'])} / {_f(x['cold_max_ms'])} | {_f(x['warm_p50_ms'])} / "
                             f"{_f(x['warm_max_ms'])} | {_f(x['read_mib_p50'], 1)} / {_f(x['read_mib_max'], 1)} | "
                             f"{_f(x['recall_at_10'], 3)} |")
    te = r.get("text_encoder")
    if te:
        lines.append("")
        lines.append(f"Text encoder (MiniLM-L6, CPU, {te['torch_threads']} threads), one query at a time: "
                     f"p50 {te['p50_ms']} ms, p99 {te['p99_ms']} ms [p99 {te['p99_spread_ms'][0]}–"
                     f"{te['p99_spread_ms'][1]}] (tower loaded in {te['load_s']} s; load average {r.get('loadavg_text_encoder')}).")
    lines.append("")
    return "\n".join(lines)


def index_table(x: dict) -> str:
    e, c = x["end_to_end_tiles_per_s"], x["encoder_ceiling_tiles_per_s"]
    lines = [f"Load average: start {x['loadavg_start']}, end {x['loadavg_end']}; torch threads "
             f"{x['torch_threads']}; {x['tiles']} tiles from {', '.join(x['paths'])}; batch "
             f"{x['batch_size']}; {e['runs']} runs.\n",
             "| | tiles/s (median) | [min–max] |", "|---|---|---|",
             f"| end to end (`run_index`: read, tile, normalise, thumbnail, embed, store) | {e['median']} | {e['min']}–{e['max']} |",
             f"| encoder alone on preloaded tensors (ceiling) | {c['median']} | {c['min']}–{c['max']} |",
             *([f"| reader alone (one thread; what the encoder waits for) | {x['reader_alone_tiles_per_s']['median']} | "
                f"{x['reader_alone_tiles_per_s']['min']}–{x['reader_alone_tiles_per_s']['max']} |"]
               if "reader_alone_tiles_per_s" in x else []),
             f"| **ratio** | **{x['ratio']:.2f}** | |", ""]
    g = x.get("gpu", {})
    if g.get("measured"):
        lines.append(f"GPU: {g['card']}, measured bf16 matmul peak {g['matmul_bf16_peak_tflops']} TFLOP/s, "
                     f"{g['flops_per_tile'] / 1e9:.3f} GFLOP per tile.\n")
        lines.append("| batch | tiles/s | TFLOP/s | of peak |")
        lines.append("|---|---|---|---|")
        for s in g["sweep"]:
            lines.append(f"| {s['batch_size']} | {s['tiles_per_s']['median']} | {s['tflops']} | {100 * s['fraction_of_peak']:.2f} % |")
        if "end_to_end_tiles_per_s" in g:
            lines.append(f"\nEnd to end with the encoder on the GPU: {g['end_to_end_tiles_per_s']['median']} tiles/s.")
    else:
        lines.append(f"GPU: not measured here ({g.get('reason', 'no CUDA device')}).")
    return "\n".join(lines) + "\n"


def merge(old: dict, results: dict) -> dict:
    """Results of this run into those of earlier runs: per search size, per method (a run of
    some methods replaces only those)."""
    out = dict(old)
    for key, v in results.items():
        if key != "search":
            out[key] = v
            continue
        runs = v if isinstance(v, list) else [v]
        prev = out.get("search") or {}
        if isinstance(prev, list):
            prev = {str(r["vectors"]): r for r in prev}
        for r in runs:
            k = str(r["vectors"])
            if k in prev and set(r["methods"]) != set(prev[k].get("methods", {})):
                merged = dict(prev[k])
                merged["methods"] = {**prev[k].get("methods", {}), **r["methods"]}
                for f, val in r.items():
                    if f != "methods" and (f.startswith("loadavg_") or f in ("text_encoder",)):
                        merged[f] = val
                merged.setdefault("partial_runs", []).append(
                    {"methods": sorted(r["methods"]), "started": r.get("started"),
                     "loadavg_start": r.get("loadavg_start")})
                prev[k] = merged
            else:
                prev[k] = r
        out["search"] = prev
    return out


def write(path, results: dict, echo=print) -> None:
    """Merge the results into BENCHMARKS.json beside the report, then fill the measured
    sections of the report between their markers (the prose around them is kept)."""
    p = Path(path)
    raw = p.with_suffix(".json")
    old = json.loads(raw.read_text()) if raw.exists() else {}
    allres = merge(old, results)
    raw.write_text(json.dumps(allres, indent=1, default=str))
    text = p.read_text() if p.exists() else TEMPLATE
    if "<!-- index:begin -->" not in text:
        text = TEMPLATE
    parts = {}
    for k, r in sorted((allres.get("search") or {}).items(), key=lambda kv: int(kv[0])):
        parts[f"search-{k}"] = search_tables(r)
    if "index" in allres:
        parts["index"] = index_table(allres["index"])
    for key, body in parts.items():
        a, b = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
        if a not in text:  # a size the report has no place for yet: add one at the end
            text += f"\n{a}\n{b}\n"
        i, j = text.index(a) + len(a), text.index(b)
        text = text[:i] + "\n" + body + "\n" + text[j:]
    p.write_text(text)
    echo(f"wrote {p} and {raw}")


TEMPLATE = """# Benchmarks

<!-- search-100000:begin -->
<!-- search-100000:end -->

<!-- search-1000000:begin -->
<!-- search-1000000:end -->

<!-- search-10000000:begin -->
<!-- search-10000000:end -->

<!-- index:begin -->
<!-- index:end -->
"""
