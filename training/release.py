"""Write an image tower as a release checkpoint: safetensors + metadata the engine reads.

    python -m training.release runs/v2-cpu/model.safetensors   # -> engine/checkpoints/<model name>.safetensors

The file is named after the checkpoint's model (glb-vit-s8, glb-effnet-l0), so releasing one
encoder never overwrites another; the registry (engine/encoder/encoders.toml) names the file
each encoder loads.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from safetensors.torch import save_file

from engine.encoder import ModelConfig
from engine.encoder.factory import CHECKPOINT_DIR, read_checkpoint

MAX_BYTES = 40 * 1024 * 1024


def write_checkpoint(state: dict, cfg: ModelConfig, path: Path, extra: dict | None = None) -> Path:
    meta = {"model_config": cfg.to_json(), "name": cfg.name, "format": "glb-image-tower-1",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(extra or {})}
    tensors = {k: v.detach().float().contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    if path.stat().st_size > MAX_BYTES:
        raise RuntimeError(f"{path}: {path.stat().st_size / 1e6:.1f} MB is over the 40 MB release limit")
    return path


def release(src: str | Path, dst: Path | None = None) -> Path:
    cfg, _, _ = read_checkpoint(src)  # refuse anything the engine could not load
    dst = dst if dst is not None else CHECKPOINT_DIR / f"{cfg.name}.safetensors"
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


if __name__ == "__main__":
    print(release(sys.argv[1]))
