"""Linear-layer kernels at whisper-base's decode shapes: which precision and library is fastest here.

Times one ``(M, K) x (K, N)`` product per call for the shapes a batch of 16 short clips
puts through whisper-base (d = 512, FFN 2048, vocabulary 51865):

* encoder: M = 16 clips x 500 frames (10 s window) = 8000 rows;
* decoder step: M = 16 rows (one token each); the vocabulary projection N = 51865.

Kernels (each a drop-in for ``nn.Linear`` on float32 activations, conversions included):

* ``fp32``: ``F.linear`` (MKL);
* ``bf16``: bfloat16 weights, activations cast to bfloat16 and the result back to float32
  (oneDNN; AMX where the CPU has it);
* ``int8_fbgemm``: :class:`asr_adapt.models.whisper_compute.Int8Linear` (per-row activation
  scales, fbgemm u8 x s8 with VNNI);
* ``int8_onednn``: the same module with ``kernel="onednn"`` (``onednn::qlinear_pointwise``,
  AMX where the CPU has it);
* ``w8_fp32`` / ``w8_bf16``: int8 weights dequantised inside the kernel
  (``aten::_weight_int8pack_mm``), float32 or bfloat16 activations.

    OMP_NUM_THREADS=1 .venv/bin/python bench/kernel_probe.py --threads 1 --out bench/results/kernel_probe.json

Prints ms per call and GFLOP/s (2*M*K*N / time) per kernel and shape.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

SHAPES = {
    "enc q/k/v/o 8000x512x512": (8000, 512, 512),
    "enc fc1 8000x512x2048": (8000, 512, 2048),
    "enc fc2 8000x2048x512": (8000, 2048, 512),
    "dec q/o 16x512x512": (16, 512, 512),
    "dec fc1 16x512x2048": (16, 512, 2048),
    "dec fc2 16x2048x512": (16, 2048, 512),
    "dec vocab 16x512x51865": (16, 512, 51865),
}


class WeightOnlyInt8Linear:
    """int8 weights dequantised inside the kernel (``aten::_weight_int8pack_mm``), unrounded activations."""

    def __init__(self, linear, activations=None) -> None:
        import torch

        from asr_adapt.models.linear_kernels import quantize_rows

        self.activations = activations or torch.float32
        self.q, scale = quantize_rows(linear.weight)
        self.scale = scale.to(self.activations)
        self.bias = linear.bias.detach()

    def __call__(self, x):
        import torch

        y = torch.ops.aten._weight_int8pack_mm(x.to(self.activations), self.q, self.scale).float()
        return y.add_(self.bias)


def kernels():
    import torch

    from asr_adapt.models.linear_kernels import BF16Linear
    from asr_adapt.models.whisper_compute import Int8Linear

    return {
        "fp32": lambda lin: lin,
        "bf16": BF16Linear,
        "int8_fbgemm": lambda lin: Int8Linear(lin, kernel="fbgemm"),
        "int8_onednn": lambda lin: Int8Linear(lin, kernel="onednn"),
        "w8_fp32": WeightOnlyInt8Linear,
        "w8_bf16": lambda lin: WeightOnlyInt8Linear(lin, activations=torch.bfloat16),
    }


def time_call(fn, x, min_s: float) -> float:
    """Median seconds per call over repeated bursts totalling about ``min_s``."""
    fn(x)
    t0 = time.perf_counter()
    fn(x)
    once = max(time.perf_counter() - t0, 1e-6)
    n = max(1, int(min_s / 5 / once))
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn(x)
        runs.append((time.perf_counter() - t0) / n)
    return statistics.median(runs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-s", type=float, default=0.5, help="seconds of timing per kernel and shape")
    ap.add_argument("--kernels", default="all")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ks = kernels()
    chosen = list(ks) if args.kernels == "all" else args.kernels.split(",")
    rows = []
    with torch.inference_mode():
        for shape, (m, k, n) in SHAPES.items():
            lin = nn.Linear(k, n)
            x = torch.randn(m, k)
            ref = lin(x)
            for name in chosen:
                mod = ks[name](lin)
                err = ((mod(x) - ref).norm() / ref.norm()).item()
                s = time_call(mod, x, args.min_s)
                rows.append({"shape": shape, "kernel": name, "ms": 1e3 * s, "gflops": 2 * m * k * n / s / 1e9,
                             "rel_err": err})
                print(f"{shape:26s} {name:12s} {1e3 * s:9.3f} ms {2 * m * k * n / s / 1e9:8.1f} GFLOP/s  err {err:.1e}",
                      flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"threads": args.threads, "torch": torch.__version__, "rows": rows},
                                             indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
