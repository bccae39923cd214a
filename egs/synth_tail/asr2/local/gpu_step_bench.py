#!/usr/bin/env python
"""Is a pretraining step GPU-bound? Steps/s, audio seconds/s and GPU utilisation per batch size.

With ``--device cpu`` it times the same step on the CPU (no utilisation column): fp32 against
bf16 autocast, which runs the matrix products on AMX/AVX-512-BF16 units where the CPU has them.

Runs the pretraining step of ``pretrain_gpu.sh`` (feature-bank gather, both passes' transducer
and CTC losses, backward, clip, AdamW) outside Lightning on a bank of random features and
character targets with the corpus's length distribution (1.5-6 s, 14 characters/s), so it
needs no corpus. For each batch cap and precision it reports the median of ``--repeats``
timed windows and the mean NVML utilisation sampled while they ran.

    python local/gpu_step_bench.py --batch-seconds 240 480 960 --precision fp32 bf16
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import torch


def sample_util(stop: threading.Event, out: list[float], device: torch.device) -> None:
    while not stop.is_set():
        try:
            out.append(float(torch.cuda.utilization(device)))
        except Exception:
            return
        time.sleep(0.2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="transducer-synth-compact")
    p.add_argument("--batch-seconds", type=float, nargs="+", default=[240.0, 480.0, 960.0])
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--utts", type=int, default=8000)
    p.add_argument("--steps", type=int, default=40, help="timed steps per window")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="JSON lines of results")
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    args = p.parse_args(argv)

    from asr_adapt.data.sampling import BucketingConfig, DurationBucketingBatchSampler
    from asr_adapt.models.transducer import TransducerBackbone
    from asr_adapt.training.feature_bank import FeatureBank
    from asr_adapt.training.module import decay_groups

    device = torch.device(args.device)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()
    model = TransducerBackbone.from_pretrained(args.model, device=device).train()
    g = torch.Generator().manual_seed(0)
    durs = (1.5 + 4.5 * torch.rand(args.utts, generator=g)).tolist()
    flens = torch.tensor([int(d * 100) for d in durs])
    tlens = torch.tensor([max(1, int(d * 14)) for d in durs])
    bank = FeatureBank(torch.randn(int(flens.sum()), model.config.n_mels, device=device), flens.to(device),
                       torch.randint(1, model.config.vocab_size, (int(tlens.sum()),), device=device),
                       tlens.to(device), torch.ones(args.utts, dtype=torch.bool, device=device))
    opt = torch.optim.AdamW(decay_groups(model), lr=1e-4, weight_decay=0.01)
    rows = []
    for precision in args.precision:
        for cap in args.batch_seconds:
            batches = iter(DurationBucketingBatchSampler(durs * 5, BucketingConfig(max_seconds=cap, seed=0)))

            def step(batches=batches, precision=precision) -> float:
                idx = torch.tensor(next(batches)) % args.utts
                b = bank.gather(idx)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss = model.loss_terms_from_features(b.feats, b.flens, None, [None] * len(idx),
                                                          targets=(b.targets, b.tlens))["loss"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                return float(b.flens.sum()) / 100.0

            for _ in range(10 if cuda else 2):  # warm-up: allocator, cuDNN/cuBLAS heuristics
                step()
            sync()
            rates, audio_rates, utils = [], [], []
            for _ in range(args.repeats):
                util: list[float] = []
                stop = threading.Event()
                th = threading.Thread(target=sample_util, args=(stop, util, device), daemon=True)
                if cuda:
                    th.start()
                t0, audio = time.perf_counter(), 0.0
                for _ in range(args.steps):
                    audio += step()
                sync()
                dt = time.perf_counter() - t0
                stop.set()
                if cuda:
                    th.join()
                rates.append(args.steps / dt)
                audio_rates.append(audio / dt)
                utils.append(sum(util) / len(util) if util else float("nan"))
            row = {"precision": precision, "batch_seconds": cap, "steps_per_s": statistics.median(rates),
                   "steps_per_s_range": [min(rates), max(rates)], "audio_s_per_s": statistics.median(audio_rates),
                   "gpu_util": statistics.median(utils),
                   "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 1e9 if cuda else float("nan")}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
