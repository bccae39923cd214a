#!/usr/bin/env python
"""Is a pretraining step GPU-bound? Steps/s, audio seconds/s and GPU utilisation per batch size.

With ``--device cpu`` it times the same step on the CPU (no utilisation column): fp32 against
bf16 autocast, which runs the matrix products on AMX/AVX-512-BF16 units where the CPU has them.

Runs the pretraining step of ``pretrain_gpu.sh`` (feature-bank gather, both passes' transducer
and CTC losses, backward, clip, AdamW) outside Lightning on a bank of random features and
character targets with the corpus's length distribution (1.5-6 s, 14 characters/s), so it
needs no corpus (``--durations`` takes a corpus's utt2dur instead). For each batch cap,
precision and transducer loss it reports the median of ``--repeats`` timed windows (the
configurations interleaved) and the mean NVML utilisation sampled while they ran; the peak
memory is the whole run's.

    python local/gpu_step_bench.py --batch-seconds 240 480 960 --precision fp32 bf16
    OMP_NUM_THREADS=1 python local/gpu_step_bench.py --device cpu --batch-seconds 60 \
        --durations data_named/train/utt2dur --utts 3000 --loss torchaudio lattice --precision fp32 bf16
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
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


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Every dropout of the model (nn.Dropout modules and the attention's dropout_p) to p."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
        elif isinstance(getattr(m, "dropout", None), float):
            m.dropout = p


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
    p.add_argument("--loss", nargs="+", default=["lattice"], choices=["lattice", "torchaudio", "pruned"],
                   help="transducer loss: lattice_rnnt_loss (the model's), torchaudio's fused call, or the "
                        "pruned loss (simple + pruned joiner, window --prune-range; new simple heads)")
    p.add_argument("--prune-range", type=int, default=5, help="window of --loss pruned (default: 5)")
    p.add_argument("--profile", action="store_true",
                   help="also print torch.profiler's top operators over one window of each configuration")
    p.add_argument("--dropout", type=float, nargs="+", default=[None],
                   help="dropout probabilities to compare (default: the model's own)")
    p.add_argument("--threads", type=int, nargs="+", default=[None],
                   help="CPU threads to compare (torch.set_num_threads; default: as started)")
    p.add_argument("--fused-adamw", action="store_true", help="AdamW(fused=True) instead of the default loop")
    p.add_argument("--durations", default=None,
                   help="a Kaldi utt2dur whose first --utts durations replace the uniform 1.5-6 s draw")
    args = p.parse_args(argv)

    from loss_bench import torchaudio_fused  # local/, beside this script

    from asr_adapt.data.sampling import BucketingConfig, DurationBucketingBatchSampler
    from asr_adapt.models.transducer import TransducerBackbone
    from asr_adapt.models.transducer import model as transducer_model
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
    if args.durations:
        with open(args.durations, encoding="utf-8") as f:
            durs = [float(line.split()[1]) for line in f][: args.utts]
        args.utts = len(durs)
    flens = torch.tensor([int(d * 100) for d in durs])
    tlens = torch.tensor([max(1, int(d * 14)) for d in durs])
    bank = FeatureBank(torch.randn(int(flens.sum()), model.config.n_mels, device=device), flens.to(device),
                       torch.randint(1, model.config.vocab_size, (int(tlens.sum()),), device=device),
                       tlens.to(device), torch.ones(args.utts, dtype=torch.bool, device=device))
    def optimizer(m):
        return torch.optim.AdamW(decay_groups(m), lr=1e-4, weight_decay=0.01, fused=args.fused_adamw or None)

    trained = {"full": (model, optimizer(model))}
    if "pruned" in args.loss:  # the same weights plus randomly initialised simple heads
        pm = TransducerBackbone(dataclasses.replace(model.config, prune_range=args.prune_range), model.tokenizer)
        pm.load_state_dict(model.state_dict(), strict=False)
        pm = pm.to(device).train()
        trained["pruned"] = (pm, optimizer(pm))
    lattice = transducer_model.lattice_rnnt_loss

    configs = list(itertools.product(args.loss, args.precision, args.batch_seconds, args.dropout, args.threads))
    steps = {}
    for cfg in configs:
        loss_name, precision, cap, dropout, threads = cfg
        batches = iter(DurationBucketingBatchSampler(durs * 50, BucketingConfig(max_seconds=cap, seed=0)))

        def step(batches=batches, precision=precision, dropout=dropout, threads=threads,
                 loss_fn=torchaudio_fused if loss_name == "torchaudio" else lattice,
                 trained=trained["pruned" if loss_name == "pruned" else "full"]) -> float:
            model, opt = trained
            transducer_model.lattice_rnnt_loss = loss_fn
            if dropout is not None:
                set_dropout(model, dropout)
            if threads is not None:
                torch.set_num_threads(threads)
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

        steps[cfg] = step
        for _ in range(10 if cuda else 2):  # warm-up: allocator, cuDNN/cuBLAS heuristics
            step()
    sync()
    # Repeats interleave the configurations, so a change in machine load hits all of them alike.
    rates = {cfg: [] for cfg in configs}
    audio_rates = {cfg: [] for cfg in configs}
    utils = {cfg: [] for cfg in configs}
    for _ in range(args.repeats):
        for cfg in configs:
            util: list[float] = []
            stop = threading.Event()
            th = threading.Thread(target=sample_util, args=(stop, util, device), daemon=True)
            if cuda:
                th.start()
            t0, audio = time.perf_counter(), 0.0
            for _ in range(args.steps):
                audio += steps[cfg]()
            sync()
            dt = time.perf_counter() - t0
            stop.set()
            if cuda:
                th.join()
            rates[cfg].append(args.steps / dt)
            audio_rates[cfg].append(audio / dt)
            utils[cfg].append(sum(util) / len(util) if util else float("nan"))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for cfg in configs:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(args.steps):
                    steps[cfg]()
            print(f"== profile {cfg} ==\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
    transducer_model.lattice_rnnt_loss = lattice
    rows = []
    for cfg in configs:
        loss_name, precision, cap, dropout, threads = cfg
        row = {"loss": loss_name, "precision": precision, "batch_seconds": cap, "dropout": dropout, "threads": threads,
               "steps_per_s": statistics.median(rates[cfg]),
               "steps_per_s_range": [min(rates[cfg]), max(rates[cfg])],
               "audio_s_per_s": statistics.median(audio_rates[cfg]), "gpu_util": statistics.median(utils[cfg]),
               "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 1e9 if cuda else float("nan")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
