"""``asr-adapt merge EXP -o BUNDLE``: checkpoint-wise per-locale adapter merging."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="assemble a per-locale adapter bundle from a training run's checkpoints",
        description="Choose, per locale, the checkpoint with that locale's best dev WER "
        "(checkpoint-wise merging) and write one adapter bundle with the provenance "
        "(locale -> step, dev WER) and a plot of the per-locale dev-WER curves.",
    )
    p.add_argument("exp", nargs="+", help="training experiment directories (config.yaml, checkpoints/history.jsonl); "
                   "several runs with the same adapter layout (noisy-student generations) are pooled")
    p.add_argument("-o", "--out", required=True, help="output adapter bundle directory")
    p.add_argument("--policy", default="best",
                   help="best: each locale from its best dev-WER checkpoint (default) | best-significant: "
                   "the best macro-average checkpoint, except locales whose own best beats it significantly "
                   "on their dev set (paired bootstrap; guards against picking dev noise) | best-macro | "
                   "last | avg-top-k")
    p.add_argument("-k", type=int, default=3, help="k for avg-top-k")
    p.add_argument("--min-prob", type=float, default=0.95,
                   help="best-significant: bootstrap probability of improvement a locale's own best "
                   "checkpoint needs to replace the best macro-average one (default 0.95)")
    p.add_argument("--metric", choices=("wer", "cer"), default="wer",
                   help="dev error rate that ranks checkpoints (default wer; cer for character-level "
                        "models whose words are mostly wrong early in training, e.g. the transducer recipes)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asr_adapt.training.bundle import merge_experiment
    from asr_adapt.training.ckpt_merge import POLICIES

    if args.policy not in POLICIES:
        raise SystemExit(f"error: unknown policy {args.policy!r}; choose from {', '.join(POLICIES.names())}")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise SystemExit(f"error: {out} exists; pass --overwrite to replace it")
    if not 0.0 < args.min_prob <= 1.0:
        raise SystemExit(f"error: --min-prob must be in (0, 1], got {args.min_prob}")
    choices = merge_experiment(args.exp, out, args.policy, args.k, args.min_prob, args.metric)
    print(f"{'locale':<10} {'steps':<20} {'dev ' + args.metric.upper():>8}  P(own best > best macro)")
    for c in sorted(choices.values(), key=lambda c: c.locale):
        p = "" if c.p_improve is None else f"{c.p_improve:.3f}"
        print(f"{c.locale:<10} {','.join(map(str, c.steps)):<20} {c.dev_wer:>8.2f}  {p}")
    print(f"bundle: {out}  (provenance.json, dev_wer_curves.png)")
    return 0
