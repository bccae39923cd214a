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
                   "(NAME=) for the untrained base. Training time is read from the wall_s the "
                   "training runs behind it recorded in history.jsonl (teachers included). Repeatable.")
    p.add_argument("--macro-over", default=None, metavar="L1,L2,...",
                   help="locales the systems table averages over (e.g. the adapted tail locales; "
                   "default: all scored locales)")
    p.set_defaults(func=run)


def _cost_cells(spec: str) -> tuple[str, dict[str, str]]:
    from asr_adapt.training.cost import format_duration, system_cost

    name, sep, source = spec.partition("=")
    if not sep or not name:
        raise ValueError(f"--system-cost {spec!r}: expected NAME=SOURCE (NAME= for the untrained base)")
    c = system_cost(source)
    params = f"{c.params_per_locale:,}" if c.params_per_locale is not None else "-"
    if c.shared_params:
        params += f" (+ {c.shared_params:,} shared)"
    return name, {"trainable / locale": params, "training time": format_duration(c.wall_s)}


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asr_adapt.scoring.readers import ScoringError
    from asr_adapt.scoring.writers import collect_reports, write_comparison, write_systems_table

    try:
        reports = collect_reports(args.dirs)
        costs = dict(_cost_cells(spec) for spec in args.system_cost)
    except (ScoringError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    unknown = sorted(set(costs) - {r.name for r in reports})
    if unknown:
        print(f"error: --system-cost names systems that were not scored: {', '.join(unknown)}", file=sys.stderr)
        return 1
    paths = write_comparison(reports, Path(args.out), args.stem)
    print(paths["md"].read_text(encoding="utf-8"))
    if costs:
        macro_over = [x for x in args.macro_over.split(",") if x] if args.macro_over else None
        sys_paths = write_systems_table(reports, Path(args.out), "systems", macro_over, costs)
        print(sys_paths["md"].read_text(encoding="utf-8"))
        paths.update({f"systems_{k}": v for k, v in sys_paths.items()})
    print("wrote: " + ", ".join(str(p) for p in paths.values()))
    return 0
