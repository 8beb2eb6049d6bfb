"""The encoder: model configs as data (`model_configs/*.json`, config.py), one factory
(factory.py: `load_encoder`), the wavelength-conditioned image tower and the text tower."""

from .config import DEFAULT_MODEL, ModelConfig, get_model_config, list_models
from .factory import Encoder, create_image_tower, load_encoder, load_state, read_checkpoint
from .text import MiniLMTextTower, validate_texts
from .vit import ImageTower

__all__ = ["DEFAULT_MODEL", "Encoder", "ImageTower", "MiniLMTextTower", "ModelConfig",
           "create_image_tower", "get_model_config", "list_models", "load_encoder", "load_state",
           "read_checkpoint", "validate_texts"]
