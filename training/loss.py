"""Losses: open_clip's SigLIP sigmoid loss and CLIP's softmax loss, each with several positives
per row, and MaKA's patch-feature distillation loss.

Captions here come from labels, so one batch often holds several tiles with the same caption
(twenty forests): treating them as each other's negatives would fight the labels. The
positives mask marks every (image, text) pair whose texts are identical or whose labels are
the same within a source as positive; everything else is open_clip's SigLipLoss unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.loss import SigLipLoss


class MultiPositiveSigLipLoss(SigLipLoss):
    def __init__(self):
        super().__init__()
        self._positives: torch.Tensor | None = None

    def get_ground_truth(self, device, dtype, num_logits, negative_only=False) -> torch.Tensor:
        if self._positives is None or negative_only:
            return super().get_ground_truth(device, dtype, num_logits, negative_only)
        return self._positives.to(device=device, dtype=dtype) * 2 - 1

    def forward(self, image_features, text_features, logit_scale, logit_bias, positives=None,
                output_dict=False):
        self._positives = positives
        try:
            return super().forward(image_features, text_features, logit_scale, logit_bias, output_dict)
        finally:
            self._positives = None


def positives_mask(caption_ids: torch.Tensor, label_keys: torch.Tensor) -> torch.Tensor:
    """(B,) caption ids and (B,) label keys (-1 = no label) -> (B, B) bool."""
    same_caption = caption_ids[:, None] == caption_ids[None, :]
    same_label = (label_keys[:, None] == label_keys[None, :]) & (label_keys[:, None] >= 0)
    return same_caption | same_label


class MultiPositiveInfoNCE(nn.Module):
    """CLIP's symmetric softmax loss where a row may have several positives: each row's target
    distribution is spread evenly over its positives (image -> texts and text -> images). The
    logit scale is fixed: with a frozen text tower and a head trained from scratch, a learned
    temperature only adds a parameter that the short CPU stages cannot settle."""

    def __init__(self, logit_scale: float = 30.0):
        super().__init__()
        self.logit_scale = float(logit_scale)

    def forward(self, image_features, text_features, logit_scale=None, logit_bias=None,
                positives=None):
        logits = self.logit_scale * image_features @ text_features.T
        pos = (positives if positives is not None
               else torch.eye(len(logits), dtype=torch.bool, device=logits.device)).float()
        to_text = -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
        to_image = -(pos.T / pos.T.sum(1, keepdim=True) * F.log_softmax(logits.T, 1)).sum(1).mean()
        return (to_text + to_image) / 2


def make_contrastive_loss(name: str, logit_scale: float = 30.0) -> nn.Module:
    """`siglip` (open_clip's sigmoid loss, learned scale and bias) or `softmax` (CLIP's)."""
    if name == "siglip":
        return MultiPositiveSigLipLoss()
    if name == "softmax":
        return MultiPositiveInfoNCE(logit_scale)
    raise ValueError(f"unknown contrastive loss {name!r}: use 'siglip' or 'softmax'")


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Translated student tokens vs standardised teacher tokens, (B, N, D) each: cosine
    distance plus smooth-L1 (RADIO / MaKA use both: direction and magnitude)."""
    cos = 1 - F.cosine_similarity(student, teacher, dim=-1).mean()
    return cos + F.smooth_l1_loss(student, teacher)
