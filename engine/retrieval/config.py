"""The search knobs, as data: frozen objects handed to `engine.open(path, config=...)`.

Nothing here reads the environment on import. `SearchConfig.from_env()` is the one explicit
place where GLB_* variables override defaults; the CLI and the benchmark workers call it, a
library user passes what they want.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

from ..errors import InputError


@dataclass(frozen=True)
class VectorIndexConfig:
    """The vector index (engine/retrieval/vectors.py): exact Flat below `quant_min_rows` live
    tiles, IVF-PQ with exact re-ranking at or above."""

    quant_min_rows: int = 50_000   # live tiles from which the index is quantised
    nlist: int = 1024              # IVF lists (fewer for smaller indexes: n / 64, at least 16)
    pq_m: int = 96                 # bytes per vector in the PQ code (384-d: 4 dims a sub-quantiser)
    nprobe: int = 128              # lists scanned for an unfiltered query
    rerank: int = 640              # approximate candidates re-scored exactly (at least 3 k)
    scan_target: int = 32_000      # filtered candidates the probed lists must hold
    min_nprobe: int = 8
    train_sample: int = 65_536     # vectors the quantiser is trained on (at least 40 per list)
    encode_chunk: int = 131_072    # rows encoded at a time when a segment's codes are made
    lists_ram_budget: int = 2 * 2**30  # IVF codes + ids above this many bytes: lists on disk,
    #                                    memory-mapped (engine/retrieval/ondisk.py); 1 = always
    use_gpu: int = 1               # 1: the index on a GPU where CUDA + faiss-gpu are (retrieval/gpu.py)
    gpu_flat_max_rows: int = 20_000_000  # GPU: exact up to here (fp16: 15 GB at 20 M x 384), IVF above
    gpu_fp16: int = 1              # GPU flat storage: 1 float16, 0 float32


@dataclass(frozen=True)
class PlannerConfig:
    """Where the filter planner (engine/retrieval/planner.py) switches strategy."""

    prefilter_max_rows: int = 20_000            # candidates scored exactly, no index (flat)
    prefilter_max_rows_quantised: int = 4096    # IVF-PQ: always exact up to here; up to
    exact_row_cost: int = 125                   # prefilter_max_rows when cheaper than the scan
    prefilter_max_fraction: float = 0.05        # (flat index) or this fraction of the index
    materialise_min_rows: int = 262_144         # candidate sets up to this size (or fraction)
    materialise_max_fraction: float = 0.2       # are listed; broader ones are post-filtered


FEEDBACK_METHODS = ("probe", "rocchio", "rocchio-classic")


@dataclass(frozen=True)
class FeedbackConfig:
    """Relevance feedback (engine/retrieval/feedback.py, measured in docs/FEEDBACK.md)."""

    method: str = "probe"
    background: int = 512          # index tiles sampled (within the filters) as unlabelled negatives
    background_share: float = 0.25  # their total weight against the marked negatives' 1 - share
    l2: float = 0.1                # logistic regression: L2 penalty (per unit of sample weight)
    weights: tuple = (0.0, 0.25, 0.5, 0.75, 1.0)  # blends tried by cross-validation
    default_weight: float = 0.5    # blend when the marks cannot be cross-validated: as much
                                   # query as marks (it was 0.75: docs/FEEDBACK.md says why)
    prior_weight: float = 0.0      # blend kept unless another beats its cross-validated AUC by the margin
    margin: float = 0.0            # AUC a blend must gain over the prior blend to be chosen,
    margin_noise: float = 0.0      # or this / sqrt(fewer of relevant, not relevant marks) (the
                                   # margins of the first version, 0.02 and 0.25, kept the query
                                   # too often: docs/FEEDBACK.md)
    min_auc: float = 0.0           # below this (CV AUC), the marks do not separate: query alone
    confidence: float = 0.8        # share of paired bootstrap resamples a blend must beat the query in
    bootstrap: int = 200           # resamples of the held-out marks for `confidence`
    bootstrap_max_pairs: int = 100_000  # relevant x not-relevant marks above which it is skipped
    folds: int = 5
    max_marks: int = 5000
    seed: int = 0
    # Re-ranking the refined query's top candidates by diffusion over their neighbour graph with
    # the marks (feedback.diffuse; 0 candidates = off, one vector only, as before)
    rerank_candidates: int = 100   # the refined vector's top tiles (after exclusions) re-ranked
    rerank_neighbours: int = 10    # edges per node of the candidates + marks graph
    rerank_mix: float = 0.3        # share of a node's score that comes from its neighbours
    rerank_label: float = 6.0      # a mark's score (+ relevant, - not), in query z-score units
    rerank_bandwidth: float = 0.1  # edge weight exp((cos - 1) / bandwidth)
    rerank_iterations: int = 20

    def check(self) -> "FeedbackConfig":
        if self.method not in FEEDBACK_METHODS:
            raise InputError(f"feedback method {self.method!r}: choose from {', '.join(FEEDBACK_METHODS)}")
        if self.prior_weight not in self.weights or 0.0 not in self.weights:
            raise InputError(f"feedback weights {self.weights}: must hold 0 (the query alone) and "
                             f"prior_weight {self.prior_weight}")
        if (self.rerank_candidates < 0 or self.rerank_neighbours < 1 or not 0 <= self.rerank_mix < 1
                or self.rerank_bandwidth <= 0 or self.rerank_iterations < 0):
            raise InputError("feedback re-ranking: rerank_candidates >= 0, rerank_neighbours >= 1, "
                             "0 <= rerank_mix < 1, rerank_bandwidth > 0, rerank_iterations >= 0")
        return self


# GLB_* variable -> (section, field) that `from_env` overrides
ENV = {"GLB_QUANT_MIN_ROWS": ("vectors", "quant_min_rows"), "GLB_NLIST": ("vectors", "nlist"),
       "GLB_PQ_M": ("vectors", "pq_m"), "GLB_NPROBE": ("vectors", "nprobe"),
       "GLB_IVF_RAM_BUDGET": ("vectors", "lists_ram_budget"),
       "GLB_GPU_FLAT_MAX_ROWS": ("vectors", "gpu_flat_max_rows")}


@dataclass(frozen=True)
class SearchConfig:
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    vectors: VectorIndexConfig = field(default_factory=VectorIndexConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 base: SearchConfig | None = None) -> SearchConfig:
        """`base` (default: the defaults) with the GLB_* variables of `environ` (default:
        os.environ) applied; a value that is not a positive integer is an InputError."""
        environ = os.environ if environ is None else environ
        cfg = base or cls()
        for var, (section, name) in ENV.items():
            raw = environ.get(var)
            if raw is None or raw == "":
                continue
            try:
                value = int(raw)
            except ValueError:
                value = 0
            if value <= 0:
                raise InputError(f"{var}={raw!r}: expected a positive integer")
            cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{name: value})})
        return cfg

    def describe(self) -> dict:
        return {f.name: {g.name: getattr(getattr(self, f.name), g.name)
                         for g in fields(getattr(self, f.name))} for f in fields(self)}


DEFAULT = SearchConfig()
