"""``asr-adapt train``: hands its arguments to LightningCLI (see :mod:`asr_adapt.training.cli`)."""

from __future__ import annotations

import argparse


def run_train(argv: list[str]) -> int:
    from asr_adapt.training.cli import run_train as _run

    return _run(argv)


def register(sub: argparse._SubParsersAction) -> None:
    # Listed for `asr-adapt --help`; main() dispatches `train` before argparse runs.
    p = sub.add_parser("train", help="train adapters: `asr-adapt train fit --config recipes/....yaml`",
                       add_help=False)
    p.set_defaults(func=lambda args: run_train(["--help"]))
