"""Throughput of a DOFA-CLIP image tower (random weights, seed 0): images per second at the
registry entry's input size, per batch size and band count, on a GPU under bf16 autocast (the
indexer's mapper path) or on the CPU in float32. Inputs are preprocessed tensors already on the
device, so this measures the tower alone (patch-kernel generation is cached per band set, as in
indexing). The text tower is not built.

    python -m glb.bench.dofa_throughput                       # dofa-clip-l14-384 on cuda
    python -m glb.bench.dofa_throughput --batch 16,64 --bands 3,13 --json out.json
    python -m glb.bench.dofa_throughput --smoke               # CPU, 1 block, batch 1: plumbing only

Prints one JSON document (also written to --json): device, torch version, per (bands, batch):
median / min / max images/s over --repeats timed runs after --warmup runs, and on a GPU the
peak memory allocated.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time


def build_image_tower(name: str, device: str, depth: int | None = None):
    import torch

    from engine.encoder import EncoderSpec, get_spec
    from engine.encoder.dofa_clip import create_model, random_init

    spec = get_spec(name)
    if depth:
        spec = EncoderSpec(**{**spec.__dict__, "options": {**spec.options, "depth": depth}})
    model = create_model(spec, device="meta")
    model.text = torch.nn.Identity()  # image tower only
    model = model.to_empty(device=device)
    random_init(model, 0)
    return spec, model.eval()


def measure(model, spec, device: str, batch: int, bands: int, warmup: int, repeats: int) -> dict:
    import torch

    from engine.encoder.dofa_clip import image_features

    s = spec.image_size
    x = torch.randn(batch, bands, s, s, device=device)
    wl = torch.linspace(0.45, 2.2, bands, device=device)
    cuda = device.startswith("cuda")
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext

    def once():
        with torch.inference_mode(), ctx():
            image_features(model, x, wl)
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        once()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        rates.append(batch / (time.perf_counter() - t0))
    rates.sort()
    out = {"bands": bands, "batch": batch, "images_per_s": rates[len(rates) // 2],
           "min": rates[0], "max": rates[-1], "repeats": repeats}
    if cuda:
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m glb.bench.dofa_throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default="dofa-clip-l14-384")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", default="8,32,64", help="comma-separated batch sizes")
    p.add_argument("--bands", default="3,13", help="comma-separated band counts")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--depth", type=int, help="keep only the first N blocks (smoke runs)")
    p.add_argument("--smoke", action="store_true", help="CPU, depth 1, batch 1, 3 bands, 1 repeat")
    p.add_argument("--json", help="also write the result here")
    a = p.parse_args(argv)
    if a.smoke:
        a.device, a.depth, a.batch, a.bands, a.warmup, a.repeats = "cpu", 1, "1", "3", 0, 1
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("dofa_throughput: error: no CUDA device (use --device cpu or --smoke)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    spec, model = build_image_tower(a.encoder, a.device, a.depth)
    result = {"encoder": a.encoder, "image_size": spec.image_size, "device": a.device,
              "device_name": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
              "torch": torch.__version__, "weights": "random (seed 0)", "depth": a.depth or "full",
              "precision": "bf16 autocast" if a.device.startswith("cuda") else "float32",
              "build_s": time.perf_counter() - t0, "runs": []}
    for bands in (int(v) for v in a.bands.split(",")):
        for batch in (int(v) for v in a.batch.split(",")):
            result["runs"].append(measure(model, spec, a.device, batch, bands, a.warmup, a.repeats))
    text = json.dumps(result, indent=1)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
