"""Training configs (`training/configs/*.json`) as one validated, read-only object.

`load_config(name_or_path)` resolves `extends` once (a child's top-level keys replace its
parent's, chains allowed, cycles refused) and rejects unknown keys and wrong types with a
one-line InputError naming the file and the key, as `indexer/rules.py` does for rules files.
The result is a `TrainConfig`: a dict (so `cfg["batch"]`, `cfg.get("seed")` and `json.dumps`
work) that cannot be changed after loading. A new key is added here, with its type, first.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training" / "configs"

_NUM = (int, float)
KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,), "recipe": (str,), "model": (str,), "model_overrides": (dict,),
    "device": (str,), "precision": (str,), "threads": (int, type(None)), "seed": (int,),
    "sources": (dict,), "max_per_source": (int, type(None)), "max_captions_per_sample": (int,),
    "teachers": (list,), "exclude": (list,), "evaluation_splits": (dict, list),
    "cache_dir": (str,), "batch": (dict,), "stem_batch": (dict,), "optim": (dict,),
    "base_steps": (int,), "group_steps": (int,), "group_lr": _NUM, "groups": (dict,),
    "replay": _NUM, "merge": (bool,), "distill_weight": _NUM, "pair_batch": (int,),
    "pair_weight": _NUM, "text_positive_cos": _NUM, "checkpoint_every": (int,),
    "log_every": (int,), "probe_steps": (int,), "probe_lr": _NUM, "late_steps": (int,),
    "late_lr": _NUM, "stem_steps": (int,), "stem_lr": _NUM, "stem_replay": _NUM,
    "eval_after": (bool,), "eval_tasks": (list, type(None)), "eval_extra": (list,),
    "eval_quick": (bool,), "eval_speed": (bool,), "ridge_init": (bool,), "ridge_grid": (list,),
    "loss": (str,), "logit_scale": _NUM, "probe_batch": (dict,), "late_keep_if_better_on_dev": (bool,),
    "stem_trainable": (list,), "stem_keep_if_better_on_dev": (bool,), "dev_every": (int,),
    "probe_seed": (int,),
}


class TrainConfig(dict):
    """A resolved training config; read-only (a change would not be the recipe that ran)."""

    source: Path

    def _refuse(self, *args, **kwargs):
        raise TypeError("a TrainConfig is read-only; change the JSON file instead")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __reduce__(self):
        return (TrainConfig, (dict(self),))


def _find(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists() and not p.suffix:
        p = CONFIGS / f"{path}.json"
    if not p.is_file():
        raise InputError(f"--config {path}: no such file (names resolve to training/configs/NAME.json)")
    return p


def _read(p: Path, seen: tuple[Path, ...]) -> dict:
    if p.resolve() in seen:
        raise InputError(f"{p}: `extends` loops back to itself")
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{p}: a config is a JSON object")
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise InputError(f"{p}: extends must be a file name, got {base!r}")
    parent = _read(_find(p.parent / base), seen + (p.resolve(),))
    return {**parent, **raw}


def load_config(path: str | Path) -> TrainConfig:
    p = _find(path)
    cfg = _read(p, ())
    unknown = sorted(set(cfg) - set(KEYS))
    if unknown:
        raise InputError(f"{p}: unknown keys {unknown} (known: training/config.py KEYS)")
    for key, value in cfg.items():
        types = KEYS[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise InputError(f"{p}: {key} must be {names}, got {json.dumps(value)[:60]}")
    if "name" not in cfg:
        raise InputError(f"{p}: no name (the run folder is runs/<name>)")
    out = TrainConfig(cfg)
    out.source = p
    return out
