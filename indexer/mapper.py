"""Mapper: preprocessed tile batches -> embeddings (clip-retrieval's mapper stage). On a GPU the
batch runs in bf16 autocast; on the CPU in float32."""

from __future__ import annotations

import numpy as np
import torch


class Embedder:
    def __init__(self, encoder):
        self.encoder = encoder
        self.cuda = str(encoder.device).startswith("cuda")

    def __call__(self, batch) -> np.ndarray:
        if self.cuda:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                v = self.encoder.embed_preprocessed(batch.x, batch.wavelengths, batch.layout.modality)
            # bf16 output: renormalise in float32 so stored rows are unit length
            return v / np.linalg.norm(v, axis=1, keepdims=True)
        return self.encoder.embed_preprocessed(batch.x, batch.wavelengths, batch.layout.modality)
