"""``asr-adapt tokenizer train``: a multilingual output tokenizer for the transducer.

Reads one or more Kaldi ``text`` files (every locale's training text, so tail-language
scripts are in the vocabulary) and writes ``tokenizer_config.json`` plus the tokenizer's
files to ``-o DIR``; :func:`asr_adapt.models.transducer.tokenizer.load_tokenizer` reads them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from asr_adapt.models.transducer.tokenizer import CONFIG_FILE, read_kaldi_text, train_tokenizer

    out = Path(args.out)
    if (out / CONFIG_FILE).exists() and not args.overwrite:
        print(f"asr-adapt tokenizer: {out} already holds a tokenizer; pass --overwrite to replace it",
              file=sys.stderr)
        return 1
    try:
        texts = read_kaldi_text(args.text)
    except (OSError, ValueError) as e:
        print(f"asr-adapt tokenizer: {e}", file=sys.stderr)
        return 1
    options = {"vocab_size": args.vocab_size, "model_type": args.model_type} if args.kind == "sentencepiece" else {}
    tok = train_tokenizer(args.kind, texts, **options)
    tok.save(out)
    print(f"{args.kind} tokenizer: {tok.vocab_size} tokens (id 0 = blank) from {len(texts)} transcripts -> {out}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("tokenizer", help="train the transducer's output tokenizer",
                              description=__doc__.split("\n\n")[1] if __doc__ else None)
    sub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    t = sub.add_parser("train", help="train a tokenizer from Kaldi text files",
                       description="Train a sentencepiece (unigram/BPE, byte fallback, full character "
                       "coverage) or character tokenizer from Kaldi `text` files.")
    t.add_argument("--text", nargs="+", action="extend", required=True, metavar="FILE",
                   help="Kaldi text file(s): '<utt-id> <transcript>' per line; repeatable")
    t.add_argument("--kind", default="sentencepiece", choices=["sentencepiece", "char"],
                   help="tokenizer kind (default: sentencepiece)")
    t.add_argument("--vocab-size", type=int, default=500,
                   help="sentencepiece: upper bound on the vocabulary incl. 256 byte pieces (default: 500)")
    t.add_argument("--model-type", default="unigram", choices=["unigram", "bpe"],
                   help="sentencepiece model type (default: unigram)")
    t.add_argument("-o", "--out", required=True, metavar="DIR", help="output directory")
    t.add_argument("--overwrite", action="store_true", help="replace a tokenizer already in DIR")
    t.set_defaults(func=_train)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
