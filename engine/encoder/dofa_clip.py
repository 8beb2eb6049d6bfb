"""The paper's own weights (DOFA-CLIP / GeoLangBind, xiong-zhitong/DOFA-CLIP) behind the same
`Encoder` surface as ours, built from a folder the user downloads.

Model = stock open_clip SigLIP (`create_model(name, pretrained=None)`, nothing downloaded) with
the vision trunk's conv stem replaced by our implementation of DOFA's dynamic patch embedding
(engine/encoder/patch_embed.py, key names `visual.trunk.patch_embed.{weight_generator,fclayer}.*`).
Loading is strict: after unwrapping `{"state_dict": ...}`, removing a `module.` prefix and
dropping the training-only `translators.*` keys, the checkpoint must hold exactly the model's
keys with the model's shapes. Tensors are cast to float32 (fp16 files included); on a GPU the
forward pass runs under bf16 autocast. The image embedding is the trunk's MAP-pooled output
(the authors' `model.visual.trunk(image, wvs)`), the text embedding open_clip's
`encode_text`; both L2-normalised.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CheckpointError
from .factory import BaseEncoder, load_state
from .patch_embed import DofaPatchEmbed
from .text import validate_texts

log = logging.getLogger("glb.encoder.dofa_clip")

WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
DOFA_PREFIX = "visual.trunk.patch_embed."
DROPPED_PREFIXES = ("translators.",)  # MaKA's training-only feature translators


def create_model(spec, device: str | torch.device = "cpu", *, init_seed: int | None = 0):
    """The architecture of `spec`: stock open_clip + DOFA patch embedding. Built on the meta
    device (no memory, no time spent on random initialisation) and then materialised on
    `device`: with `init_seed`, filled with seeded random weights (tests, benchmarks); with
    None left uninitialised for a strict load to fill (the model has no buffers, so a strict
    load overwrites every tensor). device="meta": names and shapes only.
    Option `depth` (tests only) keeps the first N blocks of both towers."""
    import open_clip

    o = spec.options
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns "initialized randomly": intended here
    try:
        with torch.device("meta"):
            model = open_clip.create_model(o["open_clip_model"], pretrained=None, device="meta",
                                           pretrained_text=False)
    finally:
        logging.disable(previous)
    trunk = model.visual.trunk
    with torch.device("meta"):
        trunk.patch_embed = DofaPatchEmbed(
            embed_dim=o["embed_dim"], patch_size=o["patch_size"], img_size=spec.image_size,
            wave_dim=o.get("wave_dim", 128), weight_tokens=o.get("weight_tokens", 128),
            heads=o.get("generator_heads", 4), ffn=o.get("generator_ffn", 2048),
            padding=o.get("patch_padding", 1), kernel_scale=o.get("kernel_scale", 0.01))
    grid = trunk.patch_embed.num_patches
    if trunk.pos_embed.shape[1] != grid:
        raise CheckpointError(f"{spec.name}: DOFA patch grid has {grid} patches but the trunk's "
                              f"position embedding {trunk.pos_embed.shape[1]}")
    if o.get("depth"):
        d = int(o["depth"])
        trunk.blocks = torch.nn.Sequential(*list(trunk.blocks)[:d])
        model.text.transformer.resblocks = torch.nn.ModuleList(list(model.text.transformer.resblocks)[:d])
        model.text.transformer.layers = d
    if str(device) == "meta":
        return model
    saved = set(model.state_dict())
    unsaved = [n for n, _ in model.named_buffers() if n not in saved]
    if unsaved:  # to_empty would leave them uninitialised and no checkpoint fills them
        raise CheckpointError(f"{spec.name}: buffers {unsaved[:3]} are not in a state dict; "
                              f"this open_clip/timm version needs another loading path")
    model = model.to_empty(device=device)
    if init_seed is not None:
        random_init(model, init_seed)
    return model


@torch.no_grad()
def random_init(model, seed: int = 0) -> None:
    """Seeded stand-in weights (no pretrained weights exist here): matrices N(0, 0.02), norms
    1 / 0, SigLIP's initial logit scale (log 10) and bias (-10)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name == "logit_scale":
            p.fill_(float(np.log(10.0)))
        elif name == "logit_bias":
            p.fill_(-10.0)
        elif p.ndim == 1 and name.endswith("bias"):
            p.zero_()
        elif p.ndim == 1:  # norm weights
            p.fill_(1.0)
        else:
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def image_features(model, x: torch.Tensor, wavelengths: torch.Tensor) -> torch.Tensor:
    """The authors' `model.visual.trunk(x, wvs)`: DOFA patch tokens -> timm ViT -> MAP pool."""
    trunk = model.visual.trunk
    t = trunk.patch_embed(x, wavelengths)
    t = trunk._pos_embed(t)
    t = trunk.patch_drop(t)
    t = trunk.norm_pre(t)
    t = trunk.blocks(t)
    t = trunk.norm(t)
    return trunk.forward_head(t)


# --- the weights folder -------------------------------------------------------------------------
def find_weights_file(spec, weights) -> Path:
    p = Path(weights).expanduser()
    if p.is_file():
        return p
    if not p.is_dir():
        raise CheckpointError(f"{p}: no such weights folder for encoder {spec.name} (expected the "
                              f"downloaded open_clip folder holding {' or '.join(WEIGHT_FILES)})")
    for name in WEIGHT_FILES:
        if (p / name).is_file():
            return p / name
    raise CheckpointError(f"{p}: holds neither {' nor '.join(WEIGHT_FILES)}; expected the "
                          f"{spec.name} folder from {spec.source.split(';')[0]}")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint file -> flat float32 state dict with the model's key names."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file: one line naming it
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and set(state) == {wrapper} and isinstance(state[wrapper], dict):
            state = state[wrapper]
        elif isinstance(state, dict) and isinstance(state.get(wrapper), dict) and \
                not any(torch.is_tensor(v) for v in state.values()):
            state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: holds no state dict")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    out = {}
    for k, v in state.items():
        if k.startswith(DROPPED_PREFIXES):
            continue
        if not torch.is_tensor(v):
            raise CheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
        out[k] = v.float() if v.is_floating_point() else v
    return out


def check_dofa_keys(state: dict, source: str, spec) -> None:
    has_dofa = any(k.startswith(DOFA_PREFIX + "weight_generator.") for k in state)
    if not has_dofa:
        stock = (DOFA_PREFIX + "proj.weight") in state
        what = ("a stock SigLIP checkpoint (its patch embedding is the fixed conv "
                "visual.trunk.patch_embed.proj.*)" if stock else "not a DOFA-CLIP checkpoint")
        raise CheckpointError(f"{source}: {what}; encoder {spec.name} needs DOFA-CLIP weights with "
                              f"{DOFA_PREFIX}weight_generator.* and {DOFA_PREFIX}fclayer.*")


def check_folder_config(folder: Path, spec) -> None:
    """A folder's open_clip_config.json, where present, must describe the registry's model:
    a B-16 folder given for the L-384 entry fails here with a readable message."""
    cfg_path = folder / "open_clip_config.json"
    if not cfg_path.is_file():
        return
    try:
        cfg = json.loads(cfg_path.read_text()).get("model_cfg", {})
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: unreadable ({e})") from None
    import open_clip

    ours = open_clip.get_model_config(spec.options["open_clip_model"])
    checks = [("embed_dim", cfg.get("embed_dim"), ours["embed_dim"]),
              ("vision_cfg.image_size", cfg.get("vision_cfg", {}).get("image_size"), spec.image_size)]
    for key in ("width", "layers", "heads", "vocab_size", "context_length"):
        checks.append((f"text_cfg.{key}", cfg.get("text_cfg", {}).get(key), ours["text_cfg"].get(key)))
    for key, theirs, expected in checks:
        if theirs is not None and theirs != expected:
            raise CheckpointError(f"{cfg_path}: {key} is {theirs} but encoder {spec.name} expects "
                                  f"{expected}: is this the folder of another model?")


def load_tokenizer(folder: Path, spec):
    """The SigLIP tokenizer from the folder's own files, offline (open_clip's HFTokenizer, as
    `get_tokenizer("local-dir:FOLDER")` would build it)."""
    import open_clip

    fast, spm = (folder / "tokenizer.json").is_file(), (folder / "spiece.model").is_file()
    if not (fast or spm):
        raise CheckpointError(f"{folder}: no tokenizer files (tokenizer.json, or spiece.model with "
                              f"tokenizer_config.json); encoder {spec.name} reads its tokenizer from "
                              f"the weights folder: download the whole folder, not only the weights")
    if not fast:
        try:
            import sentencepiece  # noqa: F401
        except ImportError:
            raise CheckpointError(f"{folder}: has only spiece.model, which needs the sentencepiece "
                                  f"package: pip install sentencepiece==0.2.3") from None
    text_cfg = open_clip.get_model_config(spec.options["open_clip_model"])["text_cfg"]
    kwargs = dict(text_cfg.get("tokenizer_kwargs", {}))
    try:
        return open_clip.tokenizer.HFTokenizer(str(folder), context_length=text_cfg["context_length"],
                                               local_files_only=True, **kwargs)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds here
        raise CheckpointError(f"{folder}: its tokenizer files cannot be read ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None


_SHA: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _SHA[key] = h.hexdigest()
    return _SHA[key]


class DofaClipEncoder(BaseEncoder):
    def __init__(self, spec, model, tokenizer, *, identity: str, weights: str, device: str = "cpu"):
        self.spec = spec
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.name = self.encoder_name = spec.name
        self.identity = identity
        self.weights = weights
        self.device = str(device)
        self.trained = True
        self.normalisation = spec.normalisation
        self.single_band_repeat = spec.option("single_band_repeat")
        self.image_size = spec.image_size
        self.dim = int(model.text.text_projection.out_features)
        self.logit_scale = float(model.logit_scale.detach().exp())  # sigmoid scores: σ(s·cos + b)
        self.logit_bias = float(model.logit_bias.detach()) if getattr(model, "logit_bias", None) is not None else 0.0

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.startswith("cuda"))

    @torch.inference_mode()
    def embed_preprocessed(self, x: torch.Tensor, wl: torch.Tensor, modality: str) -> np.ndarray:
        with self._autocast():
            f = image_features(self.model, x.to(self.device), wl.to(self.device))
        return F.normalize(f.float(), dim=-1).cpu().numpy()

    @torch.inference_mode()
    def encode_text(self, texts: list[str] | str) -> np.ndarray:
        texts = validate_texts(texts)
        tokens = self.tokenizer(texts).to(self.device)
        with self._autocast():
            e = self.model.encode_text(tokens)
        return F.normalize(e.float(), dim=-1).cpu().numpy().astype(np.float32)


def build(spec, weights, device: str = "cpu") -> DofaClipEncoder:
    """The registry's builder for `dofa-clip-*` entries: `weights` is the downloaded folder
    (or its weights file, with the tokenizer files beside it)."""
    path = find_weights_file(spec, weights)
    folder = path.parent
    check_folder_config(folder, spec)
    tokenizer = load_tokenizer(folder, spec)
    state = read_state_dict(path)
    check_dofa_keys(state, str(path), spec)
    model = create_model(spec, init_seed=None)
    load_state(model, state, str(path))
    identity = f"{spec.name}@{file_sha256(path)[:12]}"
    log.info("loaded %s from %s", identity, path)
    return DofaClipEncoder(spec, model, tokenizer, identity=identity,
                           weights=str(Path(weights).expanduser().resolve()), device=device)
