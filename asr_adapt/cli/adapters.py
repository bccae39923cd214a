"""``asr-adapt adapters``: inspect adapter directories.

    asr-adapt adapters info exp/adapters            # locales, types, parameter counts, % of base
    asr-adapt adapters ranks exp/adapters --out R   # S2-LoRA rank distribution (md, csv, png)
"""

from __future__ import annotations

import argparse
import json


def _info(args: argparse.Namespace) -> int:
    from asr_adapt.adapters import adapter_info, format_info, read_meta

    rows = adapter_info(args.path)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    meta = read_meta(args.path)
    print(f"base fingerprint {meta['base_fingerprint']}, {meta['base_params']:,} base parameters")
    print(format_info(rows))
    return 0


def _ranks(args: argparse.Namespace) -> int:
    from asr_adapt.adapters.report import rank_distribution, rank_table, write_rank_report

    if args.out:
        for p in write_rank_report(args.path, args.out, eps=args.eps):
            print(p)
    else:
        print(rank_table(rank_distribution(args.path, eps=args.eps), args.format), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adapters", help="inspect saved adapters")
    asub = p.add_subparsers(dest="adapters_command", metavar="ACTION", required=True)
    info = asub.add_parser("info", help="locales, types, parameter counts and %% of base of an adapter directory")
    info.add_argument("path", help="adapter directory (holds adapter_config.json)")
    info.add_argument("--json", action="store_true", help="print the rows as JSON")
    info.set_defaults(func=_info)
    ranks = asub.add_parser("ranks", help="S2-LoRA non-zero ranks per matrix and layer")
    ranks.add_argument("path", help="adapter directory with S2-LoRA adapters")
    ranks.add_argument("--eps", type=float, default=1e-3, help="|lambda| above this counts as a used rank")
    ranks.add_argument("--format", choices=["markdown", "csv"], default="markdown", help="table format on stdout")
    ranks.add_argument("--out", help="write ranks.md, ranks.csv and a heat map per locale here instead")
    ranks.set_defaults(func=_ranks)
