"""How much the frozen v2 trunk's features know at a given input size: a logistic-regression
probe on the pooled features of N training images, scored on N held-out images (the model
card's "Input size" paragraph).

    python -m training.probe_input_size --size 64 --size 128 [--n 1000] [--sets aid,ucm]

Each size builds the pretrained tower at that size (stem at its initialisation, trunk as
ImageNet left it, no head): what the trunk offers the head, not what a released head does.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from engine.encoder import get_model_config
from engine.encoder.factory import Encoder, create_image_tower
from training.datasets import load as load_dataset
from training.evaluate import subset
from training.model import pretrained_effnet_tower

SPLITS = {"aid": ("train", "val"), "ucm": ("train", "test")}


@torch.inference_mode()
def pooled_features(prep: Encoder, tower, name: str, split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset(name, split)
    idx = subset(len(ds), n)
    feats, labels = [], []
    for j in range(0, len(idx), 64):
        xs = []
        for i in idx[j:j + 64]:
            s = ds[i]
            x, wl = prep.preprocess(s.pixels, s.wavelengths, s.modality)
            xs.append(x)
            labels.append(s.label)
        feats.append(tower.features(tower.prefix(torch.cat(xs).float(), wl.float())).numpy())
    return np.concatenate(feats), np.array(labels)


def probe(size: int, name: str, n: int, log=print) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    cfg = get_model_config("glb-effnet-l0", image_size=size, trunk_size=size)
    prep = Encoder(create_image_tower(cfg), cfg.text, name="probe", trained=False)
    tower = pretrained_effnet_tower(cfg).eval()
    t0 = time.time()
    train, test = SPLITS[name]
    x_tr, y_tr = pooled_features(prep, tower, name, train, n)
    x_te, y_te = pooled_features(prep, tower, name, test, n)
    scaler = StandardScaler().fit(x_tr)
    clf = LogisticRegression(C=0.1, max_iter=3000).fit(scaler.transform(x_tr), y_tr)
    acc = float(np.mean(clf.predict(scaler.transform(x_te)) == y_te))
    log(f"{name} at {size} px: probe top-1 {100 * acc:.1f} % ({len(y_tr)} train, {len(y_te)} "
        f"held out, {time.time() - t0:.0f} s)")
    return acc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.probe_input_size", description=__doc__)
    ap.add_argument("--size", type=int, action="append", required=True, help="input side in px (repeatable)")
    ap.add_argument("--n", type=int, default=1000, help="images per split (default 1000)")
    ap.add_argument("--sets", default="aid", help=f"comma-separated, of {', '.join(SPLITS)}")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    for name in args.sets.split(","):
        if name not in SPLITS:
            raise SystemExit(f"unknown set {name!r}; known: {', '.join(SPLITS)}")
        for size in args.size:
            probe(size, name, args.n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
