"""The encoder on a GPU, alone (the ceiling of indexing throughput there): batch size swept in
bf16, the model's FLOPs per tile (PyTorch's FLOP counter), achieved FLOP/s against the card's
measured bf16 matrix-multiply peak. Needs only torch and the engine's image tower, so it runs on
a bare GPU machine:

    python -m glb.bench.gpu [OUT.json]

`glb bench index` calls `run()` when CUDA is present (and also times indexing end to end there).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

LAYOUTS = {  # real band layouts of the sample archive
    "multispectral": [0.443, 0.490, 0.560, 0.665, 0.705, 0.740, 0.783, 0.842, 0.865, 0.945, 1.375, 1.610, 2.190],
    "rgb": [0.665, 0.560, 0.490],
    "sar": [55500.0, 58275.0],
}


def matmul_peak_tflops(n: int = 8192, iters: int = 20) -> float:
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n ** 3 * iters / (start.elapsed_time(end) / 1000) / 1e12


def run(sizes=(64, 256, 1024, 4096, 8192), tiles_per_size: int = 32768, echo=print) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from engine.encoder.config import get_model_config
    from engine.encoder.vit import ImageTower

    torch.manual_seed(0)
    cfg = get_model_config()
    tower = ImageTower(cfg).eval().cuda()
    s = cfg.vision.image_size
    out = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "matmul_bf16_peak_tflops": round(matmul_peak_tflops(), 1), "model": cfg.name, "layouts": {}}
    echo(f"{out['card']}: bf16 matmul {out['matmul_bf16_peak_tflops']} TFLOP/s")
    for mod, wl in LAYOUTS.items():
        c = len(wl)
        wl_t = torch.tensor(wl, device="cuda")
        with FlopCounterMode(display=False) as fc:  # (with autograd on: the counter needs it)
            tower(torch.randn(8, c, s, s, device="cuda"), wl_t)
        flops = fc.get_total_flops() / 8
        res = {"bands": c, "flops_per_tile": flops, "sweep": []}
        for bs in sizes:
            n = max(bs, (tiles_per_size // bs) * bs)
            x = torch.randn(n, c, s, s, device="cuda")
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                for i in range(0, min(n, 2 * bs), bs):  # warm-up
                    tower(x[i:i + bs], wl_t)
                torch.cuda.synchronize()
                runs = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    for i in range(0, n, bs):
                        tower(x[i:i + bs], wl_t)
                    torch.cuda.synchronize()
                    runs.append(n / (time.perf_counter() - t0))
            tps = float(np.median(runs))
            res["sweep"].append({"batch_size": bs, "tiles_per_s": round(tps, 1),
                                 "tiles_per_s_spread": [round(min(runs), 1), round(max(runs), 1)],
                                 "tflops": round(tps * flops / 1e12, 3),
                                 "fraction_of_peak": round(tps * flops / 1e12 / out["matmul_bf16_peak_tflops"], 5)})
            echo(f"  {mod} batch {bs}: {tps:.0f} tiles/s, {tps * flops / 1e12:.2f} TFLOP/s")
            del x
        # float32 at one batch size, for the bf16 gain
        x = torch.randn(4096, c, s, s, device="cuda")
        with torch.inference_mode():
            tower(x[:1024], wl_t)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for i in range(0, 4096, 1024):
                tower(x[i:i + 1024], wl_t)
            torch.cuda.synchronize()
        res["fp32_batch_1024_tiles_per_s"] = round(4096 / (time.perf_counter() - t0), 1)
        out["layouts"][mod] = res
    return out


if __name__ == "__main__":
    r = run()
    text = json.dumps(r, indent=1)
    if len(sys.argv) > 1:
        open(sys.argv[1], "w").write(text)
    print(text)
