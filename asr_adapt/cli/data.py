"""``asr-adapt data``: check, repair and convert Kaldi data dirs and JSONL manifests."""

from __future__ import annotations

import argparse
import sys


def _validate(args: argparse.Namespace) -> int:
    from asr_adapt.data.kaldi import validate

    problems = validate(args.dir)
    for p in problems:
        print(f"{args.dir.rstrip('/')}/{p}")
    if problems:
        print(f"{len(problems)} problem(s) in {args.dir}; `asr-adapt data fix {args.dir}` repairs most", file=sys.stderr)
        return 1
    print(f"{args.dir}: OK")
    return 0


def _fix(args: argparse.Namespace) -> int:
    from asr_adapt.data.kaldi import fix, validate

    kept, total = fix(args.dir)
    print(f"kept {kept} of {total}")
    remaining = validate(args.dir)
    for p in remaining:
        print(f"{args.dir.rstrip('/')}/{p}")
    return 1 if remaining else 0


def _to_jsonl(args: argparse.Namespace) -> int:
    from asr_adapt.data.manifest import kaldi_to_manifest

    n = kaldi_to_manifest(args.dir, args.out)
    print(f"wrote {n} utterances to {args.out}")
    return 0


def _from_jsonl(args: argparse.Namespace) -> int:
    from asr_adapt.data.manifest import manifest_to_kaldi

    n = manifest_to_kaldi(args.manifest, args.dir)
    print(f"wrote {n} utterances to {args.dir}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="validate, fix and convert Kaldi data dirs and JSONL manifests",
        description="Kaldi data dirs (wav.scp, text, utt2spk, spk2utt, utt2lang, utt2dur, segments) "
        "and JSONL manifests (audio_filepath, duration, text, lang, offset, speaker, utt_id).",
    )
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = sub.add_parser("validate", help="check a data dir against Kaldi's rules; exit 1 on any problem",
                       description="Prints every problem as FILE:LINE: MESSAGE (line 0: the file as a whole): "
                       "unsorted or duplicate keys, CRLF, missing final newline, utterance lists that differ "
                       "between files, spk2utt not matching utt2spk, empty transcripts, non-positive "
                       "durations, bad segments.")
    p.add_argument("dir", help="Kaldi data dir")
    p.set_defaults(func=_validate)

    p = sub.add_parser("fix", help="sort, drop inconsistent utterances, regenerate spk2utt",
                       description="Repairs a data dir in place after copying the originals to "
                       "DIR/.backup/<timestamp>/, and prints 'kept N of M' utterances.")
    p.add_argument("dir", help="Kaldi data dir")
    p.set_defaults(func=_fix)

    p = sub.add_parser("to-jsonl", help="convert a Kaldi data dir to a JSONL manifest")
    p.add_argument("dir", help="Kaldi data dir")
    p.add_argument("out", help="output manifest (.jsonl)")
    p.set_defaults(func=_to_jsonl)

    p = sub.add_parser("from-jsonl", help="convert a JSONL manifest to a Kaldi data dir")
    p.add_argument("manifest", help="input manifest (.jsonl)")
    p.add_argument("dir", help="output Kaldi data dir")
    p.set_defaults(func=_from_jsonl)
