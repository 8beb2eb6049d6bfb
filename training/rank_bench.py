"""Ranking across modalities, measured: raw cosine vs the engine's per-modality calibration
(engine/retrieval/ranking.py) on mixed pools of labelled tiles in several modalities.

    python -m training.rank_bench [--checkpoint F] [--rgb-every 4] [--null-sweep]

For each pool and text query: average precision (AP) over the whole mixed pool and each
modality's share of the top 20, with the plain ranking (raw cosine) and the calibrated one.
The calibration is the engine's own code, with the pool as the "index" (every tile of each
modality is its reference, as in an index of up to engine.retrieval.ranking.REFERENCE_ROWS tiles a
modality). Also: how the high/medium/low band treats real and nonsense queries.

Pools (labels from the datasets, the sensors differ):
- OMBRIA test, Sentinel-1 (SAR) + Sentinel-2 (RGB) chips before/after floods: "flooded".
- EuroSAT-MS (multispectral, train+test) + EuroSAT-RGB val (every Nth): the five shared classes.
- UC Merced test (aerial RGB) + EuroSAT-MS where the classes match (forest, river, residential,
  highway/freeway).
- UC Merced test (RGB) + MSTAR val (SAR, every 2nd) + elevation tiles + HIT-UAV test (thermal,
  every 2nd), queried with UCM's 21 class prompts and five MSTAR vehicle prompts: most
  modalities hold *no* positive for a query, as in a real archive (the pools above hold positives
  in every modality).

The third ranking, "bank", is the engine's `evidence=True` score (engine/retrieval/evidence.py):
the query's evidence against a bank of other prompts, per tile — 30 * cos(q, x) - logsumexp over
the bank and a "none of these" entry of 30 * cos, the order of log p(q | x) among the bank, that
entry and the query. Here it orders the whole pool (the engine orders each modality's top
candidates by it). The queries are class prompts, and most are in the bank themselves, which
flatters it; "bank held out" is the same score with every bank prompt within cosine 0.9 of the
query removed (the query and its near-synonyms), as for a query the bank does not hold.
`--null-sweep`: mean AP of the bank score for several cosines of the "none of these" entry
(and none), the measurement behind evidence.BANK_NULL.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from engine.modalities import MODALITIES
from engine.retrieval.evidence import Bank
from engine.retrieval.ranking import Reference

TOP = 20
HELD_OUT = 0.9        # bank prompts this close to the query are left out for "bank held out"
NULL_SWEEP = (None, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35)
UCM_MATCH = {  # query -> (UCM classes, EuroSAT classes)
    "a forest": (("forest",), ("Forest",)),
    "a river": (("river",), ("River",)),
    "a residential area with houses": (("denseresidential", "mediumresidential", "sparseresidential"),
                                       ("Residential",)),
    "a highway": (("freeway",), ("Highway",)),
}
EUROSAT_QUERIES = {"Forest": "a forest", "Industrial": "industrial buildings",
                   "Pasture": "a pasture", "Residential": "a residential area with houses",
                   "River": "a river"}
NONSENSE = ["qwertzuiop asdf", "a purple elephant playing the violin", "the square root of seven"]


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    order = np.lexsort((np.arange(len(scores)), -scores))
    pos = positive[order].astype(float)
    if pos.sum() == 0:
        return float("nan")
    hits = np.cumsum(pos)
    return float((hits / np.arange(1, len(pos) + 1) * pos).sum() / pos.sum())


class Pool:
    """Embedded tiles with modality codes and labels (sets of names)."""

    def __init__(self, name: str):
        self.name = name
        self.emb: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []
        self.labels: list[str] = []

    def add(self, emb: np.ndarray, modality: str, labels: list[str]):
        self.emb.append(emb)
        self.codes.append(np.full(len(emb), MODALITIES.index(modality), np.uint8))
        self.labels += labels

    def done(self):
        self.E = np.concatenate(self.emb)
        self.C = np.concatenate(self.codes)
        self.L = np.array(self.labels, dtype=object)
        self.ref = Reference.from_vectors(self.E, self.C)
        return self


def embed_samples(encoder, samples) -> np.ndarray:
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault((tuple(s.wavelengths), s.modality, s.pixels.shape), []).append(i)
    out = np.zeros((len(samples), encoder.dim), np.float32)
    for (wl, modality, _), idx in groups.items():
        for j in range(0, len(idx), 128):
            sel = idx[j:j + 128]
            out[sel] = encoder.encode_image(np.stack([samples[i].pixels for i in sel]), list(wl), modality)
    return out


def dataset(encoder, name, split, every=1, keep=None):
    from training.datasets import load

    ds = load(name, split)
    samples = [ds[i] for i in range(0, len(ds), every)]
    if keep is not None:
        samples = [s for s in samples if keep(s)]
    return embed_samples(encoder, samples), [s.label for s in samples], samples[0].modality


def ucm_test(encoder, classes):
    from PIL import Image

    from training.datasets import default_root

    root = default_root() / "ucm" / "test"
    arrs, labels = [], []
    for c in sorted(p.name for p in root.iterdir()):
        for f in sorted((root / c).glob("*.jpg")):
            with Image.open(f) as im:
                arrs.append(np.asarray(im.convert("RGB"), np.uint8).transpose(2, 0, 1))
            labels.append(c)
    # USGS orthoimagery: a NAIP-like camera (band centres as for NAIP in the data README)
    emb = encoder.encode_image(np.stack(arrs), [0.64, 0.56, 0.48], "rgb")
    return emb, labels


def pools(encoder, rgb_every: int):
    ms_tr = dataset(encoder, "eurosat_ms", "train")
    ms_te = dataset(encoder, "eurosat_ms", "test")
    ms = (np.concatenate([ms_tr[0], ms_te[0]]), ms_tr[1] + ms_te[1])
    out = []

    p = Pool("OMBRIA test S1 (sar) + S2 (rgb)")
    for name in ("ombria_s1", "ombria_s2"):
        e, lab, mod = dataset(encoder, name, "test")
        p.add(e, mod, lab)
    out.append((p.done(), {"flooded land": {"flooded"}, "a flooded area with water": {"flooded"}}))

    p = Pool(f"EuroSAT-MS (multispectral) + EuroSAT-RGB val, every {rgb_every}th (rgb)")
    p.add(ms[0], "multispectral", ms[1])
    e, lab, _ = dataset(encoder, "eurosat_rgb", "val", every=rgb_every)
    p.add(e, "rgb", lab)
    out.append((p.done(), {q: {c} for c, q in EUROSAT_QUERIES.items()}))

    p = Pool("UC Merced test (rgb) + EuroSAT-MS (multispectral)")
    e, lab = ucm_test(encoder, None)
    p.add(e, "rgb", lab)
    p.add(ms[0], "multispectral", ms[1])
    out.append((p.done(), {q: set(u) | set(m) for q, (u, m) in UCM_MATCH.items()}))

    from training.datasets import load

    p = Pool("UC Merced test (rgb) + MSTAR val (sar) + elevation + HIT-UAV test (thermal)")
    p.add(e, "rgb", lab)
    for name, split, every in (("mstar", "val", 2), ("elevation", "train", 1), ("hit_uav", "test", 2)):
        e2, lab2, mod = dataset(encoder, name, split, every=every)
        p.add(e2, mod, [f"{name}:{x}" for x in lab2])
    queries = {ps[0]: {c} for c, ps in load("ucm", "test").prompts().items()}
    queries.update({ps[0]: {f"mstar:{c}"} for c, ps in list(load("mstar", "val").prompts().items())[:5]})
    out.append((p.done(), queries))
    return out


def measure(encoder, pool: Pool, queries: dict[str, set], bank: Bank, null_sweep=()) -> list[dict]:
    """`null_sweep`: the "none of these" cosines to score the bank with besides its own."""
    rows = []
    present = sorted(set(pool.C.tolist()))
    for text, positive in queries.items():
        q = encoder.encode_text([text])[0]
        raw = pool.E @ q
        stats = pool.ref.stats(q)
        cal = stats.calibrate(raw, pool.C)
        pos = np.array([lab in positive for lab in pool.L])
        r = {"pool": pool.name, "query": text, "positives": int(pos.sum()), "n": len(pos)}
        rel = stats.relevance(raw, pool.C)
        pct = rel.astype(np.float64) + 1e-6 * cal  # percentile within the modality, z breaks ties
        r["ap_percentile"] = average_precision(pct, pos)
        ev = bank.evidence(raw, pool.E)
        held = Bank(bank.vectors[bank.vectors @ q < HELD_OUT], bank.scale, bank.null)
        r["ap_bank_held_out"] = average_precision(held.evidence(raw, pool.E), pos)
        r["ap_null"] = {t: average_precision(Bank(bank.vectors, bank.scale, t).evidence(raw, pool.E), pos)
                        for t in null_sweep}
        for name, s in (("raw", raw), ("calibrated", cal), ("bank", ev)):
            top = np.lexsort((np.arange(len(s)), -s))[:TOP]
            r[f"ap_{name}"] = average_precision(s, pos)
            r[f"p20_{name}"] = float(pos[top].mean())
            r[f"share_{name}"] = {MODALITIES[c]: int((pool.C[top] == c).sum()) for c in present}
        # positives per modality, for reading the shares
        r["pos_by_modality"] = {MODALITIES[c]: int((pos & (pool.C == c)).sum()) for c in present}
        rows.append(r)
    return rows


def band_check(encoder, pool: Pool, real: list[str]) -> dict:
    """Can how far the best tiles stand out (calibrated z) tell a real query from nonsense?
    Mean z of the calibrated top 1 and top 20, real vs nonsense queries."""
    out = {}
    for kind, texts in (("real", real), ("nonsense", NONSENSE)):
        top1, top20 = [], []
        for t in texts:
            q = encoder.encode_text([t])[0]
            raw = pool.E @ q
            cal = np.sort(pool.ref.stats(q).calibrate(raw, pool.C))[::-1]
            top1.append(float(cal[0]))
            top20.append(float(cal[:TOP].mean()))
        out[kind] = {"top1": float(np.mean(top1)), "top20": float(np.mean(top20))}
    return out


def fmt_share(d: dict) -> str:
    return " / ".join(f"{m} {n}" for m, n in d.items())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="encoder checkpoint (default: the released one)")
    ap.add_argument("--rgb-every", type=int, default=4, help="use every Nth EuroSAT-RGB val tile")
    ap.add_argument("--null-sweep", action="store_true",
                    help="also print the bank score's mean AP for several 'none of these' cosines")
    args = ap.parse_args(argv)
    from engine.encoder import load_encoder

    t0 = time.time()
    enc = load_encoder(args.checkpoint)
    print(f"encoder {enc.name} ({enc.identity}); top {TOP}; AP over the whole mixed pool\n")
    bank = Bank.of(enc)
    print(f"prompt bank: {len(bank.vectors)} prompts and a 'none of these' entry at cosine {bank.null} "
          f"(engine/retrieval/evidence.py)\n")
    print("| pool | query | positives (by modality) | AP raw | AP calibrated | AP bank | P@20 raw | "
          "P@20 cal. | P@20 bank | top-20 share raw | top-20 share calibrated | top-20 share bank |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    all_rows, bands, per_pool = [], [], []
    for pool, queries in pools(enc, args.rgb_every):
        rows = measure(enc, pool, queries, bank, NULL_SWEEP if args.null_sweep else ())
        all_rows += rows
        per_pool.append((pool.name, rows))
        for r in rows:
            print(f"| {r['pool']} | {r['query']} | {r['positives']} of {r['n']} ({fmt_share(r['pos_by_modality'])}) "
                  f"| {r['ap_raw']:.3f} | {r['ap_calibrated']:.3f} | {r['ap_bank']:.3f} | {r['p20_raw']:.2f} "
                  f"| {r['p20_calibrated']:.2f} | {r['p20_bank']:.2f} "
                  f"| {fmt_share(r['share_raw'])} | {fmt_share(r['share_calibrated'])} | {fmt_share(r['share_bank'])} |")
        bands.append((pool.name, band_check(enc, pool, list(queries))))
    print("\n| pool | queries | AP raw | AP calibrated | AP bank | AP bank held out | P@20 raw | P@20 cal. "
          "| P@20 bank | one-modality share of the top 20: raw / cal. / bank |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, rows in per_pool:
        m = {k: np.nanmean([r[k] for r in rows]) for k in rows[0] if k.startswith(("ap_", "p20_")) and k != "ap_null"}
        sh = [np.mean([max(r[f"share_{n}"].values()) / TOP for r in rows]) for n in ("raw", "calibrated", "bank")]
        print(f"| {name} | {len(rows)} | {m['ap_raw']:.3f} | {m['ap_calibrated']:.3f} | {m['ap_bank']:.3f} "
              f"| {m['ap_bank_held_out']:.3f} | {m['p20_raw']:.2f} | {m['p20_calibrated']:.2f} | {m['p20_bank']:.2f} "
              f"| {sh[0]:.2f} / {sh[1]:.2f} / {sh[2]:.2f} |")
    ap_raw = np.nanmean([r["ap_raw"] for r in all_rows])
    ap_cal = np.nanmean([r["ap_calibrated"] for r in all_rows])
    ap_pct = np.nanmean([r["ap_percentile"] for r in all_rows])
    ap_bank = np.nanmean([r["ap_bank"] for r in all_rows])
    ap_held = np.nanmean([r["ap_bank_held_out"] for r in all_rows])
    print(f"\nmean AP over {len(all_rows)} queries: raw {ap_raw:.3f}, calibrated (z, the engine's) "
          f"{ap_cal:.3f}, bank {ap_bank:.3f} (held out {ap_held:.3f}); ranked by percentile within "
          f"the modality instead: {ap_pct:.3f}")
    if args.null_sweep:
        print("\nbank score, mean AP by the 'none of these' entry's cosine (per pool; all queries):")
        for t in NULL_SWEEP:
            per = [np.nanmean([r["ap_null"][t] for r in rows]) for _, rows in per_pool]
            print(f"- {'none' if t is None else t}: " + " / ".join(f"{x:.3f}" for x in per)
                  + f"; all {np.nanmean([r['ap_null'][t] for r in all_rows]):.3f}")
    # how lopsided the top 20 is: the largest single-modality share, averaged
    for name in ("raw", "calibrated", "bank"):
        worst = np.mean([max(r[f"share_{name}"].values()) / TOP for r in all_rows])
        print(f"mean share of the top 20 taken by one modality ({name}): {worst:.2f}")
    print("\nreal vs nonsense queries (" + ", ".join(f"'{t}'" for t in NONSENSE) + "): mean "
          "calibrated z of the best tile / of the top 20")
    for name, b in bands:
        print(f"- {name}: real {b['real']['top1']:.1f} / {b['real']['top20']:.1f}, "
              f"nonsense {b['nonsense']['top1']:.1f} / {b['nonsense']['top20']:.1f}")
    print(f"\n({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
