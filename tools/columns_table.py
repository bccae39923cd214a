"""One Markdown table of test WER for several systems on several test sets side by side.

Each column is a score directory written by ``asr-adapt score`` (``wer-summary-NAME.json``),
for example the held-out-voices test set and the held-out-engine test set of one experiment.
A system's cell is its WER per locale and the ratio to the baseline system's WER on the same
locale and test set (the acceptance unit "x zero-shot"); with ``--p`` the cell adds
P(improve) over the baseline when the system was scored with ``--baseline``.

    python tools/columns_table.py --column "held-out voices=exp/score_hv" \\
        --column "held-out engine=exp/score" --systems zeroshot full_gen0 adapted \\
        --locales cs-CZ it-IT --baseline zeroshot

A locale a column does not hold (no held-out engine speaks it) is left out of that column.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(score_dir: Path, system: str, prefix: str = "") -> dict | None:
    path = score_dir / f"wer-summary-{prefix}{system}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def cell(summary: dict | None, base: dict | None, locale: str, show_p: bool) -> str:
    """``WER (ratio to the baseline[, P])`` for one locale; ``-`` where it was not scored."""
    if summary is None or locale not in summary["locales"]:
        return "-"
    row = summary["locales"][locale]
    wer = row["pct"]["wer"]
    text = f"{wer:.1f}"
    if base is not None and locale in base["locales"]:
        text += f" ({wer / max(base['locales'][locale]['pct']['wer'], 1e-9):.2f}x"
        comparison = row.get("comparison")
        if show_p and comparison:
            text += f", P {comparison['p_improve']:.3f}"
        text += ")"
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--column", action="append", required=True, metavar="TITLE=SCORE_DIR[@PREFIX]",
                   help="a test set: its title and the score directory of its systems, whose score "
                        "names there carry PREFIX (e.g. hv-) if given (repeatable)")
    p.add_argument("--systems", nargs="+", required=True, help="score names, one row each")
    p.add_argument("--locales", nargs="+", required=True, help="locales, in column order")
    p.add_argument("--baseline", default="zeroshot", help="system the ratios are taken against")
    p.add_argument("--p", action="store_true", help="add P(improve) over the scored baseline")
    args = p.parse_args(argv)
    kept = []
    for spec in args.column:
        title, where = spec.split("=", 1)
        d, _, prefix = where.partition("@")
        base = load(Path(d), args.baseline, prefix)
        # Per column, only the locales scored there (the baseline decides).
        locs = [loc for loc in args.locales if base is None or loc in base["locales"]]
        kept.append((title, Path(d), prefix, base, locs))
    header = ["system"] + [f"{loc}, {title}" for title, _, _, _, locs in kept for loc in locs]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for system in args.systems:
        cells = [system]
        for _, d, prefix, base, locs in kept:
            summary = load(d, system, prefix)
            ref = None if system == args.baseline else base
            cells += [cell(summary, ref, loc, args.p) for loc in locs]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
