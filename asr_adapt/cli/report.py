"""``asr-adapt report DIR... -o OUT``: one comparison table over several scored systems, and
with ``--system-cost`` a systems table with what each system cost to train."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="compare several scored systems (reads their wer-summary-*.json)",
        description="Collect the wer-summary-*.json files written by `asr-adapt score` from each "
        "DIR (or the JSON files given) into one table: rows = locales + macro avg + pooled, "
        "columns = systems. Writes OUT/comparison.{md,csv,png}. With --system-cost, also "
        "OUT/systems.{md,csv}: one row per system with its error rate per locale, the macro "
        "average (over --macro-over), trainable parameters per locale and training wall time.",
    )
    p.add_argument("dirs", nargs="+", help="score output dirs or wer-summary-*.json files")
    p.add_argument("-o", "--out", default=".", help="output dir (default: current dir)")
    p.add_argument("--stem", default="comparison", help="output file stem (default: comparison)")
    p.add_argument("--system-cost", action="append", default=[], metavar="NAME=SOURCE",
                   help="what system NAME was decoded with: an adapter bundle (`asr-adapt merge` "
                   "output), an exported model (`asr-adapt init-model` output), or nothing "
                   "(NAME=) for the untrained base. Training time is the wall_s that the training "
                   "runs behind it (noisy-student teachers included) recorded in history.jsonl; "
                   "run from the directory they were trained in. Repeatable.")
    p.add_argument("--macro-over", default=None, metavar="L1,L2,...",
                   help="locales the systems table averages over (e.g. the adapted tail locales; "
                   "default: all scored locales)")
    p.set_defaults(func=run)


def _cost_cells(specs: list[str], scored: set[str]) -> dict[str, dict[str, str]]:
    """System name -> formatted cost cells; ``ValueError`` naming the bad ``--system-cost``."""
    from asr_adapt.training.cost import format_duration, system_cost

    cells: dict[str, dict[str, str]] = {}
    for spec in specs:
        name, sep, source = spec.partition("=")
        if not sep or not name:
            raise ValueError(f"--system-cost {spec!r}: expected NAME=SOURCE (NAME= for the untrained base)")
        if name not in scored:
            raise ValueError(f"--system-cost {spec!r}: no scored system is named {name!r}")
        if name in cells:
            raise ValueError(f"--system-cost {name!r} is given twice")
        try:
            c = system_cost(source)
        except (OSError, KeyError, ValueError) as e:  # ValueError includes malformed JSON
            raise ValueError(f"--system-cost {spec!r}: {e}") from None
        cells[name] = {"trainable / locale": c.params_cell(), "training time": format_duration(c.wall_s)}
    return cells


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asr_adapt.scoring.readers import ScoringError
    from asr_adapt.scoring.writers import collect_reports, write_comparison, write_systems_table

    try:
        reports = collect_reports(args.dirs)
    except ScoringError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    paths = write_comparison(reports, Path(args.out), args.stem)
    print(paths["md"].read_text(encoding="utf-8"))
    if args.system_cost or args.macro_over:
        scored_locales = {loc for r in reports for loc in r.locales}
        macro_over = [x.strip() for x in (args.macro_over or "").split(",") if x.strip()] or None
        unknown = sorted(set(macro_over or []) - scored_locales)
        try:
            if unknown:
                raise ValueError(f"--macro-over names locales no system was scored on: {', '.join(unknown)}")
            costs = _cost_cells(args.system_cost, {r.name for r in reports})
        except ValueError as e:
            print(f"error: {e} (the comparison table was written)", file=sys.stderr)
            return 1
        sys_paths = write_systems_table(reports, Path(args.out), "systems", macro_over, costs)
        print(sys_paths["md"].read_text(encoding="utf-8"))
        paths.update({f"systems_{k}": v for k, v in sys_paths.items()})
    print("wrote: " + ", ".join(str(p) for p in paths.values()))
    return 0
