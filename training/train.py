"""`glb train --config training/configs/<name>.json`: the GeoLangBind recipe, CPU or GPU.

Stages (each resumable from its last checkpoint in the run folder):
1. cache: frozen inputs, teacher features and caption embeddings (training/cache.py);
2. base: the image tower from scratch on every source: SigLIP loss against the frozen MiniLM
   caption embeddings + MaKA distillation of patch tokens into each teacher's features + an
   image-image SigLIP term on the same place seen by two sensors (OMBRIA, Sen1Floods11,
   BigEarthNet S1/S2 pairs);
3. groups: one fine-tune per modality group from the base (with some replay of the rest);
4. merge: progressive task-vector merging on the dev split (training/merge.py);
5. release: the merged image tower as safetensors, loadable by engine.load_encoder.
Then evaluation on the held-out splits (training/evaluate.py) when the config asks.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.encoder import get_model_config
from engine.encoder.factory import Encoder
from engine.encoder.vit import ImageTower
from engine.errors import InputError

from .cache import Cache, Group, build_cache
from .checkpoint import load_checkpoint, save_checkpoint
from .config import load_config
from .loss import MultiPositiveSigLipLoss, distillation_loss, positives_mask
from .merge import progressive_merge
from .model import TrainModel
from .params import make_optimizer
from .scheduler import warmup_cosine_schedule

ROOT = Path(__file__).resolve().parents[1]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(cfg: dict) -> str:
    d = cfg.get("device", "auto")
    return ("cuda" if torch.cuda.is_available() else "cpu") if d == "auto" else d


# Sources whose samples of the same place pair up across sensors (Sample.pair_key).
PAIRED_SOURCES = [("ombria_s1", "ombria_s2"), ("sen1floods11_s1", "sen1floods11_s2"),
                  ("bigearthnet_s1", "bigearthnet_s2")]


def pair_pools(groups: list[Group], cfg: dict, log) -> list[tuple[Group, torch.Tensor, Group, torch.Tensor]]:
    """(group A, rows, group B, rows) of training samples showing the same place with two
    sensors. Captions of such pairs are nearly identical ("before the flood"), so only an
    image-image term teaches the encoder that a radar chip and an optical chip are the same
    place; it is what makes cross-sensor search work (the paper aligns through text alone)."""
    from training.datasets import load

    pools = []
    by_source = {g.source: g for g in groups}
    for a, b in PAIRED_SOURCES:
        ga, gb = by_source.get(a), by_source.get(b)
        if ga is None or gb is None:
            continue
        maps = []
        for g in (ga, gb):
            ds = load(g.source, cfg["sources"][g.source].get("split", "train"))
            pk = {}
            for i in range(len(ds)):
                smp = ds[i]
                pk[smp.key] = smp.pair_key
            maps.append({pk.get(k): i for i, k in enumerate(g.keys) if not g.dev[i] and pk.get(k)})
        common = sorted(set(maps[0]) & set(maps[1]))
        if common:
            pools.append((ga, torch.tensor([maps[0][k] for k in common]),
                          gb, torch.tensor([maps[1][k] for k in common])))
            log(f"pairs: {a} <-> {b}: {len(common)}")
    return pools


class Trainer:
    def __init__(self, cfg: dict, cache: Cache, out: Path, device: str, log):
        self.cfg, self.cache, self.out, self.device, self.log = cfg, cache, out, device, log
        self.model_cfg = get_model_config(cfg.get("model", "glb-vit-s8"),
                                          **cfg.get("model_overrides", {}))
        self.distill = float(cfg.get("distill_weight", 1.0))
        teacher_dims = cache.teacher_dims if self.distill > 0 else {}
        self.model = TrainModel(self.model_cfg, teacher_dims).to(device)
        self.loss_fn = MultiPositiveSigLipLoss()
        self.pair_loss_fn = MultiPositiveSigLipLoss()
        self.pair_weight = float(cfg.get("pair_weight", 1.0))
        self.pairs: list = []
        self.stats = {k: (m.to(device), s.to(device)) for k, (m, s) in cache.teacher_stats.items()}
        self.bf16 = cfg.get("precision", "fp32") == "bf16"

    # --- sampling ------------------------------------------------------------------------
    def pools(self, groups: list[Group]) -> list[tuple[Group, torch.Tensor]]:
        return [(g, torch.nonzero(~g.dev).flatten()) for g in groups if (~g.dev).any()]

    def sample_batch(self, pools, rng: np.random.Generator, replay=None, replay_frac=0.0,
                     use_pairs: bool = False):
        b = self.cfg["batch"]["size"]
        k = self.cfg["batch"].get("sources_per_batch", 4)
        chunks = []
        plan = [(pools, b, k)]
        if replay and replay_frac > 0:
            nr = int(round(b * replay_frac))
            plan = [(pools, b - nr, max(1, k - 1)), (replay, nr, 1)]
        for pl, size, kk in plan:
            if size <= 0 or not pl:
                continue
            w = np.array([math.sqrt(len(p)) for _, p in pl], dtype=float)
            w /= w.sum()
            chosen = rng.choice(len(pl), size=min(kk, len(pl)), replace=False, p=w)
            per = max(1, size // len(chosen))
            for ci in chosen:
                g, pool = pl[ci]
                idx = pool[torch.from_numpy(rng.integers(0, len(pool), per))]
                chunks.append((g, idx, None))
        n_pairs = int(self.cfg.get("pair_batch", 0))
        if use_pairs and self.pairs and n_pairs > 0:
            w = np.array([math.sqrt(len(p[1])) for p in self.pairs], dtype=float)
            ga, ia, gb, ib = self.pairs[int(rng.choice(len(self.pairs), p=w / w.sum()))]
            pick = torch.from_numpy(rng.integers(0, len(ia), n_pairs))
            chunks += [(ga, ia[pick], "pair_a"), (gb, ib[pick], "pair_b")]
        return chunks

    @staticmethod
    def augment(x: torch.Tensor, grids: dict[str, torch.Tensor], rng: np.random.Generator):
        """Same random dihedral transform on the pixels (B,C,H,W) and on the teachers' token
        grids (B,8,8,D): distillation targets stay aligned with what the student sees."""
        k = int(rng.integers(0, 4))
        flip = bool(rng.integers(0, 2))
        x = torch.rot90(x, k, dims=(2, 3))
        grids = {n: torch.rot90(t, k, dims=(1, 2)) for n, t in grids.items()}
        if flip:
            x = torch.flip(x, dims=(3,))
            grids = {n: torch.flip(t, dims=(2,)) for n, t in grids.items()}
        return x, grids

    def step_loss(self, chunks, rng: np.random.Generator):
        embs, caps, labels, distill_terms = [], [], [], []
        pair_emb = {}
        for g, idx, tag in chunks:
            x = g.x[idx].float()
            grids = {n: t[idx].float().view(len(idx), 8, 8, -1) for n, t in g.teachers.items()
                     if n in self.model.translators}
            x, grids = self.augment(x, grids, rng)
            wl = g.wavelengths.to(self.device)
            with torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16, enabled=self.bf16):
                emb, tokens = self.model(x.to(self.device), wl, g.modality)
            tokens = tokens.float()
            if tag is not None:
                pair_emb[tag] = emb.float()
            for n, grid in grids.items():
                m = g.teacher_mask[n][idx]
                if not m.any():
                    continue
                mean, std = self.stats[n]
                target = (grid.reshape(len(idx), 64, -1)[m].to(self.device) - mean) / std
                pred = self.model.translators[n](tokens[m.to(self.device)], wl)
                distill_terms.append(distillation_loss(pred, target))
            for j, i in enumerate(idx.tolist()):
                ids = g.caption_ids[i]
                if ids:
                    embs.append(emb[j].float())
                    caps.append(ids[int(rng.integers(0, len(ids)))])
                    labels.append(int(g.label_ids[i]))
        out = {}
        total = torch.zeros((), device=self.device)
        if len(embs) >= 2:
            img = torch.stack(embs)
            cap_t = torch.tensor(caps)
            txt = self.cache.caption_emb[cap_t].to(self.device)
            pos = positives_mask(cap_t, torch.tensor(labels)).to(self.device)
            clip = self.loss_fn(img, txt, self.model.logit_scale.exp(), self.model.logit_bias, positives=pos)
            total = total + clip
            out["siglip"] = clip.item()
        if distill_terms:
            d = torch.stack(distill_terms).mean()
            total = total + self.distill * d
            out["distill"] = d.item()
        if len(pair_emb) == 2 and self.pair_weight > 0:
            a, b = pair_emb["pair_a"], pair_emb["pair_b"]
            pos = torch.eye(len(a), dtype=torch.bool, device=a.device)
            pl = self.pair_loss_fn(a, b, self.model.pair_logit_scale.exp(), self.model.pair_logit_bias,
                                   positives=pos)
            total = total + self.pair_weight * pl
            out["pairs"] = pl.item()
        out["loss"] = total.item()
        return total, out

    # --- a stage -------------------------------------------------------------------------
    def run_stage(self, name: str, groups: list[Group], steps: int, lr: float, seed: int,
                  replay_groups: list[Group] | None = None, replay_frac: float = 0.0,
                  resume: bool = False, use_pairs: bool = False) -> dict:
        final = self.out / f"{name}-final.pt"
        if resume and final.exists():
            self.log(f"{name}: done earlier, loading {final.name}")
            self.model.load_state_dict(torch.load(final, map_location=self.device, weights_only=True))
            return {}
        opt_cfg = self.cfg.get("optim", {})
        opt = make_optimizer(self.model, lr, opt_cfg)
        sched = warmup_cosine_schedule(opt, steps, opt_cfg.get("warmup", 0.05))
        ckpt = self.out / f"{name}-ckpt.pt"
        start = 0
        rng = np.random.default_rng(seed)
        if resume and ckpt.exists():
            start = load_checkpoint(ckpt, self.model, opt, sched, rng, self.device)
            self.log(f"{name}: resuming at step {start}")
        pools = self.pools(groups)
        replay = self.pools(replay_groups) if replay_groups else None
        every = self.cfg.get("checkpoint_every", 100)
        t0, seen, hist = time.time(), 0, []
        self.model.train()
        for step in range(start, steps):
            chunks = self.sample_batch(pools, rng, replay, replay_frac, use_pairs=use_pairs)
            loss, parts = self.step_loss(chunks, rng)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            opt.step()
            sched.step()
            seen += sum(len(i) for _, i, _ in chunks)
            hist.append(parts)
            if (step + 1) % self.cfg.get("log_every", 25) == 0 or step + 1 == steps:
                avg = {k: float(np.mean([h[k] for h in hist if k in h])) for k in hist[-1]}
                rate = seen / max(1e-9, time.time() - t0)
                self.log(f"{name} step {step + 1}/{steps} " + " ".join(f"{k} {v:.4f}" for k, v in avg.items())
                         + f" lr {sched.get_last_lr()[0]:.2e} {rate:.0f} samples/s", data={"stage": name, "step": step + 1, **avg, "samples_per_s": rate})
                hist = []
            dev_every = self.cfg.get("dev_every", 0)
            if dev_every and ((step + 1) % dev_every == 0 or step + 1 == steps):
                self.log_dev(name, step + 1)
            if (step + 1) % every == 0 and step + 1 < steps:
                save_checkpoint(ckpt, self.model, opt, sched, step + 1, rng)
        self.model.eval()
        torch.save(self.model.state_dict(), final)
        ckpt.unlink(missing_ok=True)
        return {"seconds": time.time() - t0, "samples": seen}

    def log_dev(self, stage: str, step: int) -> None:
        """The dev split's zero-shot accuracy during a stage (`dev_every`), so a step count is
        chosen from rows training never sees. Only the v2 recipe has one cheap enough to take
        every few steps (train_v2.V2Trainer); `main` refuses the key for v1 configs."""

    # --- dev score for merging -----------------------------------------------------------
    @torch.inference_mode()
    def dev_score(self, tower_state: dict) -> float:
        tower = ImageTower(self.model_cfg).to(self.device)
        tower.load_state_dict(tower_state)
        tower.eval()

        def embed(g, x):
            tower.set_modality(g.modality)
            return tower(x, g.wavelengths.to(self.device))

        return self.dev_accuracy(self.cache.groups, embed)

    @torch.inference_mode()
    def dev_accuracy(self, groups: list[Group], embed) -> float:
        """Zero-shot top-1 on the dev rows of `groups`, mean over the labelled sources with two
        or more classes; `embed(group, x)` maps a batch of the group's cached inputs to
        L2-normalised embeddings."""
        accs = []
        for source, classes in self.cache.prompts.items():
            names = list(classes)
            if len(names) < 2:
                continue
            cls_emb = torch.stack([F.normalize(self.cache.caption_emb[ids].mean(0), dim=-1) for ids in classes.values()]).to(self.device)
            correct = total = 0
            for g in groups:
                if g.source != source or not g.dev.any():
                    continue
                idx = torch.nonzero(g.dev).flatten()
                for i in range(0, len(idx), 256):
                    sel = idx[i:i + 256]
                    e = embed(g, g.x[sel].float().to(self.device))
                    pred = (e @ cls_emb.T).argmax(1).cpu()
                    lab = [self.cache.labels[j][1] if j >= 0 else None for j in g.label_ids[sel].tolist()]
                    for p, l in zip(pred.tolist(), lab):
                        if l is not None:
                            correct += int(names[p] == l)
                            total += 1
            if total:
                accs.append(correct / total)
        return float(np.mean(accs)) if accs else 0.0


def tower_state(model: TrainModel) -> dict:
    return {k.removeprefix("tower."): v.detach().cpu().clone() for k, v in model.state_dict().items()
            if k.startswith("tower.")}


def main(config: str, out: str | None = None, resume: bool = False) -> int:
    cfg = load_config(config)
    if cfg.get("recipe") == "v2":  # pretrained trunk (tower "effnet"): training/train_v2.py
        from .train_v2 import main as main_v2

        return main_v2(cfg, out=out, resume=resume)
    if cfg.get("dev_every"):
        raise InputError(f"{cfg.source}: dev_every needs the v2 recipe (its dev score reads cached features)")
    name = cfg["name"]
    out_dir = Path(out) if out else ROOT / "runs" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(out_dir / "log.jsonl", "a")

    def log(msg: str, data: dict | None = None) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {msg}", flush=True)
        log_file.write(json.dumps({"t": time.time(), "msg": msg, **(data or {})}) + "\n")
        log_file.flush()

    seed_everything(cfg.get("seed", 0))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    device = pick_device(cfg)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    t_start = time.time()
    model_cfg = get_model_config(cfg.get("model", "glb-vit-s8"), **cfg.get("model_overrides", {}))
    prep = Encoder(ImageTower(model_cfg), model_cfg.text, name="prep", trained=False)
    cache = build_cache(cfg, prep, Path(cfg.get("cache_dir", ROOT / "runs" / "cache")), log_fn=log)
    log(f"device {device}; {cache.info['samples']} samples in {len(cache.groups)} groups; "
        f"teachers {list(cache.teacher_dims)}")
    tr = Trainer(cfg, cache, out_dir, device, log)
    # Leave-one-source-out runs train on the shared cache minus the excluded sources.
    all_groups = [g for g in cache.groups if g.source not in set(cfg.get("exclude", []))]
    if cfg.get("exclude"):
        log(f"excluded from training: {', '.join(cfg['exclude'])}")
        tr.cache.prompts = {k: v for k, v in cache.prompts.items() if k not in cfg["exclude"]}
    seed = cfg.get("seed", 0)
    if int(cfg.get("pair_batch", 0)) > 0:
        tr.pairs = pair_pools(all_groups, cfg, log)
    tr.run_stage("base", all_groups, cfg["base_steps"], cfg.get("optim", {}).get("lr", 1e-3), seed,
                 resume=resume, use_pairs=True)
    base = tower_state(tr.model)
    merge_history = []
    final = base
    if cfg.get("merge", True) and cfg.get("groups"):
        base_full = copy.deepcopy(tr.model.state_dict())
        group_states = {}
        for gi, (gname, modalities) in enumerate(cfg["groups"].items()):
            members = [g for g in all_groups if g.modality in modalities]
            if not members:
                continue
            tr.model.load_state_dict(base_full)
            others = [g for g in all_groups if g.modality not in modalities]
            tr.run_stage(f"group-{gname}", members, cfg["group_steps"], cfg.get("group_lr", 3e-4),
                         seed + 1 + gi, replay_groups=others, replay_frac=cfg.get("replay", 0.25),
                         resume=resume)
            group_states[gname] = tower_state(tr.model)
        final, merge_history = progressive_merge(base, group_states, tr.dev_score,
                                                 log=lambda m: log(m))
        (out_dir / "merge.json").write_text(json.dumps(merge_history, indent=1))
    from .release import write_checkpoint

    ckpt = write_checkpoint(final, model_cfg, out_dir / "model.safetensors",
                            {"config": name, "train_seconds": f"{time.time() - t_start:.0f}",
                             "samples": str(cache.info["samples"]),
                             "merge": json.dumps(merge_history)})
    log(f"released {ckpt} ({ckpt.stat().st_size / 1e6:.1f} MB) after {time.time() - t_start:.0f} s")
    if cfg.get("eval_after", True):
        from .evaluate import main as eval_main

        eval_main(str(ckpt), out=str(out_dir / "eval"), tasks=cfg.get("eval_tasks"),
                  exclude_train=cfg.get("exclude", []))
    log(f"done in {time.time() - t_start:.0f} s")
    return 0
