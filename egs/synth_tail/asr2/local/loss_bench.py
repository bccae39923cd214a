#!/usr/bin/env python
"""Time the transducer loss on one lattice: torchaudio's fused call against ``lattice_rnnt_loss``.

Both compute the same loss and gradients (tests/models/test_transducer_loss.py); this times
forward + backward on random joiner logits of a typical 60 s CPU batch (16 utterances, 47
frames of 80 ms, 52 characters, 139 symbols), interleaved, and prints median and range.

    OMP_NUM_THREADS=1 python local/loss_bench.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchaudio

from asr_adapt.models.transducer.loss import lattice_rnnt_loss


def torchaudio_fused(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
                     tlens: torch.Tensor) -> torch.Tensor:
    """The transducer loss as the model computed it before ``lattice_rnnt_loss``."""
    return torchaudio.functional.rnnt_loss(logits.float(), targets.int(), lengths.int(), tlens.int(), blank=0,
                                           reduction="mean", fused_log_softmax=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs=4, default=[16, 47, 52, 139], metavar=("B", "T", "U", "V"))
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    b, t, u, v = args.shape
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(b, t, u + 1, v, generator=g, requires_grad=True)
    targets = torch.randint(1, v, (b, u), generator=g)
    lengths = torch.full((b,), t)
    tlens = torch.full((b,), u)

    def fused() -> torch.Tensor:
        return torchaudio_fused(logits, targets, lengths, tlens)

    def lattice() -> torch.Tensor:
        return lattice_rnnt_loss(logits, targets, lengths, tlens)

    times: dict[str, list[float]] = {"torchaudio fused": [], "lattice_rnnt_loss": []}
    for _ in range(args.repeats):
        for name, fn in (("torchaudio fused", fused), ("lattice_rnnt_loss", lattice)):
            logits.grad = None
            t0 = time.perf_counter()
            fn().backward()
            times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        print(f"{name:18s} median {statistics.median(ts) * 1e3:7.1f} ms  range {min(ts) * 1e3:.1f}-{max(ts) * 1e3:.1f} ms")
    ratio = statistics.median(times["torchaudio fused"]) / statistics.median(times["lattice_rnnt_loss"])
    print(f"ratio {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
