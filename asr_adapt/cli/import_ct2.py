"""``asr-adapt import-ct2 SRC OUT``: convert a CTranslate2 / faster-whisper Whisper model
into a Hugging Face directory (see :mod:`asr_adapt.models.ct2_import`)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import-ct2",
        help="convert a CTranslate2/faster-whisper Whisper directory to a Hugging Face one",
        description="Convert a CTranslate2 / faster-whisper Whisper model (model.bin or "
        "model.bin.part1+part2, config.json, tokenizer.json) into a Hugging Face directory "
        "loadable by WhisperForConditionalGeneration/WhisperProcessor.from_pretrained.",
    )
    p.add_argument("src", nargs="+", help="CTranslate2 directory (several if its files are spread over them)")
    p.add_argument("out", help="output Hugging Face model directory (written atomically)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip reloading the result to check every key")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from asr_adapt.models.ct2_import import import_ct2

    out = import_ct2(args.src, args.out, force=args.force, verify=args.verify)
    print(out)
    return 0
