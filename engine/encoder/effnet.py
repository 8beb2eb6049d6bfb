"""The v2 image tower: a wavelength-conditioned stem in front of an ImageNet-pretrained
EfficientNet-Lite trunk, pooled features -> projection into the frozen text space.

Stem (DOFA's idea, made to start from pretrained weights). The trunk's first layer is a 3x3
stride-2 convolution over ImageNet-normalised R, G, B. Here every band c with centre
wavelength λ_c gets
- an input affine a(λ_c) x + b(λ_c) that folds the engine's fixed standardisation
  ((v - 0.35) / 0.25) into ImageNet's per-channel mean/std, interpolated by wavelength;
- a kernel K(λ_c) = Σ_j w_j(λ_c) K_j + R(λ_c): a fixed interpolation of the three pretrained
  R, G, B kernels K_j (weights w_j from the wavelength: exact at 0.665 / 0.56 / 0.49 µm, "grey"
  = the mean of the three outside the visible range, so SAR, thermal and elevation start as a
  grey picture) plus a learned residual R(λ) from an MLP over the wavelength encoding, whose
  last layer starts at zero; the same MLP gives a learned correction of a and b, also zero at
  the start.
The bands' contributions are summed and scaled by 3 / C, so C bands land at the magnitude of
three and, for RGB band centres, the stem *is* the pretrained stem before training. Summing
over bands makes the output independent of band order (a permutation of bands with their
wavelengths permutes the generated kernels the same way).

Trunk and head: timm's `efficientnet_lite{0,2}` blocks (batch norm frozen to its ImageNet
statistics: batches mix sensors), input resized inside the tower from the engine's tile size
(`image_size`) to `trunk_size`; inputs of `max_image_size` (where set: larger photos and tiles)
go through at that size. The head mean-pools the stride-16 stage, the last stage and
the 1x1 head convolution, and projects (LayerNorm -> Linear -> GELU -> Linear) to the text
space. `prefix` (stem + stages up to stride 16), `blocks_suffix` and `pool` are exposed so
training can cache what it keeps frozen.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modalities import RGB_UM
from .config import ModelConfig
from .patch_embed import WavelengthEncoding

IMAGENET_MEAN = (0.485, 0.456, 0.406)   # R, G, B
IMAGENET_STD = (0.229, 0.224, 0.225)
# engine.normalize.standardise: x = (v - 0.35) / 0.25, v in [0, 1]
STD_SHIFT, STD_SCALE = 0.35, 0.25
# past the red anchor, the kernel blends from red to grey over this span (µm)
RED_TO_GREY_UM = 0.10
PREFIX_STAGES = {"efficientnet_lite0": 5, "efficientnet_lite2": 5}  # blocks[:5] end at stride 16


def anchor_weights(wavelengths: torch.Tensor) -> torch.Tensor:
    """(C,) µm -> (C, 3) interpolation weights over the R, G, B anchors (rows sum to 1).

    Blue..red: piecewise linear between the anchors; below blue: blue; from red to red + 0.1 µm
    a linear blend into grey (1/3 each), beyond that (NIR, SWIR, thermal, radar, elevation):
    grey."""
    r, g, b = RGB_UM
    w = wavelengths.float()
    out = torch.zeros(w.shape[0], 3, device=w.device)
    grey = torch.full((3,), 1.0 / 3, device=w.device)
    for i, lam in enumerate(w.tolist()):
        if lam <= b:
            out[i, 2] = 1.0
        elif lam <= g:
            t = (lam - b) / (g - b)
            out[i, 2], out[i, 1] = 1 - t, t
        elif lam <= r:
            t = (lam - g) / (r - g)
            out[i, 1], out[i, 0] = 1 - t, t
        elif lam <= r + RED_TO_GREY_UM:
            t = (lam - r) / RED_TO_GREY_UM
            out[i] = (1 - t) * torch.tensor([1.0, 0.0, 0.0], device=w.device) + t * grey
        else:
            out[i] = grey
    return out


class WavelengthStem(nn.Module):
    def __init__(self, out_channels: int, kernel_size: int = 3, stride: int = 2, wave_dim: int = 128,
                 hidden: int = 256):
        super().__init__()
        self.out_channels, self.k, self.stride = out_channels, kernel_size, stride
        # Pretrained R, G, B kernels (filled from the trunk's weights at initialisation; saved
        # with the checkpoint, so the engine never needs the source of the pretrained weights).
        self.register_buffer("anchor_kernels", torch.zeros(3, out_channels, kernel_size, kernel_size))
        self.register_buffer("anchor_mean", torch.tensor(IMAGENET_MEAN))
        self.register_buffer("anchor_std", torch.tensor(IMAGENET_STD))
        self.encode = WavelengthEncoding(wave_dim)
        self.residual = nn.Sequential(nn.Linear(wave_dim, hidden), nn.GELU(),
                                      nn.Linear(hidden, out_channels * kernel_size ** 2 + 2))
        nn.init.zeros_(self.residual[-1].weight)
        nn.init.zeros_(self.residual[-1].bias)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def generate(self, wavelengths: torch.Tensor):
        """(C,) -> kernel (out, C, k, k) already scaled by 3 / C, input scale (C,), shift (C,)."""
        c = wavelengths.shape[0]
        w = anchor_weights(wavelengths).to(self.anchor_kernels.device)        # (C, 3)
        base = torch.einsum("cj,jokl->ockl", w, self.anchor_kernels)
        res = self.residual(self.encode(wavelengths.to(self.anchor_kernels.device)))  # (C, o*k*k+2)
        kernel = base + res[:, :-2].view(c, self.out_channels, self.k, self.k).transpose(0, 1)
        mean = w @ self.anchor_mean
        std = w @ self.anchor_std
        scale = STD_SCALE / std * (1 + res[:, -2])
        shift = (STD_SHIFT - mean) / std + res[:, -1]
        return kernel * (3.0 / c), scale, shift

    def forward(self, x: torch.Tensor, wavelengths: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != wavelengths.shape[0]:
            raise ValueError(f"{x.shape[1]} bands but {wavelengths.shape[0]} wavelengths")
        if self.training or torch.is_grad_enabled():
            kernel, scale, shift = self.generate(wavelengths)
        else:  # inference: depends only on the band set; generate once per set
            key = tuple(round(float(v), 6) for v in wavelengths)
            if key not in self._cache:
                if len(self._cache) > 64:
                    self._cache.clear()
                self._cache[key] = self.generate(wavelengths)
            kernel, scale, shift = self._cache[key]
        x = x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)
        return F.conv2d(x, kernel.to(x.dtype), stride=self.stride, padding=self.k // 2)

    def train(self, mode: bool = True):
        self._cache.clear()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self._cache.clear()
        return super()._apply(fn, *args, **kwargs)


def build_trunk(name: str) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False, num_classes=0, global_pool="")


class EffNetTower(nn.Module):
    """Same interface as the ViT `ImageTower`: forward(x (B,C,S,S) standardised, wavelengths (C,))
    -> (B, embed_dim) L2-normalised."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        v = cfg.vision
        self.cfg = cfg
        self.image_size = v.image_size
        self.trunk_size = v.trunk_size
        # the sides the trunk takes as they come; anything else is resized to trunk_size
        self.native_sizes = {v.trunk_size} | ({v.max_image_size} if v.max_image_size > v.image_size else set())
        trunk = build_trunk(v.trunk)
        self.stem = WavelengthStem(trunk.conv_stem.out_channels, trunk.conv_stem.kernel_size[0],
                                   trunk.conv_stem.stride[0], v.wave_dim)
        self.bn1 = trunk.bn1
        n_prefix = PREFIX_STAGES[v.trunk]
        self.blocks_prefix = nn.Sequential(*list(trunk.blocks)[:n_prefix])
        self.blocks_suffix = nn.Sequential(*list(trunk.blocks)[n_prefix:])
        self.conv_head = trunk.conv_head
        self.bn2 = trunk.bn2
        mid = self.blocks_prefix[-1][-1].conv_pwl.out_channels
        last = self.blocks_suffix[-1][-1].conv_pwl.out_channels
        feat = mid + last + self.conv_head.out_channels
        self.prefix_channels = mid
        if v.head_linear:
            # a linear map (training initialises it by ridge regression onto the caption
            # embeddings) plus an MLP correction that starts at zero
            self.head_norm = nn.LayerNorm(feat)
            self.head_linear = nn.Linear(feat, cfg.embed_dim)
            self.head_mlp = nn.Sequential(nn.Linear(feat, v.head_hidden), nn.GELU(),
                                          nn.Linear(v.head_hidden, cfg.embed_dim))
            nn.init.zeros_(self.head_mlp[-1].weight)
            nn.init.zeros_(self.head_mlp[-1].bias)
        else:
            self.head = nn.Sequential(nn.LayerNorm(feat), nn.Linear(feat, v.head_hidden), nn.GELU(),
                                      nn.Linear(v.head_hidden, cfg.embed_dim))

    def set_modality(self, modality: str) -> None:  # the stem reads wavelengths, not names
        pass

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.modules():  # ImageNet statistics stay: batches mix sensors
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def prefix(self, x: torch.Tensor, wavelengths: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, mid, S' / 16, S' / 16), S' = S where S is one of
        `native_sizes`, else trunk_size. Mean pooling makes the head's input the same width
        at any S'."""
        if x.shape[-1] != x.shape[-2] or x.shape[-1] not in self.native_sizes:
            x = F.interpolate(x, size=(self.trunk_size, self.trunk_size), mode="bilinear",
                              align_corners=False)
        return self.blocks_prefix(self.bn1(self.stem(x, wavelengths)))

    def features(self, mid: torch.Tensor) -> torch.Tensor:
        return self.pool(mid.mean((2, 3)), self.blocks_suffix(mid))

    def pool(self, mid_mean: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Mean-pooled stride-16 features and last stage -> the head's input (B, features)."""
        head = self.bn2(self.conv_head(last))
        return torch.cat([mid_mean, last.mean((2, 3)), head.mean((2, 3))], dim=1)

    def embed_features(self, feats: torch.Tensor) -> torch.Tensor:
        if self.cfg.vision.head_linear:
            h = self.head_norm(feats)
            return F.normalize(self.head_linear(h) + self.head_mlp(h), dim=-1)
        return F.normalize(self.head(feats), dim=-1)

    def suffix(self, mid: torch.Tensor) -> torch.Tensor:
        return self.embed_features(self.features(mid))

    def forward(self, x: torch.Tensor, wavelengths: torch.Tensor) -> torch.Tensor:
        return self.suffix(self.prefix(x, wavelengths))
