"""``asr-adapt init-model``: make a foundation model directory, or export a pretrained one.

Two modes (thin wrappers over :mod:`asr_adapt.training.foundation`):

* init:   ``--preset small --tokenizer DIR --cmvn-data data/train -o DIR`` writes a randomly
          initialised model with global CMVN statistics, ready for full-finetune pretraining;
* export: ``--from-checkpoint CKPT`` or ``--from-experiment EXP [--pick best|last] [--avg N]``
          with ``--init-dir DIR -o OUT`` turns a pretraining checkpoint (or the average of N
          consecutive ones) back into a model directory.
"""

from __future__ import annotations

import argparse
import ast
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "init-model",
        help="initialise a foundation model directory (preset + tokenizer + CMVN), or export a pretrained one",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="model directory to write")
    p.add_argument("--backbone", default="transducer", help="backbone family (default: transducer)")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in DIR")
    init = p.add_argument_group("init")
    init.add_argument("--preset", default="small", help="architecture preset (tiny, small, large)")
    init.add_argument("--tokenizer", metavar="DIR", help="tokenizer directory (asr-adapt tokenizer train)")
    init.add_argument("--cmvn-data", metavar="DATA", help="Kaldi data dir or manifest for the CMVN statistics")
    init.add_argument("--cmvn-locales", nargs="+", default=[], metavar="TAG",
                      help="only these locales' audio feeds CMVN (default: all)")
    init.add_argument("--cmvn-max-utts", type=int, default=400, help="utterances sampled for CMVN (default: 400)")
    init.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default: 0)")
    init.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="overrides",
                      help="replace one field of the preset's architecture config, e.g. --set dropout=0.0 "
                           "(repeatable; values are Python literals: 0.0, 8, (4, 8), 'relu')")
    exp = p.add_argument_group("export")
    src = exp.add_mutually_exclusive_group()
    src.add_argument("--from-checkpoint", metavar="CKPT", help="full-finetune checkpoint to export")
    src.add_argument("--from-experiment", metavar="EXP", help="pretraining experiment dir; see --pick")
    exp.add_argument("--pick", default="best", help="best (lowest macro dev CER, default) | last")
    exp.add_argument("--avg", type=int, default=1, metavar="N",
                     help="with --from-experiment: average the weights of N validation checkpoints, the "
                          "picked one and the N-1 before it (checkpoint averaging; default 1: none)")
    exp.add_argument("--init-dir", metavar="DIR", help="the model directory pretraining started from "
                     "(its buffers, e.g. CMVN, are not in checkpoints)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from asr_adapt.models.transducer.model import CONFIG_FILE
    from asr_adapt.training import foundation as fd

    out = Path(args.out)
    if (out / CONFIG_FILE).exists() and not args.overwrite:
        return _fail(f"{out} already holds a model; pass --overwrite to replace it")
    try:
        if args.from_checkpoint or args.from_experiment:
            if not args.init_dir:
                return _fail("export needs --init-dir (the directory pretraining started from)")
            if args.pick not in fd.PICKS:
                return _fail(f"unknown --pick {args.pick!r}; known: {', '.join(fd.PICKS.names())}")
            if args.avg != 1 and not args.from_experiment:
                return _fail("--avg needs --from-experiment (the run's validation history orders its checkpoints)")
            ckpt = Path(args.from_checkpoint) if args.from_checkpoint else fd.pick_checkpoint(args.from_experiment, args.pick)
            ckpts = fd.averaging_window(args.from_experiment, ckpt, args.avg) if args.avg != 1 else [ckpt]
            model = fd.export_checkpoint(ckpts, args.init_dir, out, family=args.backbone)
            what = f"exported {ckpt}" + (f" averaged with the {args.avg - 1} before it" if args.avg > 1 else "")
        else:
            if not (args.tokenizer and args.cmvn_data):
                return _fail("init needs --tokenizer and --cmvn-data (or use --from-checkpoint/--from-experiment)")
            if args.backbone not in fd.INITIALISERS:
                return _fail(f"no initialiser for backbone {args.backbone!r}; known: {', '.join(fd.INITIALISERS.names())}")
            config = fd.FoundationInitConfig(backbone=args.backbone, preset=args.preset, seed=args.seed,
                                             cmvn_max_utts=args.cmvn_max_utts, cmvn_locales=tuple(args.cmvn_locales),
                                             overrides=parse_overrides(args.overrides))
            model = fd.init_foundation(out, args.tokenizer, args.cmvn_data, config)
            what = f"initialised {args.preset} ({args.backbone})"
    except (FileNotFoundError, ValueError, KeyError) as e:
        return _fail(str(e))
    print(f"{what}: {fd.count_parameters(model):,} parameters -> {out}")
    return 0


def parse_overrides(items: list[str]) -> tuple[tuple[str, object], ...]:
    """``["dropout=0.0", "subsampling=8"]`` -> ``(("dropout", 0.0), ...)``; a value that is
    not a Python literal stays a string."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set dropout=0.0")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        out.append((key.strip(), parsed))
    return tuple(out)


def _fail(message: str) -> int:
    print(f"asr-adapt init-model: error: {message}", file=sys.stderr)
    return 2
