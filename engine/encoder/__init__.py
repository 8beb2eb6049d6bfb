"""The encoder: a registry of encoders by name (encoders.toml, registry.py: ours, the paper's
DOFA-CLIP), model configs as data (`model_configs/*.json`, config.py), one entry point
(factory.py: `load_encoder`), the wavelength-conditioned image tower and the text tower."""

from .config import DEFAULT_MODEL, ModelConfig, get_model_config, list_models
from .factory import BaseEncoder, Encoder, create_image_tower, load_encoder, load_state, read_checkpoint
from .registry import DEFAULT_ENCODER, EncoderSpec, get_spec, list_encoders, register, weights_from_env
from .text import MiniLMTextTower, validate_texts
from .vit import ImageTower

__all__ = ["DEFAULT_ENCODER", "DEFAULT_MODEL", "BaseEncoder", "Encoder", "EncoderSpec",
           "ImageTower", "MiniLMTextTower", "ModelConfig", "create_image_tower", "get_model_config",
           "get_spec", "list_encoders", "list_models", "load_encoder", "load_state",
           "read_checkpoint", "register", "validate_texts", "weights_from_env"]
