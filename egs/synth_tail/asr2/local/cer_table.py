#!/usr/bin/env python
"""Side-by-side per-locale CER/WER table of several scored systems (Markdown on stdout).

Reads ``SCORE_DIR/wer-summary-<system>.json`` as written by ``asr-adapt score --name
<system>``; one row per locale plus the macro average, two columns (CER, WER) per system.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("score_dir", help="directory holding wer-summary-<system>.json files")
    p.add_argument("--systems", nargs="+", required=True, help="system names, in column order")
    p.add_argument("--locales", nargs="+", default=None, help="rows to show (default: all scored locales)")
    args = p.parse_args(argv)
    reports = {}
    for name in args.systems:
        path = Path(args.score_dir) / f"wer-summary-{name}.json"
        if not path.exists():
            print(f"error: {path} not found; score {name} first", file=sys.stderr)
            return 2
        reports[name] = json.loads(path.read_text(encoding="utf-8"))
    locales = args.locales or sorted({loc for r in reports.values() for loc in r["locales"]})
    header = "| locale | " + " | ".join(f"{s} CER | {s} WER" for s in args.systems) + " |"
    lines = [header, "|---" * (1 + 2 * len(args.systems)) + "|"]

    def cells(row: dict | None) -> str:
        if row is None:
            return "- | -"
        return f"{row['pct']['cer']:.1f} | {row['pct']['wer']:.1f}"

    for loc in locales:
        lines.append(f"| {loc} | " + " | ".join(cells(r["locales"].get(loc)) for r in reports.values()) + " |")
    if not args.locales:
        lines.append("| macro avg | " + " | ".join(cells(r.get("macro")) for r in reports.values()) + " |")
    else:
        # Macro over the shown locales only (the report's macro covers every scored locale).
        def macro(r: dict, key: str) -> float:
            vals = [r["locales"][loc]["pct"][key] for loc in locales if loc in r["locales"]]
            return sum(vals) / len(vals)

        lines.append("| macro avg | " + " | ".join(f"{macro(r, 'cer'):.1f} | {macro(r, 'wer'):.1f}"
                                                   for r in reports.values()) + " |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
