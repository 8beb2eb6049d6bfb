"""Wavelength-conditioned patch embedding (DOFA's dynamic weight generator).

Each band's centre wavelength is encoded (sin/cos of log10 λ at geometric frequencies),
passed with a learned bias token through a small transformer with no positional encoding,
and turned into that band's convolution kernel; the bias token becomes the conv bias. The
kernels of all bands are applied as one convolution, so 1 to 250+ bands share the same
weights, and permuting bands together with their wavelengths permutes the generated kernels
the same way: the patch tokens, and everything after, are unchanged.

One change from DOFA: the summed contribution of C bands is scaled by 1/C, so a 200-band
cube and a 3-band RGB tile give patch tokens of the same magnitude.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class WavelengthEncoding(nn.Module):
    """λ (µm) -> sin/cos features of log10 λ. Resolves 0.665 vs 0.705 and 11 vs 55 500."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"the wavelength embedding needs an even dimension, got {dim}")
        freqs = 2 * math.pi * torch.logspace(math.log10(0.05), math.log10(300.0), dim // 2)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, wavelengths: torch.Tensor) -> torch.Tensor:
        x = torch.log10(wavelengths.float()).unsqueeze(-1) * self.freqs
        return torch.cat([torch.sin(x), torch.cos(x)], dim=-1)


class WavelengthPatchEmbed(nn.Module):
    def __init__(self, width: int, patch_size: int, wave_dim: int = 128, layers: int = 1,
                 heads: int = 4):
        super().__init__()
        self.width, self.patch_size = width, patch_size
        self.encode = WavelengthEncoding(wave_dim)
        self.embed = nn.Sequential(nn.Linear(wave_dim, wave_dim), nn.GELU(), nn.Linear(wave_dim, wave_dim))
        layer = nn.TransformerEncoderLayer(wave_dim, heads, wave_dim * 2, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.generator = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.bias_token = nn.Parameter(torch.zeros(1, 1, wave_dim))
        self.to_kernel = nn.Linear(wave_dim, width * patch_size * patch_size)
        self.to_bias = nn.Linear(wave_dim, width)
        # Start kernels at a conv-like scale (fan-in of one band's k x k patch).
        nn.init.normal_(self.to_kernel.weight, std=0.02)
        nn.init.normal_(self.to_kernel.bias, std=1.0 / patch_size)
        nn.init.zeros_(self.to_bias.weight)
        nn.init.zeros_(self.to_bias.bias)
        nn.init.normal_(self.bias_token, std=0.02)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def generate(self, wavelengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = wavelengths.shape[0]
        tokens = self.embed(self.encode(wavelengths)).unsqueeze(0)  # (1, C, w)
        tokens = torch.cat([tokens, self.bias_token], dim=1)
        out = self.generator(tokens)[0] + tokens[0]
        k = self.patch_size
        kernel = self.to_kernel(out[:c]).view(c, self.width, k, k).transpose(0, 1) / c
        bias = self.to_bias(out[c])
        return kernel.contiguous(), bias

    def forward(self, x: torch.Tensor, wavelengths: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != wavelengths.shape[0]:
            raise ValueError(f"{x.shape[1]} bands but {wavelengths.shape[0]} wavelengths")
        if self.training or torch.is_grad_enabled():
            kernel, bias = self.generate(wavelengths)
        else:  # inference: the kernels depend only on the band set; generate once per set
            key = tuple(round(float(w), 6) for w in wavelengths)
            if key not in self._cache:
                if len(self._cache) > 64:
                    self._cache.clear()
                self._cache[key] = self.generate(wavelengths)
            kernel, bias = self._cache[key]
        x = F.conv2d(x, kernel.to(x.dtype), bias.to(x.dtype), stride=self.patch_size)
        return x.flatten(2).transpose(1, 2)  # (B, N, width)

    def train(self, mode: bool = True):
        self._cache.clear()
        return super().train(mode)


class FixedStemPatchEmbed(nn.Module):
    """Ablation baseline: one ordinary conv stem per modality, for a fixed band count each
    (inputs are resampled to that count along the band axis). What DOFA replaces."""

    STEM_BANDS = {"rgb": 3, "multispectral": 13, "sar": 2, "hyperspectral": 32, "infrared": 1,
                  "elevation": 1}

    def __init__(self, width: int, patch_size: int, **_):
        super().__init__()
        self.patch_size = patch_size
        self.stems = nn.ModuleDict({m: nn.Conv2d(c, width, patch_size, patch_size)
                                    for m, c in self.STEM_BANDS.items()})
        self.modality = "rgb"  # set by the caller before forward

    def forward(self, x: torch.Tensor, wavelengths: torch.Tensor) -> torch.Tensor:
        c = self.STEM_BANDS[self.modality]
        if x.shape[1] != c:  # sort bands by wavelength, resample the band axis to c
            order = torch.argsort(wavelengths)
            x = x[:, order]
            b, n, h, w = x.shape
            x = F.interpolate(x.permute(0, 2, 3, 1).reshape(b * h, w, n), size=c,
                              mode="linear", align_corners=True)
            x = x.reshape(b, h, w, c).permute(0, 3, 1, 2)
        x = self.stems[self.modality](x)
        return x.flatten(2).transpose(1, 2)
