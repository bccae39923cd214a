#!/usr/bin/env python
"""Decode a data dir with a transducer model (+ adapters) in one mode, into OUT/hyp.jsonl.

``asr-adapt decode`` builds Whisper's decoding options (context window, task, fallback),
which the transducer's options do not have; this recipe-local script makes the
transducer's :class:`TransducerDecodingOptions` instead and reuses the same resumable
decode job, so ``asr-adapt score`` reads its output like any decode directory.

  full:       whole utterance, full attention, second (non-causal) pass
  streaming:  first (causal) pass fed chunk by chunk, ``--chunk-ms`` per chunk
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="Kaldi data dir or JSONL manifest (locale from utt2lang routes adapters)")
    p.add_argument("-o", "--out", required=True, help="output directory (hyp.jsonl, text)")
    p.add_argument("--model", required=True, help="transducer model directory")
    p.add_argument("--adapters", default=None, help="adapter bundle (asr-adapt merge)")
    p.add_argument("--mode", default="full", help="full | streaming")
    p.add_argument("--chunk-ms", type=int, default=320, help="streaming chunk (ms, multiple of 40)")
    p.add_argument("--method", default="greedy", help="greedy | modified_beam (full mode)")
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--locales", nargs="+", default=None, help="decode only these locales")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: shared machine)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")

    import torch

    from asr_adapt.data.kaldi import load_utterances
    from asr_adapt.decoding.runner import decode_utterances
    from asr_adapt.training.teacher import load_teacher

    torch.set_num_threads(args.threads)
    utts = load_utterances(args.data)
    if args.locales:
        utts = [u for u in utts if u.lang in set(args.locales)]
    if not utts:
        print(f"error: no utterances in {args.data} for {args.locales or 'any locale'}", file=sys.stderr)
        return 2
    model = load_teacher("transducer", args.model, args.adapters)
    options = model.decoding_options(mode=args.mode, chunk_ms=args.chunk_ms, method=args.method,
                                     beam_size=args.beam_size)
    with torch.inference_mode():
        summary = decode_utterances(model, utts, args.out, options, batch_size=args.batch_size,
                                    formats=("jsonl", "kaldi"), progress=False)
    print(f"{args.mode}: decoded {summary.decoded} (skipped {summary.skipped}, failed {len(summary.failed)}) "
          f"of {summary.total}; {summary.audio_s:.0f} s audio in {summary.wall_s:.0f} s, RTF {summary.rtf:.3f}")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
