"""The v2 recipe (model configs with `tower: effnet`): an ImageNet-pretrained trunk behind the
wavelength-conditioned stem, aligned to the frozen MiniLM text space with the sigmoid loss.

Stages, each resumable from its last checkpoint in the run folder (`Trainer.run_stage`):
1. cache: every training sample preprocessed once (training/cache.py, no teachers), then the
   frozen prefix of the tower (stem at its pretrained initialisation + the stages up to stride
   16) run once over it: `mid` features, cached per group under runs/cache/;
2. probe: the projection head alone on the pooled features of the frozen trunk (the
   "frozen-trunk probe" baseline row of the model card: `probe.safetensors`);
3. late: the 1x1 head convolution and the projection trained on the cached last-stage features
   (random 90° rotations and flips of the grid). The depthwise stages stay frozen: on a 2-core
   CPU their backward pass is what a run cannot afford (11 samples/s measured for the last two
   stages, against ~80 for the head);
4. groups + merge (optional): one short `late` fine-tune per modality group, merged back by
   progressive task-vector merging on the dev split (training/merge.py);
5. stem: the stem's learned residual (and the projection) trained end to end from pixels on the
   sensors that are not plain RGB (SAR, thermal, multispectral, hyperspectral, elevation),
   with RGB replay, so each band layout adapts its first layer; the trunk stays frozen;
6. release + evaluation.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from engine.encoder import get_model_config
from engine.encoder.factory import Encoder, create_image_tower

from .cache import Cache, Group, build_cache, cache_key
from .loss import make_contrastive_loss, positives_mask
from .merge import progressive_merge
from .train import ROOT, Trainer, pick_device, seed_everything


class V2Model(nn.Module):
    def __init__(self, tower: nn.Module):
        super().__init__()
        self.tower = tower
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))


def _dihedral(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    k = int(rng.integers(0, 4))
    x = torch.rot90(x, k, dims=(2, 3))
    return torch.flip(x, dims=(3,)) if rng.integers(0, 2) else x


class V2Trainer(Trainer):
    """Trainer's sampling, checkpointing and stage loop; its own model and loss step."""

    def __init__(self, cfg: dict, cache: Cache, out: Path, device: str, log, tower: nn.Module):
        self.cfg, self.cache, self.out, self.device, self.log = cfg, cache, out, device, log
        self.model_cfg = tower.cfg
        self.model = V2Model(tower).to(device)
        self.loss_fn = make_contrastive_loss(cfg.get("loss", "siglip"), cfg.get("logit_scale", 30.0))
        self.pairs: list = []
        self.bf16 = cfg.get("precision", "fp32") == "bf16"
        self.mode = "feats"
        self.text_pos = float(cfg.get("text_positive_cos", 0.9))
        self.late_groups: list[Group] = []
        self.late_shape: tuple[int, int] = (0, 0)  # (last-stage, mid) channels

    def trainable(self, parts: list[str]) -> None:
        """Only parameters under these prefixes of the tower learn (plus SigLIP's scale and bias)."""
        for n, p in self.model.named_parameters():
            p.requires_grad = (not n.startswith("tower.")
                               or any(n.startswith(f"tower.{q}") for q in parts))

    def embed(self, x: torch.Tensor, wl: torch.Tensor) -> torch.Tensor:
        t = self.model.tower
        if self.mode == "feats":
            return t.embed_features(x)
        if self.mode == "late":
            last, mid_mean = unpack_late(x, self.late_shape)
            return t.embed_features(t.pool(mid_mean, last))
        return t(x, wl)

    def augment(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.mode == "feats":
            return x
        if self.mode == "late":  # rotate / flip the last stage's grid; the pooled part is invariant
            last, mid_mean = unpack_late(x, self.late_shape)
            return pack_late(_dihedral(last, rng), mid_mean)
        return _dihedral(x, rng)

    def step_loss(self, chunks, rng: np.random.Generator):
        embs, caps, labels, sources = [], [], [], []
        for g, idx, _ in chunks:
            x = self.augment(g.x[idx].float(), rng)
            with torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16, enabled=self.bf16):
                emb = self.embed(x.to(self.device), g.wavelengths.to(self.device))
            for j, i in enumerate(idx.tolist()):
                ids = g.caption_ids[i]
                if ids:
                    embs.append(emb[j].float())
                    caps.append(ids[int(rng.integers(0, len(ids)))])
                    labels.append(int(g.label_ids[i]))
                    sources.append(g.source)
        total = torch.zeros((), device=self.device)
        out = {}
        if len(embs) >= 2:
            img = torch.stack(embs)
            cap_t = torch.tensor(caps)
            txt = self.cache.caption_emb[cap_t].to(self.device)
            pos = positives_mask(cap_t, torch.tensor(labels)).to(self.device)
            # The same concept from two sources ("a forest" in AID, UCM and EuroSAT) is not a
            # negative: across sources, captions the text tower reads as (nearly) the same
            # count as positives. Within a source the labels decide (OMBRIA's "before the flood"
            # and "after the flood" captions are close in MiniLM and must stay apart).
            src = {s: i for i, s in enumerate(dict.fromkeys(sources))}
            src_t = torch.tensor([src[s] for s in sources], device=self.device)
            pos |= ((txt @ txt.T) >= self.text_pos) & (src_t[:, None] != src_t[None, :])
            total = self.loss_fn(img, txt, self.model.logit_scale.exp(), self.model.logit_bias,
                                 positives=pos)
            out[self.cfg.get("loss", "siglip")] = total.item()
        out["loss"] = total.item()
        return total, out

    @torch.inference_mode()
    def dev_score(self, tower_state: dict, groups: list[Group] | None = None) -> float:
        """Zero-shot accuracy on the dev split (mean over labelled sources), from the cached
        last-stage features, or from pixels when `groups` hold pixels (a stage that changes the
        stem is judged on what the stem sees)."""
        tower = copy.deepcopy(self.model.tower)
        tower.load_state_dict(tower_state)
        tower.eval()
        if groups is not None:
            return self.dev_accuracy(groups, lambda g, x: tower(x, g.wavelengths.to(self.device)))

        def from_late(g, x):
            last, mid_mean = unpack_late(x, self.late_shape)
            return tower.embed_features(tower.pool(mid_mean, last))

        return self.dev_accuracy(self.late_groups, from_late)

    def log_dev(self, stage: str, step: int) -> None:
        if self.mode == "pixels":  # the cached features do not see what a stem stage changes
            return
        score = self.dev_score(_tower_state(self.model))
        self.log(f"{stage} step {step}: dev zero-shot {score:.4f}",
                 data={"dev_stage": stage, "dev_step": step, "dev_zero_shot": score})

    def keep_if_better_on_dev(self, stage: str, before: dict, groups: list[Group] | None = None,
                              what: str = "dev zero-shot", dropped: str = "dropped") -> None:
        """A stage earns its place: the tower goes back to `before` when the stage lowered the
        dev split's zero-shot accuracy (rows training never saw)."""
        dev_before, dev_after = self.dev_score(before, groups), self.dev_score(_tower_state(self.model), groups)
        keep = dev_after >= dev_before
        self.log(f"{stage}: {what} {dev_before:.4f} -> {dev_after:.4f}: " + ("kept" if keep else dropped),
                 data={f"{stage}_dev_before": dev_before, f"{stage}_dev_after": dev_after,
                       f"{stage}_kept": keep})
        if not keep:
            self.model.tower.load_state_dict(before)


@torch.inference_mode()
def mid_features(tower, groups: list[Group], path: Path, log, batch: int = 64,
                 device: str = "cpu") -> list[torch.Tensor]:
    """The frozen prefix over every cached input, once (one file per group: an interrupted
    build resumes at the group it stopped in)."""
    path.mkdir(parents=True, exist_ok=True)
    tower.eval()
    out = []
    for gi, g in enumerate(groups):
        f = path / f"group-{gi:03d}.pt"
        if f.exists():
            out.append(torch.load(f, weights_only=True))
            continue
        t0 = time.time()
        wl = g.wavelengths
        wl = wl.to(device)
        parts = [tower.prefix(g.x[i:i + batch].to(device).float(), wl).half().cpu()
                 for i in range(0, len(g), batch)]
        mid = torch.cat(parts)
        tmp = f.with_suffix(".tmp")
        torch.save(mid, tmp)
        tmp.rename(f)
        out.append(mid)
        log(f"mid: {g.source} ({g.modality}, {len(wl)} bands): {len(g)} in {time.time() - t0:.0f} s")
    return out


def pack_late(last: torch.Tensor, mid_mean: torch.Tensor) -> torch.Tensor:
    return torch.cat([last.flatten(1), mid_mean], dim=1)


def unpack_late(x: torch.Tensor, channels: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of pack_late given (last-stage channels, mid channels); the square grid's side
    follows from the row width, so groups cached at different input sizes unpack alike."""
    c, mid = channels
    side = math.isqrt((x.shape[1] - mid) // c)
    if c * side * side + mid != x.shape[1]:
        raise ValueError(f"a packed row of {x.shape[1]} values is no {c}-channel square grid "
                         f"plus {mid} pooled values")
    return x[:, :c * side * side].reshape(-1, c, side, side), x[:, c * side * side:]


@torch.inference_mode()
def late_features(tower, mids: list[torch.Tensor], batch: int = 256,
                  device: str = "cpu") -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The frozen last stages over the cached mid features, once -> per group: the packed
    (last stage grid, mean-pooled mid) the `late` stage trains from, and the head's input
    features the probe trains from."""
    tower.eval()
    lates, feats = [], []
    for m in mids:
        lp, fp = [], []
        for i in range(0, len(m), batch):
            mid = m[i:i + batch].to(device).float()
            last = tower.blocks_suffix(mid)
            lp.append(pack_late(last, mid.mean((2, 3))).half().cpu())
            fp.append(tower.pool(mid.mean((2, 3)), last).cpu())
        lates.append(torch.cat(lp))
        feats.append(torch.cat(fp))
    return lates, feats


@torch.no_grad()
def ridge_init(tr: "V2Trainer", feat_groups: list[Group], cfg: dict, log) -> None:
    """The head's linear map by ridge regression from the frozen trunk's (layer-normed) pooled
    features onto each training sample's mean caption embedding; samples weighted so each
    source counts by the square root of its size (as the batch sampler draws them). The ridge
    strength is the one of a small grid that scores best on the dev split. Seconds of compute,
    where SigLIP from a random head needs thousands of steps to get as far."""
    tower = tr.model.tower
    hs, ts, ws = [], [], []
    for g in feat_groups:
        rows = [i for i in range(len(g)) if g.caption_ids[i] and not bool(g.dev[i])]
        if not rows:
            continue
        h = tower.head_norm(g.x[rows].float().to(tr.device))
        t = torch.stack([tr.cache.caption_emb[g.caption_ids[i]].mean(0) for i in rows]).to(tr.device)
        hs.append(torch.cat([h, torch.ones(len(rows), 1, device=tr.device)], 1))
        ts.append(nn.functional.normalize(t, dim=-1))
        ws.append(torch.full((len(rows),), 1.0 / math.sqrt(len(rows)), device=tr.device))
    h, t, w = torch.cat(hs).double(), torch.cat(ts).double(), torch.cat(ws).double()
    gram = h.T @ (h * w[:, None])
    rhs = h.T @ (t * w[:, None])
    scale = float(torch.trace(gram)) / gram.shape[0]
    best = None
    for lam in cfg.get("ridge_grid", (0.01, 0.1, 1.0)):
        sol = torch.linalg.solve(gram + lam * scale * torch.eye(gram.shape[0], dtype=gram.dtype,
                                                                device=gram.device), rhs)
        tower.head_linear.weight.copy_(sol[:-1].T.float())
        tower.head_linear.bias.copy_(sol[-1].float())
        score = tr.dev_score(_tower_state(tr.model))
        log(f"ridge: lambda {lam} x {scale:.3g}: dev zero-shot {score:.4f}")
        if best is None or score > best[0]:
            best = (score, sol)
    tower.head_linear.weight.copy_(best[1][:-1].T.float())
    tower.head_linear.bias.copy_(best[1][-1].float())


def _tower_state(model: V2Model) -> dict:
    return {k.removeprefix("tower."): v.detach().cpu().clone() for k, v in model.state_dict().items()
            if k.startswith("tower.")}


PLAIN_RGB = ("rgb",)


def main(cfg: dict, out: str | None = None, resume: bool = False) -> int:
    from .model import pretrained_effnet_tower
    from .release import write_checkpoint

    name = cfg["name"]
    out_dir = Path(out) if out else ROOT / "runs" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(out_dir / "log.jsonl", "a")

    def log(msg: str, data: dict | None = None) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
        log_file.write(json.dumps({"t": time.time(), "msg": msg, **(data or {})}) + "\n")
        log_file.flush()

    seed = cfg.get("seed", 0)
    seed_everything(seed)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    device = pick_device(cfg)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    t_start = time.time()
    model_cfg = get_model_config(cfg["model"], **cfg.get("model_overrides", {}))
    cache_dir = Path(cfg.get("cache_dir", ROOT / "runs" / "cache"))
    prep = Encoder(create_image_tower(model_cfg), model_cfg.text, name="prep", trained=False)
    cache = build_cache({**cfg, "teachers": []}, prep, cache_dir, log_fn=log)
    excluded = set(cfg.get("exclude", []))
    if excluded:
        log(f"excluded from training: {', '.join(sorted(excluded))}")
        cache.prompts = {k: v for k, v in cache.prompts.items() if k not in excluded}
    groups = [g for g in cache.groups if g.source not in excluded]
    log(f"device {device}; {sum(len(g) for g in groups)} samples in {len(groups)} groups")

    if "probe_seed" in cfg:  # the head's initialisation as well as the probe's batches
        seed_everything(cfg["probe_seed"])
    tower = pretrained_effnet_tower(model_cfg).to(device)
    v = model_cfg.vision
    mid_dir = cache_dir / f"mid-{cache_key({**cfg, 'teachers': []})}-{v.trunk}-{v.trunk_size}"
    mids = mid_features(tower, cache.groups, mid_dir, log, device=device)
    by_id = {id(g): m for g, m in zip(cache.groups, mids)}
    mid_groups = [dataclasses.replace(g, x=by_id[id(g)]) for g in groups]
    log(f"mid features ready after {time.time() - t_start:.0f} s")

    tr = V2Trainer(cfg, cache, out_dir, device, log, tower)
    lr = cfg.get("optim", {}).get("lr", 1e-3)

    # 2. probe: the projection alone over the frozen trunk's pooled features
    lates, feats = late_features(tower, [g.x for g in mid_groups], device=device)
    with torch.no_grad():
        probe = mid_groups[0].x[:1].float().to(device)
        tr.late_shape = (tower.blocks_suffix(probe).shape[1], probe.shape[1])
    feat_groups = [dataclasses.replace(g, x=f) for g, f in zip(mid_groups, feats)]
    tr.late_groups = [dataclasses.replace(g, x=la) for g, la in zip(mid_groups, lates)]
    del mids, by_id, mid_groups
    if cfg.get("ridge_init") and model_cfg.vision.head_linear and not (
            resume and (out_dir / "probe-final.pt").exists()):
        ridge_init(tr, feat_groups, cfg, log)
    tr.mode = "feats"
    tr.trainable(["head"])
    # the head alone is cheap per sample: it takes larger batches (more negatives per step)
    tr.cfg = {**cfg, "batch": cfg.get("probe_batch", cfg["batch"])}
    # probe_seed: another draw of the probe's batches over the same cache (run-to-run noise)
    tr.run_stage("probe", feat_groups, cfg["probe_steps"], cfg.get("probe_lr", lr),
                 cfg.get("probe_seed", seed), resume=resume)
    tr.cfg = cfg
    write_checkpoint(_tower_state(tr.model), model_cfg, out_dir / "probe.safetensors",
                     {"config": name, "stage": "probe (frozen trunk, trained projection)"})
    log(f"probe done after {time.time() - t_start:.0f} s")

    # 3. late: the 1x1 head convolution + projection on the cached last-stage features
    # (backpropagating through the depthwise stages is what the CPU cannot afford)
    tr.mode = "late"
    tr.trainable(["conv_head.", "bn2.", "head"])
    if cfg.get("late_steps", 0):
        before = _tower_state(tr.model)
        tr.run_stage("late", tr.late_groups, cfg["late_steps"], cfg.get("late_lr", lr), seed + 1,
                     resume=resume)
        if cfg.get("late_keep_if_better_on_dev", False):
            tr.keep_if_better_on_dev("late", before, dropped="dropped, back to the probe's head")
    base = _tower_state(tr.model)
    final, merge_history = base, []

    # 4. modality groups + progressive merging (same trainable part)
    if cfg.get("merge", False) and cfg.get("groups"):
        base_full = copy.deepcopy(tr.model.state_dict())
        group_states = {}
        for gi, (gname, modalities) in enumerate(cfg["groups"].items()):
            members = [g for g in tr.late_groups if g.modality in modalities]
            if not members:
                continue
            tr.model.load_state_dict(base_full)
            others = [g for g in tr.late_groups if g.modality not in modalities]
            tr.run_stage(f"group-{gname}", members, cfg["group_steps"], cfg.get("group_lr", lr / 3),
                         seed + 10 + gi, replay_groups=others, replay_frac=cfg.get("replay", 0.25),
                         resume=resume)
            group_states[gname] = _tower_state(tr.model)
        final, merge_history = progressive_merge(base, group_states, tr.dev_score, log=log)
        (out_dir / "merge.json").write_text(json.dumps(merge_history, indent=1))
        tr.model.load_state_dict(base_full)
        tr.model.tower.load_state_dict(final)

    # 5. stem: each band layout's first layer, end to end from pixels, trunk frozen
    if cfg.get("stem_steps", 0):
        tr.mode = "pixels"
        tr.trainable(cfg.get("stem_trainable", ["stem.", "head"]))
        before = _tower_state(tr.model)
        others = [g for g in groups if g.modality not in PLAIN_RGB]
        rgb = [g for g in groups if g.modality in PLAIN_RGB]
        tr.cfg = {**cfg, "batch": cfg.get("stem_batch", cfg["batch"])}
        tr.run_stage("stem", others, cfg["stem_steps"], cfg.get("stem_lr", lr / 3), seed + 20,
                     replay_groups=rgb, replay_frac=cfg.get("stem_replay", 0.25), resume=resume)
        tr.cfg = cfg
        if cfg.get("stem_keep_if_better_on_dev", False):
            tr.keep_if_better_on_dev("stem", before, groups, what="dev zero-shot from pixels")
        final = _tower_state(tr.model)

    ckpt = write_checkpoint(final, model_cfg, out_dir / "model.safetensors",
                            {"config": name, "train_seconds": f"{time.time() - t_start:.0f}",
                             "samples": str(sum(len(g) for g in groups)),
                             "merge": json.dumps(merge_history)})
    log(f"released {ckpt} ({ckpt.stat().st_size / 1e6:.1f} MB) after {time.time() - t_start:.0f} s")
    if cfg.get("eval_after", True):
        from .evaluate import main as eval_main

        eval_main(str(ckpt), out=str(out_dir / "eval"), tasks=cfg.get("eval_tasks"),
                  exclude_train=sorted(excluded), quick=cfg.get("eval_quick", False),
                  speed=cfg.get("eval_speed", True))
        # other checkpoints for the same table (the probe baseline, v1 on the new rows), in
        # this process: one job, one model in memory at a time
        for extra in cfg.get("eval_extra", []):
            path = out_dir / extra["checkpoint"] if extra["checkpoint"] == "probe.safetensors" \
                else ROOT / extra["checkpoint"]
            eval_main(str(path), out=str(out_dir / extra["out"]), tasks=extra.get("tasks"),
                      exclude_train=sorted(excluded), speed=extra.get("speed", False))
    log(f"done in {time.time() - t_start:.0f} s")
    return 0
