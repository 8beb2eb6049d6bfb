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


# --- DOFA-CLIP's patch embedding (the paper's weights) ------------------------------------------
# Attribute names are the checkpoint's key names under visual.trunk.patch_embed: they must not
# change. Structure as published (see docs/MODEL_CARD.md, "The paper's own weights").


def dofa_wavelength_features(wavelengths: torch.Tensor, dim: int) -> torch.Tensor:
    """λ (µm) -> (C, dim): DOFA's 1-D sin/cos embedding of λ x 1000 at frequencies
    10000^(-i / (dim/2)), sines then cosines (computed in float32, as the authors do)."""
    freqs = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float32,
                                         device=wavelengths.device) / (dim / 2.0))
    angles = (wavelengths.float().reshape(-1) * 1000)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class DofaResidualMLP(nn.Module):
    """`fclayer`: x + relu(w2(relu(w1(x))))."""

    def __init__(self, dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, dim)
        self.w2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.w2(F.relu(self.w1(x))))


class DofaWeightGenerator(nn.Module):
    """`weight_generator`: one post-norm transformer layer (no positional encoding) over
    [weight_tokens, band tokens, bias_token]; band outputs (+ the band tokens) -> per-band
    kernels (fc_weight), the bias token's output -> the conv bias (fc_bias)."""

    def __init__(self, dim: int, kernel_numel: int, out_channels: int, n_tokens: int = 128,
                 heads: int = 4, ffn: int = 2048):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=dim, nhead=heads, dim_feedforward=ffn,
                                           dropout=0.0, activation="gelu", norm_first=False,
                                           batch_first=False)
        self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=1,
                                                         enable_nested_tensor=False)
        self.fc_weight = nn.Linear(dim, kernel_numel)
        self.fc_bias = nn.Linear(dim, out_channels)
        self.weight_tokens = nn.Parameter(torch.randn(n_tokens, dim) * 0.02)
        self.bias_token = nn.Parameter(torch.randn(1, dim) * 0.02)
        for m in (self.fc_weight, self.fc_bias):
            nn.init.xavier_uniform_(m.weight)
            nn.init.constant_(m.bias, 0.01)

    def forward(self, band_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.weight_tokens.shape[0]
        seq = torch.cat([self.weight_tokens, band_tokens, self.bias_token], dim=0)  # (S, dim), unbatched
        out = self.transformer_encoder(seq)
        return self.fc_weight(out[n:-1] + band_tokens), self.fc_bias(out[-1])


class DofaPatchEmbed(nn.Module):
    """Replaces the SigLIP trunk's conv stem: generates a (width, C, k, k) kernel and a bias
    from the C band wavelengths, scales both by `kernel_scale`, and convolves with stride k.
    Band order travels with the wavelengths: permuting both permutes the kernel's input
    channels the same way, so the patch tokens are unchanged."""

    def __init__(self, embed_dim: int, patch_size: int, img_size: int, wave_dim: int = 128,
                 weight_tokens: int = 128, heads: int = 4, ffn: int = 2048, padding: int = 1,
                 kernel_scale: float = 0.01):
        super().__init__()
        self.embed_dim, self.kernel_size, self.wave_dim = embed_dim, patch_size, wave_dim
        self.padding, self.kernel_scale = padding, kernel_scale
        self.patch_size = (patch_size, patch_size)  # what timm's ViT reads from its patch_embed
        self.img_size = (img_size, img_size)
        side = (img_size + 2 * padding - patch_size) // patch_size + 1
        self.grid_size = (side, side)
        self.num_patches = side * side
        self.weight_generator = DofaWeightGenerator(wave_dim, patch_size * patch_size * embed_dim,
                                                    embed_dim, weight_tokens, heads, ffn)
        self.fclayer = DofaResidualMLP(wave_dim)
        for m in (self.fclayer.w1, self.fclayer.w2):
            nn.init.xavier_uniform_(m.weight)
            nn.init.constant_(m.bias, 0.01)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def generate(self, wavelengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(C,) µm -> conv kernel (width, C, k, k) and bias (width,), float32."""
        c, k = wavelengths.shape[0], self.kernel_size
        with torch.autocast(wavelengths.device.type, enabled=False):
            tokens = self.fclayer(dofa_wavelength_features(wavelengths, self.wave_dim))
            weight, bias = self.weight_generator(tokens)
        kernel = weight.view(c, k, k, self.embed_dim).permute(3, 0, 1, 2) * self.kernel_scale
        return kernel.contiguous(), bias.view(self.embed_dim) * self.kernel_scale

    def forward(self, x: torch.Tensor, wavelengths: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != wavelengths.shape[0]:
            raise ValueError(f"{x.shape[1]} bands but {wavelengths.shape[0]} wavelengths")
        if self.training or torch.is_grad_enabled():
            kernel, bias = self.generate(wavelengths)
        else:  # inference: kernels depend only on the band set; generate once per set
            key = (str(wavelengths.device), *(float(w) for w in wavelengths))
            if key not in self._cache:
                if len(self._cache) > 64:
                    self._cache.clear()
                self._cache[key] = self.generate(wavelengths)
            kernel, bias = self._cache[key]
        # Under autocast (GPU, bf16) conv2d casts all three itself.
        out = F.conv2d(x, kernel.to(x.dtype), bias.to(x.dtype), stride=self.kernel_size,
                       padding=self.padding)
        return out.flatten(2).transpose(1, 2)  # (B, N, width)

    def train(self, mode: bool = True):
        self._cache.clear()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):  # .to(device) / .half(): cached kernels are stale
        self._cache.clear()
        return super()._apply(fn, *args, **kwargs)
