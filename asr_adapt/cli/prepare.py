"""``asr-adapt prepare CORPUS SRC OUT``: a downloaded corpus release -> Kaldi data dirs.

One sub-subcommand per registered corpus (:data:`~asr_adapt.data.corpora.CORPORA`); its
options are generated from the corpus' frozen config dataclass (field name -> ``--flag``,
metadata help -> help text), so a new corpus or option needs no CLI code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from asr_adapt.data.corpora import CORPORA

    p = sub.add_parser(
        "prepare",
        help="turn a downloaded corpus release (Common Voice, FLEURS) into Kaldi data dirs",
        description="Write one Kaldi data dir per split under OUT (all locales merged), with "
        "utt2lang (BCP-47) and utt2dur. Clips that are missing, empty or undecodable are left out "
        "and listed in OUT/<split>/skipped.tsv; counts per locale are printed and written to "
        "OUT/prepare.json.",
    )
    corpora = p.add_subparsers(dest="corpus", metavar="CORPUS", required=True)
    for name, corpus in CORPORA.items():
        cp = corpora.add_parser(name, help=corpus.help, description=corpus.help)
        cp.add_argument("src", help="release root (the folder holding one folder per locale)")
        cp.add_argument("out", help="output folder: OUT/<split> data dirs")
        _add_config_options(cp, corpus.config_cls)
        cp.set_defaults(func=run, config_cls=corpus.config_cls)


def _add_config_options(p: argparse.ArgumentParser, config_cls: type) -> None:
    """One option per config field; the option kind follows the field's default value."""
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        kw: dict = {"dest": f.name, "default": default}
        if isinstance(default, bool):
            kw.update(action=argparse.BooleanOptionalAction, help=help_)
        elif isinstance(default, tuple):
            shown = "" if "default" in help_ else f" (default: {' '.join(default)})"
            kw.update(nargs="+", help=help_ + shown)
        else:
            kw.update(type=type(default), help=f"{help_} (default: {default})")
            if "choices" in f.metadata:
                kw["choices"] = f.metadata["choices"]
        p.add_argument(flag, **kw)


def run(args: argparse.Namespace) -> int:
    from asr_adapt.data.corpora import CORPORA

    corpus = CORPORA.get(args.corpus)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args.config_cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        config = args.config_cls(**values)
        report = corpus.prepare(args.src, args.out, config)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    total_skipped = sum(sum(r.skipped.values()) for r in report.splits.values())
    empty = [s for s, r in report.splits.items() if not r.kept]
    if total_skipped:
        print(f"\nskipped {total_skipped} row(s); reasons per clip in {args.out}/<split>/skipped.tsv")
    if empty:
        print(f"warning: no usable utterances for split(s) {', '.join(empty)}; no data dir written",
              file=sys.stderr)
    hours = {s: round(r.hours, 3) for s, r in report.splits.items()}
    print(f"hours per split: {json.dumps(hours)}; summary: {args.out}/prepare.json")
    return 0
