"""Which wording of a class's zero-shot prompts to use, chosen on the dev split (the 1 in 10
training samples no training step sees, training/cache.py `_is_dev`), never on a test split:

    python -m training.prompt_choice --dataset ombria_s1 --dataset ombria_s2 \\
        --class "not flooded" --words "land that is not flooded" --words "dry land" ...

For each dataset and each candidate wording of the class (every template of the dataset's
prompts filled with it, the other classes as they are), the zero-shot top-1 of the encoder on
the dev samples of the training split and, printed beside it for the record, on the held-out
split that the model card reports (`training/evaluate.py ZERO_SHOT`). Pick by the dev column.
`--probe`: also a logistic regression on the embeddings of the whole training split, scored on
the held-out split: how well the image side separates the classes whatever the wording.
"""

from __future__ import annotations

import argparse

import numpy as np


def accuracy(classes: tuple[list[str], np.ndarray], embeddings: np.ndarray, labels: list) -> float:
    """Zero-shot top-1 against `classes` = (names, unit text embeddings)."""
    names, ce = classes
    pred = (embeddings @ ce.T).argmax(1)
    return float(np.mean([names[p] == lab for p, lab in zip(pred, labels)]))


class _Rows:
    """Some samples of a dataset, in the shape `training.evaluate.embed_dataset` reads."""

    def __init__(self, ds, idx: list[int]):
        self.ds, self.idx = ds, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int):
        return self.ds[self.idx[i]]


def main(argv=None) -> int:
    from engine.encoder import load_encoder
    from training.cache import _is_dev
    from training.datasets import load
    from training.evaluate import ZERO_SHOT, embed_dataset, prompt_embeddings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", action="append", required=True)
    ap.add_argument("--class", dest="cls", required=True, help="the class whose wording is chosen")
    ap.add_argument("--words", action="append", required=True, help="a candidate wording (repeatable)")
    ap.add_argument("--checkpoint", default=None, help="encoder checkpoint (default: the released one)")
    ap.add_argument("--probe", action="store_true", help="also a linear probe: train split -> held-out split")
    args = ap.parse_args(argv)
    enc = load_encoder(args.checkpoint)
    print(f"encoder {enc.identity}; class {args.cls!r}; zero-shot top-1 (%)")
    for name in args.dataset:
        held_split = dict(ZERO_SHOT)[name]
        train = load(name, "train")
        dev = [i for i in range(len(train)) if _is_dev(train[i].key)]
        held = load(name, held_split)
        e_held, y_held, _ = embed_dataset(enc, held)
        if args.probe:  # the whole training split, of which the dev samples are a part
            from sklearn.linear_model import LogisticRegression

            e_tr, y_tr, _ = embed_dataset(enc, train)
            e_dev, y_dev = e_tr[dev], [y_tr[i] for i in dev]
            clf = LogisticRegression(C=1.0, max_iter=5000).fit(e_tr, y_tr)
            print(f"| {name} | linear probe on the embeddings (train n = {len(y_tr)}) | | {held_split} "
                  f"{100 * float(np.mean(clf.predict(e_held) == np.array(y_held))):.1f} |")
        else:
            e_dev, y_dev, _ = embed_dataset(enc, _Rows(train, dev))
        base = held.prompts()
        if args.cls not in base:
            raise SystemExit(f"{name}: no class {args.cls!r} (classes: {', '.join(base)})")
        current = held.class_words.get(args.cls, args.cls)
        for words in args.words:
            classes = prompt_embeddings(enc, {c: ([p.replace(current, words) for p in ps] if c == args.cls else ps)
                                              for c, ps in base.items()})
            print(f"| {name} | {words}{' (current)' if words == current else ''} | dev "
                  f"{100 * accuracy(classes, e_dev, y_dev):.1f} (n = {len(dev)}) | {held_split} "
                  f"{100 * accuracy(classes, e_held, y_held):.1f} (n = {len(held)}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
