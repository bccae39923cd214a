"""``asr-adapt score REF HYP``: per-locale WER/CER tables, CIs, baseline comparison, plots."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from asr_adapt.scoring.engine import DEFAULT_CER_LANGUAGES

    p = sub.add_parser(
        "score",
        help="score hypotheses against references per locale (WER, CER, CIs, reports)",
        description="Score HYP against REF per locale. REF: Kaldi text file or data dir (locale "
        "from utt2lang, or --lang). HYP: Kaldi text file, decode JSONL, or a decode output dir "
        "holding hyp.jsonl. Prints Kaldi %%WER lines and an sclite-style table with the macro "
        "average over locales and the pooled total; writes wer-summary-NAME.{md,json,csv}, "
        "per_utt-NAME.txt, errors-NAME.txt and wer-NAME.png to OUTDIR.",
    )
    p.add_argument("ref", help="reference: Kaldi text file or Kaldi data dir")
    p.add_argument("hyp", help="hypothesis: Kaldi text file, decode JSONL, or decode output dir")
    p.add_argument("--baseline", help="baseline hypothesis (same formats as HYP): adds WERR, delta, P(improve)")
    p.add_argument("--normaliser", default="multilingual", help="text normaliser (default: multilingual)")
    p.add_argument("--cer-locales", default=",".join(DEFAULT_CER_LANGUAGES),
                   help="comma-separated languages/locales whose headline metric is CER")
    p.add_argument("--lang", help="locale for every utterance (overrides utt2lang)")
    p.add_argument("--name", help="system name used in file names (default: from HYP)")
    p.add_argument("-o", "--out", help="output dir (default: HYP's dir)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples, 0 disables (default 1000)")
    p.add_argument("--top", type=int, default=20, help="top-N errors in errors-NAME.txt")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plot")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asr_adapt.scoring.engine import ScoreConfig, score_files
    from asr_adapt.scoring.normalise import NORMALISERS
    from asr_adapt.scoring.readers import ScoringError
    from asr_adapt.scoring.writers import write_report

    if args.normaliser not in NORMALISERS:
        print(f"error: unknown normaliser {args.normaliser!r}; known: {', '.join(NORMALISERS.names())}",
              file=sys.stderr)
        return 2
    try:
        config = ScoreConfig(
            normaliser=args.normaliser,
            cer_locales=tuple(x.strip() for x in args.cer_locales.split(",") if x.strip()),
            bootstrap=args.bootstrap,
            seed=args.seed,
        )
        report = score_files(args.ref, args.hyp, baseline=args.baseline, lang=args.lang, config=config,
                             name=args.name)
    except (ScoringError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    hyp = Path(args.hyp)
    out = Path(args.out) if args.out else (hyp if hyp.is_dir() else hyp.resolve().parent)
    print("\n".join(report.kaldi_lines()))
    print()
    print(report.sclite_table())
    cmp = report.comparison_table()
    if cmp:
        print(f"\nagainst baseline {report.baseline}:\n{cmp}")
    if report.missing:
        print(f"\nwarning: {len(report.missing)} reference(s) without hypothesis, scored as deletions: "
              + ", ".join(report.missing[:20]), file=sys.stderr)
    if report.extra:
        print(f"warning: {len(report.extra)} hypothesis(es) without reference, ignored: "
              + ", ".join(report.extra[:20]), file=sys.stderr)
    paths = write_report(report, out, top_n=args.top, plots=not args.no_plots)
    print(f"\nnormaliser: {report.normaliser}; macro avg = mean over locales, pooled = all utterances")
    print("wrote: " + ", ".join(str(p) for p in paths.values()))
    return 0
