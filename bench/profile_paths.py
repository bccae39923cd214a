"""A fixed workload for profilers: adapter training steps and batched decoding on whisper-base.

Run under a sampling profiler and read the collapsed stacks with ``--summarise``:

    py-spy record -r 50 -f raw -o bench/out/profile/train.txt -- \\
        .venv/bin/python bench/profile_paths.py train --adapter lora --steps 4
    py-spy record -r 50 -f raw -o bench/out/profile/decode.txt -- \\
        .venv/bin/python bench/profile_paths.py decode --adapter lda
    .venv/bin/python bench/profile_paths.py summarise bench/out/profile/train.txt

``summarise`` prints the top self frames and the top inclusive frames of ``asr_adapt``
(collapsed-stack format: ``frame;frame;... count`` per line).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from asr_adapt.decoding.decoders import decoding_options, transcribe_batch

QV = r"\.(q_proj|v_proj)$"
CONF = {"lora": {"rank": 8, "alpha": 16, "patterns": [QV]}, "s2lora": {"rank": 8, "patterns": [QV]}, "lda": {}}


def _setup(args):
    import torch

    from asr_adapt.adapters import attach_adapters, freeze_base
    from asr_adapt.data.kaldi import read_data_dir
    from asr_adapt.models.whisper import WhisperBackbone

    torch.set_num_threads(1)
    torch.manual_seed(0)
    utts = [u for u in sorted(read_data_dir(args.data), key=lambda u: u.utt_id) if 2 <= (u.duration or 0) <= 8]
    utts = utts[: args.n]
    bb = WhisperBackbone.from_pretrained("whisper-base", train_min_window_s=1.0)
    locales = sorted({u.lang for u in utts})
    if args.adapter != "none":
        attach_adapters(bb, bb.injection_points(), args.adapter, CONF[args.adapter], locales)
        freeze_base(bb)
    return bb, utts, [u.load() for u in utts]


def train(args) -> None:
    import torch

    from asr_adapt import routing
    from asr_adapt.adapters import regularization_loss

    bb, utts, wavs = _setup(args)
    bb.train()
    opt = torch.optim.AdamW([p for p in bb.parameters() if p.requires_grad], lr=1e-3)
    langs, texts = [u.lang for u in utts], [u.text for u in utts]
    for _ in range(args.steps):
        with routing.use(langs):
            loss = bb.compute_loss(wavs, texts, langs) + regularization_loss(bb, set(langs))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def decode(args) -> None:
    import torch

    from asr_adapt import routing

    bb, utts, wavs = _setup(args)
    langs = [u.lang for u in utts]
    with torch.inference_mode(), routing.use(langs):
        for _ in range(args.steps):
            transcribe_batch(bb, wavs, langs, decoding_options(bb), route=langs)


def summarise(path: str, top: int = 15) -> None:
    """Top frames of the measured loop only: start-up (imports, model load) is left out."""
    self_c: Counter = Counter()
    incl: Counter = Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        n = int(n)
        frames = stack.split(";")
        in_loop = any(f.startswith(("train (", "decode (")) and "profile_paths.py" in f for f in frames)
        # Start-up inside the loop functions (their first ``import torch``) is not the loop.
        if not in_loop or any(f.startswith("_setup (") or "importlib._bootstrap" in f for f in frames):
            continue
        total += n
        self_c[frames[-1]] += n
        for f in set(frames):
            if "asr_adapt" in f or "transformers" in f or "torch/nn" in f:
                incl[f] += n
    print(f"{total} samples in the measured loop\n\ntop self frames:")
    for f, n in self_c.most_common(top):
        print(f"{100 * n / total:5.1f}%  {f}")
    print("\ntop inclusive frames (asr_adapt / transformers / torch.nn):")
    for f, n in incl.most_common(top):
        print(f"{100 * n / total:5.1f}%  {f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("train", "decode", "summarise"))
    ap.add_argument("path", nargs="?", help="summarise: the collapsed-stack file")
    ap.add_argument("--adapter", default="lora", choices=("none", *CONF))
    ap.add_argument("--data", default="bench/out/train_speed/data/train")
    ap.add_argument("--n", type=int, default=4, help="utterances per batch")
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args(argv)
    if args.mode == "summarise":
        summarise(args.path)
    else:
        {"train": train, "decode": decode}[args.mode](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
