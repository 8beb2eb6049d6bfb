"""The encoder registry: which encoders exist, how each is built, where its weights come from,
its input size and its pixel normalisation. The entries are data (`encoders.toml`); this module
reads them into frozen `EncoderSpec`s and turns a name (+ an optional weights location) into an
encoder through the entry's builder.

Fields of an entry:
- builder: "module:function"; called as `function(spec, weights, device)` and returns an object
  with the `Encoder` surface (encode_text, encode_image, preprocess, embed_preprocessed,
  describe, identity, dim, image_size, device). Imported on first use, so an encoder's
  libraries load only when it is chosen.
- weights: "bundled" (a file that ships with the package; `weights=` may name another file) or
  "folder" (a folder the user downloads; required).
- weights_env: the environment variable naming that folder (read by `weights_from_env`, which
  the CLI and `engine.open` call; `load_encoder` itself reads no environment).
- image_size, normalisation ("glb" or "siglip", see engine/normalize.py), licence, source,
  description; options: the builder's own knobs (kept as a read-only mapping).

To add an encoder: add a table to encoders.toml. A new kind of model also needs a builder
function; `register(spec)` adds an entry at run time (tests, plugins).
"""

from __future__ import annotations

import importlib
import os
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from ..errors import CheckpointError, InputError

REGISTRY_FILE = Path(__file__).parent / "encoders.toml"
DEFAULT_ENCODER = "glb-effnet-l0"
# Stores written before the registry record no encoder name; every one of them was built with
# v1, so a missing name means v1, whatever the default is now.
LEGACY_ENCODER = "glb-vit-s8"
WEIGHTS_KINDS = ("bundled", "folder")
NORMALISATIONS = ("glb", "siglip")


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    builder: str
    weights: str = "bundled"
    image_size: int = 64
    normalisation: str = "glb"
    description: str = ""
    licence: str = ""
    source: str = ""
    weights_env: str | None = None
    options: Mapping = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self):
        if self.weights not in WEIGHTS_KINDS:
            raise ValueError(f"encoder {self.name!r}: weights must be one of {WEIGHTS_KINDS}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"encoder {self.name!r}: normalisation must be one of {NORMALISATIONS}")
        if ":" not in self.builder:
            raise ValueError(f"encoder {self.name!r}: builder must be 'module:function'")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def option(self, key: str, default=None):
        return self.options.get(key, default)

    def build_function(self):
        module, func = self.builder.split(":")
        return getattr(importlib.import_module(module), func)


_EXTRA: dict[str, EncoderSpec] = {}


@lru_cache(maxsize=1)
def _from_file() -> dict[str, EncoderSpec]:
    data = tomllib.loads(REGISTRY_FILE.read_text())
    return {name: EncoderSpec(name=name, **entry) for name, entry in data.items()}


def registry() -> dict[str, EncoderSpec]:
    return {**_from_file(), **_EXTRA}


def register(spec: EncoderSpec) -> EncoderSpec:
    """Add (or replace) an entry at run time; encoders.toml is the place for permanent ones."""
    _EXTRA[spec.name] = spec
    return spec


def list_encoders() -> list[str]:
    return sorted(registry())


def is_encoder_name(value) -> bool:
    return isinstance(value, str) and value in registry()


def get_spec(name: str) -> EncoderSpec:
    reg = registry()
    if name not in reg:
        raise InputError(f"unknown encoder {name!r}; known: {', '.join(sorted(reg))}")
    return reg[name]


def weights_from_env(spec: EncoderSpec, environ: Mapping | None = None) -> str | None:
    """The configuration layer's view of where a user keeps an encoder's weights."""
    if not spec.weights_env:
        return None
    value = (environ if environ is not None else os.environ).get(spec.weights_env, "").strip()
    return value or None


def require_weights(spec: EncoderSpec, weights) -> Path:
    """A 'folder' encoder's weights location, or a one-line error saying what is expected."""
    if weights is None or str(weights).strip() == "":
        how = f"--weights DIR or {spec.weights_env}=DIR" if spec.weights_env else "--weights DIR"
        raise CheckpointError(
            f"encoder {spec.name} needs its weights folder (an open_clip Hugging Face folder with "
            f"open_clip_model.safetensors or open_clip_pytorch_model.bin and the tokenizer files; "
            f"{spec.licence.split(';')[0]}, from {spec.source.split(';')[0]}): give {how}")
    return Path(weights).expanduser()


def build(name: str, weights=None, device: str = "cpu"):
    spec = get_spec(name)
    if spec.weights == "folder":
        weights = require_weights(spec, weights)
    return spec.build_function()(spec, weights, device)
