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
from ..normalize import normalise
from .config import DEFAULT_MODEL, ModelConfig, TextConfig, get_model_config
from .text import MiniLMTextTower
from .vit import ImageTower

log = logging.getLogger("glb.encoder")

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
# v2 (`glb-effnet-l0`) is the default since it won the model card's table; v1 (`glb-vit-s8`)
# stays shipped: indexes built with it keep opening with it.
V1_CHECKPOINT = CHECKPOINT_DIR / "glb-vit-s8.safetensors"
V2_CHECKPOINT = CHECKPOINT_DIR / "glb-effnet-l0.safetensors"
DEFAULT_CHECKPOINT = V2_CHECKPOINT
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


class BaseEncoder:
    """What every encoder shares: raw pixels -> model input (the registry entry's normalisation
    and input size), batching, and the identity recorded in an index. Subclasses provide
    `embed_preprocessed` and `encode_text`."""

    name: str
    identity: str
    dim: int
    image_size: int
    device: str
    max_image_size: int = 0  # see VisionConfig.max_image_size; 0: every input at image_size
    trained: bool = True
    normalisation: str = "glb"
    single_band_repeat: int | None = None  # repeat a one-band image to this many bands
    encoder_name: str = DEFAULT_MODEL       # the registry entry it was built from
    weights: str | None = None              # the weights folder or file, where the user chose it

    def describe(self) -> dict:
        d = {"name": self.name, "identity": self.identity, "dim": self.dim,
             "trained": self.trained, "image_size": self.image_size,
             "encoder": self.encoder_name, "normalisation": self.normalisation}
        if self.weights:
            d["weights"] = self.weights
        if self.max_image_size > self.image_size:
            d["max_image_size"] = self.max_image_size
        return d

    def input_size(self, h: int, w: int) -> int:
        """The side an h x w input is encoded at: image_size, or max_image_size for anything
        larger than image_size (resampled up or down: the ImageNet trunk sees a 96-px aerial
        photo better at 128). Two sizes only, so batches of mixed inputs split into at most
        two shapes and a tile size always maps to one model input."""
        if self.max_image_size > self.image_size and max(h, w) > self.image_size:
            return self.max_image_size
        return self.image_size

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
        x = normalise(arr, modality, value_scale, self.normalisation)
        if c == 1 and self.single_band_repeat:
            x = np.repeat(x, self.single_band_repeat, axis=1)
            wl = np.repeat(wl, self.single_band_repeat)
        t = torch.from_numpy(np.ascontiguousarray(x))
        size = self.input_size(h, w)
        if (h, w) != (size, size):
            t = F.interpolate(t, size=(size, size), mode="bilinear",
                              align_corners=False, antialias=max(h, w) > size)
        return t, torch.from_numpy(wl)

    def embed_preprocessed(self, x: torch.Tensor, wl: torch.Tensor, modality: str) -> np.ndarray:
        raise NotImplementedError

    def encode_text(self, texts: list[str] | str) -> np.ndarray:
        raise NotImplementedError

    def encode_image(self, arr: np.ndarray, wavelengths, modality: str = "rgb",
                     value_scale: float | None = None, batch_size: int = 256) -> np.ndarray:
        """float32 (B, d) rows L2-normalised; arr as stored in the file."""
        x, wl = self.preprocess(arr, wavelengths, modality, value_scale)
        outs = [self.embed_preprocessed(x[i:i + batch_size], wl, modality)
                for i in range(0, x.shape[0], batch_size)]
        return np.concatenate(outs).astype(np.float32)


class Encoder(BaseEncoder):
    """GeoLangBind's own encoder: text and image into one L2-normalised embedding space (see
    DESIGN.md's interface)."""

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
        self.max_image_size = image.cfg.vision.max_image_size
        if MiniLMTextTower.dim != self.dim:
            raise CheckpointError(f"text tower gives {MiniLMTextTower.dim}-d vectors, image tower {self.dim}-d")
        digest = (self.meta.get("sha256") or "")[:12]
        self.identity = f"{name}@{digest}" if trained else f"{name}@random-seed0"

    @property
    def text(self) -> MiniLMTextTower:
        """Loaded on first use: indexing never needs it (every cron run saves its load time)."""
        return text_tower(self.text_config)

    def encode_text(self, texts: list[str] | str) -> np.ndarray:
        return self.text.encode(texts)

    @torch.inference_mode()
    def embed_preprocessed(self, x: torch.Tensor, wl: torch.Tensor, modality: str) -> np.ndarray:
        self.image.set_modality(modality)
        return self.image(x.to(self.device), wl.to(self.device)).float().cpu().numpy()


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


def build_glb(spec, weights=None, device: str = "cpu") -> Encoder:
    """The registry's builder for our own encoder: the bundled checkpoint, or `weights` (a
    .safetensors file). With no checkpoint shipped, a randomly initialised encoder of the same
    architecture keeps the plumbing working, and says so loudly."""
    model = spec.option("model", DEFAULT_MODEL)
    path = Path(weights) if weights else CHECKPOINT_DIR / spec.option("checkpoint", f"{model}.safetensors")
    if weights is None and not path.exists():
        msg = (f"UNTRAINED ENCODER: no released checkpoint at {path}; using a randomly "
               f"initialised {model} (seed 0). Search results are meaningless until one ships.")
        log.warning(msg)
        torch.manual_seed(0)
        cfg = get_model_config(model)
        enc = Encoder(create_image_tower(cfg), cfg.text, name=f"{cfg.name}-untrained",
                      trained=False, device=device)
    else:
        cfg, state, meta = read_checkpoint(path)
        meta["sha256"] = _sha256(path)
        tower = create_image_tower(cfg)
        load_state(tower, state, str(path))
        enc = Encoder(tower, cfg.text, name=meta.get("name", cfg.name), trained=True,
                      checkpoint=str(path), meta=meta, device=device)
    enc.encoder_name = _entry_for_model(spec, cfg.name)
    enc.normalisation = spec.normalisation
    return enc


def _entry_for_model(spec, model: str) -> str:
    """The registry entry an index should record for a checkpoint file of our own encoder: the
    entry whose model the checkpoint is (a v2 file given as --checkpoint records glb-effnet-l0,
    so reopening the index builds the same architecture), else the entry it was loaded through."""
    from . import registry

    if spec.option("model", DEFAULT_MODEL) == model:
        return spec.name
    for name, other in registry.registry().items():
        if other.builder == spec.builder and other.option("model") == model:
            return name
    return spec.name


def load_encoder(name: str | Path | None = None, *, weights: str | Path | None = None,
                 device: str | None = None, model: str = DEFAULT_MODEL,
                 checkpoint: str | Path | None = None):
    """An encoder by registry name (engine/encoder/encoders.toml), e.g.
    `load_encoder("dofa-clip-b16-224", weights="DIR")`; with no name, the default (ours, the
    released checkpoint). For compatibility, `name` may also be a checkpoint file of our own
    encoder (as `checkpoint=` or `weights=` may). Reads no environment variables: the CLI and
    `engine.open` resolve a weights folder from the environment (registry.weights_from_env)."""
    from . import registry

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name is not None and registry.is_encoder_name(str(name)):
        spec = registry.get_spec(str(name))
    elif name is not None:  # a checkpoint file of our own encoder (the pre-registry call)
        spec, weights = registry.get_spec(registry.DEFAULT_ENCODER), name
    else:
        spec = registry.get_spec(registry.DEFAULT_ENCODER)
    if checkpoint is not None:
        weights = checkpoint
    if spec.name == registry.DEFAULT_ENCODER and model != DEFAULT_MODEL:
        spec = registry.EncoderSpec(**{**spec.__dict__, "options": {**spec.options, "model": model}})
    if spec.weights == "folder":
        weights = registry.require_weights(spec, weights)
    return spec.build_function()(spec, weights, device)


def load_encoder_for_index(recorded: dict, *, index: str, weights: str | Path | None = None,
                           checkpoint: str | Path | None = None, device: str | None = None):
    """The encoder an index was built with (its manifest's encoder record), so every reader
    (search, CLI, UI, API) embeds queries in the index's space. A 'folder' encoder's weights
    come from `weights`, else its environment variable, else the folder recorded at indexing."""
    from . import registry

    name = recorded.get("encoder") or registry.LEGACY_ENCODER
    built = recorded.get("identity") or name
    if not registry.is_encoder_name(name):
        raise CheckpointError(f"{index}: built with encoder {name!r}, which this version does not "
                              f"know (known: {', '.join(registry.list_encoders())})")
    spec = registry.get_spec(name)
    if spec.weights != "folder":
        return load_encoder(name, weights=weights or checkpoint, device=device)
    chosen = weights or registry.weights_from_env(spec)
    recorded_dir = recorded.get("weights")
    how = f"open it with weights=DIR (CLI: --weights DIR) or set {spec.weights_env}=DIR"
    if chosen is None and recorded_dir and not Path(recorded_dir).exists():
        raise CheckpointError(f"{index}: built with {built}, whose weights folder {recorded_dir} "
                              f"(recorded at indexing) no longer exists; {how}")
    chosen = chosen or recorded_dir
    if chosen is None:
        raise CheckpointError(f"{index}: built with {built}, which needs its weights folder; {how}")
    return load_encoder(name, weights=chosen, device=device)
