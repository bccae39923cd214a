"""``asr-adapt pseudo-label INPUT -o OUT``: teacher decoding + confidence filters -> Kaldi data dir."""

from __future__ import annotations

import argparse

from asr_adapt.cli.decode import add_policy_args, policy_kwargs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pseudo-label",
        help="label unlabelled audio with a teacher model (noisy-student training)",
        description="Decode an unlabelled data dir, manifest or audio folder with a teacher "
        "(backbone + optional adapters), keep hypotheses that pass the filters and write them as "
        "a Kaldi data dir OUT/data with utt2conf, plus a kept/dropped report per locale. "
        "Resumable; shard over processes with --devices N --strategy ddp.",
    )
    p.add_argument("input", help="Kaldi data dir, JSONL manifest or folder of audio")
    p.add_argument("-o", "--out", required=True, help="output directory")
    p.add_argument("--backbone", default="whisper", help="backbone family (whisper, transducer)")
    p.add_argument("--model", default="whisper-base", help="teacher base model (name or directory)")
    p.add_argument("--adapters", help="teacher adapter bundle (from `asr-adapt merge` or training)")
    add_policy_args(p, candidates=True)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--beam-size", type=int, default=1)
    p.add_argument("--min-window", type=float, help="Whisper: shortest encoder window (s) of rows no adapter serves; "
                   "rows the teacher's adapters serve use the window they were trained at (recorded in the bundle)")
    p.add_argument("--min-confidence", type=float, help="drop below this mean token log-prob")
    p.add_argument("--keep-top-percent", type=float, help="per locale, keep this top %% by confidence")
    p.add_argument("--min-cps", type=float, default=2.0, help="min characters per second")
    p.add_argument("--max-cps", type=float, default=30.0, help="max characters per second")
    p.add_argument("--max-compression-ratio", type=float, default=2.4, help="drop repetitive hypotheses")
    p.add_argument("--no-lang-match", action="store_true", help="keep hypotheses whose language differs")
    p.add_argument("--devices", type=int, default=1, help="processes (CPU) or GPUs to shard over")
    p.add_argument("--accelerator", default="cpu", help="cpu | gpu | auto")
    p.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp for several processes")
    # Same default as `asr-adapt decode` (see there); DDP on CPU sets cores // processes itself.
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (0: torch's default)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from asr_adapt.decoding.service import Transcriber
    from asr_adapt.fileio import dir_lock
    from asr_adapt.training.pl_filters import FilterConfig
    from asr_adapt.training.pseudo_label import pseudo_label

    filters = FilterConfig(
        min_confidence=args.min_confidence, keep_top_percent=args.keep_top_percent, min_cps=args.min_cps,
        max_cps=args.max_cps, max_compression_ratio=args.max_compression_ratio,
        require_lang_match=not args.no_lang_match,
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    overrides = {"beam_size": args.beam_size}
    if args.min_window is not None:
        overrides["min_window_s"] = args.min_window
    # The one decode service: rows the teacher's adapters serve decode at the window they were
    # trained at (recorded in the bundle), other rows as the base does, as in `asr-adapt decode`.
    teacher = Transcriber.load(args.backbone, args.model, args.adapters, options=overrides, **policy_kwargs(args))
    trainer_kwargs = {"accelerator": args.accelerator, "devices": args.devices, "strategy": args.strategy}
    with dir_lock(args.out, what="pseudo-label"):
        summary, report = pseudo_label(teacher, args.input, args.out, filters, args.batch_size, trainer_kwargs)
    print(f"decoded {summary.decoded} ({summary.skipped_done} already done, {summary.failed} failed) "
          f"at {summary.utts_per_second:.2f} utt/s")
    for loc, c in sorted(report.items()):
        print(f"  {loc}: kept {c.get('kept', 0)} of {sum(c.values())}  " +
              " ".join(f"{k}={v}" for k, v in sorted(c.items()) if k != "kept"))
    return 1 if summary.failed else 0
