"""One factory for the encoder: config (data) + checkpoint (safetensors) -> `Encoder`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CheckpointError, InputError
from ..modalities import check_modality
from ..normalize import standardise, to_unit_scale
from .config import DEFAULT_MODEL, ModelConfig, TextConfig, get_model_config
from .text import MiniLMTextTower
from .vit import ImageTower

log = logging.getLogger("glb.encoder")

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "glb-effnet-l0.safetensors"   # v2 (docs/MODEL_CARD.md)
V1_CHECKPOINT = CHECKPOINT_DIR / "glb-vit-s8.safetensors"             # v1, still loadable
MIN_SIDE = 16
MAX_BANDS = 256


def create_image_tower(cfg: ModelConfig | str = DEFAULT_MODEL) -> ImageTower:
    """The tower a config names: v1 ViT (`tower: vit`) or v2 pretrained CNN (`tower: effnet`)."""
    if isinstance(cfg, str):
        cfg = get_model_config(cfg)
    if cfg.vision.tower == "effnet":
        from .effnet import EffNetTower

        return EffNetTower(cfg)
    if cfg.vision.tower != "vit":
        raise CheckpointError(f"model {cfg.name}: unknown tower {cfg.vision.tower!r}")
    return ImageTower(cfg)


def read_checkpoint(path: str | Path) -> tuple[ModelConfig, dict, dict]:
    """-> (config, image tower state dict, metadata). Errors name the file and the problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    if "model_config" not in meta:
        raise CheckpointError(f"{path}: no model_config in its metadata; not a GeoLangBind checkpoint")
    cfg = ModelConfig.from_dict(json.loads(meta["model_config"]))
    return cfg, state, meta


def load_state(tower: ImageTower, state: dict, source: str) -> None:
    own = tower.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs "
                         f"{tuple(own[k].shape)})")
        raise CheckpointError(f"{source}: does not match the architecture: {'; '.join(parts)}")
    tower.load_state_dict(state)


class Encoder:
    """Text and image into one L2-normalised embedding space (see DESIGN.md's interface)."""

    def __init__(self, image: ImageTower, text_config: TextConfig, *, name: str, trained: bool,
                 checkpoint: str | None = None, meta: dict | None = None, device: str = "cpu"):
        self.image = image.eval().to(device)
        self.text_config = text_config
        self.name = name
        self.trained = trained
        self.checkpoint = checkpoint
        self.meta = meta or {}
        self.device = device
        self.dim = image.cfg.embed_dim
        self.image_size = image.cfg.vision.image_size
        if MiniLMTextTower.dim != self.dim:
            raise CheckpointError(f"text tower gives {MiniLMTextTower.dim}-d vectors, image tower {self.dim}-d")
        digest = (self.meta.get("sha256") or "")[:12]
        self.identity = f"{name}@{digest}" if trained else f"{name}@random-seed0"

    def describe(self) -> dict:
        return {"name": self.name, "identity": self.identity, "dim": self.dim,
                "trained": self.trained, "image_size": self.image_size}

    @property
    def text(self) -> MiniLMTextTower:
        """Loaded on first use: indexing never needs it (every cron run saves its load time)."""
        return text_tower(self.text_config)

    def encode_text(self, texts: list[str] | str) -> np.ndarray:
        return self.text.encode(texts)

    def preprocess(self, arr: np.ndarray, wavelengths, modality: str,
                   value_scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (C,H,W)/(B,C,H,W) pixels -> standardised (B,C,S,S) tensor and wavelengths."""
        modality = check_modality(modality)
        arr = np.asarray(arr)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4:
            raise InputError(f"image array must be (C,H,W) or (B,C,H,W), got shape {arr.shape}")
        b, c, h, w = arr.shape
        if c == 0:
            raise InputError("image has 0 bands")
        if c > MAX_BANDS:
            raise InputError(f"image has {c} bands; at most {MAX_BANDS} are supported")
        if h < MIN_SIDE or w < MIN_SIDE:
            raise InputError(f"image is {h}x{w} pixels; both sides must be at least {MIN_SIDE}")
        try:
            wl = np.asarray([float(x) for x in wavelengths], dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError(f"wavelengths {wavelengths!r} are not numbers in µm") from None
        if wl.shape[0] != c:
            raise InputError(f"{c} bands but {wl.shape[0]} wavelengths: give one wavelength (µm) per band")
        if not np.all(np.isfinite(wl)) or np.any(wl <= 0):
            raise InputError(f"wavelengths must be positive numbers in µm, got {wl.tolist()}")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise InputError("pixels contain NaN or Inf: fill or mask no-data before encoding")
        x = standardise(to_unit_scale(arr, modality, value_scale))
        t = torch.from_numpy(np.ascontiguousarray(x))
        if (h, w) != (self.image_size, self.image_size):
            t = F.interpolate(t, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=max(h, w) > self.image_size)
        return t, torch.from_numpy(wl)

    @torch.inference_mode()
    def embed_preprocessed(self, x: torch.Tensor, wl: torch.Tensor, modality: str) -> np.ndarray:
        self.image.set_modality(modality)
        return self.image(x.to(self.device), wl.to(self.device)).float().cpu().numpy()

    def encode_image(self, arr: np.ndarray, wavelengths, modality: str = "rgb",
                     value_scale: float | None = None, batch_size: int = 256) -> np.ndarray:
        """float32 (B, d) rows L2-normalised; arr as stored in the file."""
        x, wl = self.preprocess(arr, wavelengths, modality, value_scale)
        outs = [self.embed_preprocessed(x[i:i + batch_size], wl, modality)
                for i in range(0, x.shape[0], batch_size)]
        return np.concatenate(outs).astype(np.float32)


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_TEXT_CACHE: dict[tuple, MiniLMTextTower] = {}


def text_tower(text_cfg: TextConfig) -> MiniLMTextTower:
    """One text tower per process and configuration (it is frozen and shared)."""
    key = (text_cfg.package, text_cfg.max_tokens)
    if key not in _TEXT_CACHE:
        _TEXT_CACHE[key] = MiniLMTextTower(text_cfg.package, text_cfg.max_tokens)
    return _TEXT_CACHE[key]


def shipped_checkpoint(identity: str | None) -> Path | None:
    """The checkpoint shipped in engine/checkpoints/ whose name an encoder identity
    ("<name>@<sha256 prefix>") gives, when it is there and is not the default; None otherwise
    (then the default loads, and a mismatch is refused by the index with a clear message)."""
    if not identity or "@" not in identity:
        return None
    p = CHECKPOINT_DIR / f"{identity.split('@', 1)[0]}.safetensors"
    return p if p.is_file() and p.resolve() != DEFAULT_CHECKPOINT.resolve() else None


def load_encoder(checkpoint: str | Path | None = None, *, device: str | None = None,
                 model: str = DEFAULT_MODEL) -> Encoder:
    """The released checkpoint by default. With no checkpoint shipped, a randomly initialised
    encoder of the same architecture keeps the plumbing working, and says so loudly."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    if checkpoint is None and not path.exists():
        msg = (f"UNTRAINED ENCODER: no released checkpoint at {path}; using a randomly "
               f"initialised {model} (seed 0). Search results are meaningless until one ships.")
        log.warning(msg)
        torch.manual_seed(0)
        cfg = get_model_config(model)
        return Encoder(create_image_tower(cfg), cfg.text, name=f"{cfg.name}-untrained",
                       trained=False, device=device)
    cfg, state, meta = read_checkpoint(path)
    meta["sha256"] = _sha256(path)
    tower = create_image_tower(cfg)
    load_state(tower, state, str(path))
    return Encoder(tower, cfg.text, name=meta.get("name", cfg.name), trained=True,
                   checkpoint=str(path), meta=meta, device=device)
