"""The image tower: wavelength-conditioned patch embedding -> ViT -> attention pool -> projection
into the text embedding space."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .patch_embed import FixedStemPatchEmbed, WavelengthPatchEmbed


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class AttentionPool(nn.Module):
    """One learned query attends over the patch tokens (SigLIP's MAP head)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q = self.query.expand(tokens.shape[0], -1, -1)
        x = self.attn(q, tokens, tokens, need_weights=False)[0]
        x = x + self.mlp(self.norm(x))
        return x[:, 0]


class ImageTower(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        v = cfg.vision
        self.cfg = cfg
        self.image_size = v.image_size
        grid = v.image_size // v.patch_size
        if v.patch_embed == "wavelength":
            self.patch_embed = WavelengthPatchEmbed(v.width, v.patch_size, v.wave_dim,
                                                    v.wavegen_layers, v.wavegen_heads)
        elif v.patch_embed == "fixed":
            self.patch_embed = FixedStemPatchEmbed(v.width, v.patch_size)
        else:
            raise ValueError(f"unknown patch_embed {v.patch_embed!r}")
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid, v.width) * 0.02)
        self.blocks = nn.ModuleList(Block(v.width, v.heads, v.mlp_ratio) for _ in range(v.depth))
        self.norm = nn.LayerNorm(v.width)
        self.pool = AttentionPool(v.width, v.heads, v.mlp_ratio)
        self.proj = nn.Linear(v.width, cfg.embed_dim)
        for part in (self.blocks, self.pool, self.proj):  # the patch embed inits itself
            part.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def set_modality(self, modality: str) -> None:
        if isinstance(self.patch_embed, FixedStemPatchEmbed):
            self.patch_embed.modality = modality

    def forward_tokens(self, x: torch.Tensor, wavelengths: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) standardised pixels -> (B, N, width) patch tokens."""
        x = self.patch_embed(x, wavelengths) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.pool(tokens)), dim=-1)

    def forward(self, x: torch.Tensor, wavelengths: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(self.forward_tokens(x, wavelengths))
