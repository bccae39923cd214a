"""``asr-adapt merge EXP -o BUNDLE``: checkpoint-wise per-locale adapter merging, each locale
gated against the base model on its dev set (:mod:`asr_adapt.training.gate`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="assemble a per-locale adapter bundle from a training run's checkpoints",
        description="Choose, per locale, the checkpoint with that locale's best dev WER "
        "(checkpoint-wise merging) and write one adapter bundle with the provenance "
        "(locale -> step, dev WER) and a plot of the per-locale dev-WER curves. Never worse than the "
        "base: a locale keeps its adapter only if it beats the base model on that locale's dev set "
        "(paired bootstrap, --gate-p); otherwise the locale is left out and its rows decode with the "
        "base. merge_report.md and provenance.json say which locales were gated and why.",
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
    p.add_argument("--base-dev", default=None,
                   help="decode dir of the base model on the dev set the training validated on (hyp.jsonl with "
                   "references, e.g. `asr-adapt decode DEV_DATA_DIR -o DIR --model BASE`); dev utterances it lacks "
                   "are decoded into it with the experiment's base model, so several merges can share one "
                   "(default: OUT/base_dev, decoded by this merge)")
    p.add_argument("--gate-p", type=float, default=0.95,
                   help="paired-bootstrap P(adapter better than base on the locale's dev set) a locale's adapter "
                   "needs to go into the bundle (default 0.95)")
    p.add_argument("--no-gate", action="store_true",
                   help="keep every locale's adapter, whether or not it beats the base (no base dev decode)")
    p.add_argument("--device", default="cpu", help="torch device for decoding the dev set with the base (gate)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asr_adapt.training.ckpt_merge import POLICIES
    from asr_adapt.training.gate import GateOptions, gated_merge

    if args.policy not in POLICIES:
        raise SystemExit(f"error: unknown policy {args.policy!r}; choose from {', '.join(POLICIES.names())}")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise SystemExit(f"error: {out} exists; pass --overwrite to replace it")
    if not 0.0 < args.min_prob <= 1.0:
        raise SystemExit(f"error: --min-prob must be in (0, 1], got {args.min_prob}")
    if not 0.0 < args.gate_p <= 1.0:
        raise SystemExit(f"error: --gate-p must be in (0, 1], got {args.gate_p}")
    gate = None if args.no_gate else GateOptions(min_prob=args.gate_p, metric=args.metric)
    try:
        report = gated_merge(args.exp, out, args.policy, args.k, args.min_prob, args.metric, gate, args.base_dev,
                             args.device)
    except ValueError as e:  # dev sets that do not pair up, a policy with nothing to gate by
        raise SystemExit(f"error: {e}") from None
    print(report)
    print(f"bundle: {out}  (merge_report.md, provenance.json, dev_wer_curves.png)")
    return 0
