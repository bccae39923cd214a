"""``asr-adapt report DIR... -o OUT``: one comparison table over several scored systems."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="compare several scored systems (reads their wer-summary-*.json)",
        description="Collect the wer-summary-*.json files written by `asr-adapt score` from each "
        "DIR (or the JSON files given) into one table: rows = locales + macro avg + pooled, "
        "columns = systems. Writes OUT/comparison.{md,csv,png}.",
    )
    p.add_argument("dirs", nargs="+", help="score output dirs or wer-summary-*.json files")
    p.add_argument("-o", "--out", default=".", help="output dir (default: current dir)")
    p.add_argument("--stem", default="comparison", help="output file stem (default: comparison)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asr_adapt.scoring.readers import ScoringError
    from asr_adapt.scoring.writers import collect_reports, write_comparison

    try:
        reports = collect_reports(args.dirs)
    except ScoringError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    paths = write_comparison(reports, Path(args.out), args.stem)
    print(paths["md"].read_text(encoding="utf-8"))
    print("wrote: " + ", ".join(str(p) for p in paths.values()))
    return 0
