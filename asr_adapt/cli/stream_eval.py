"""``asr-adapt stream-eval DATA -o OUT``: streaming WER, latency and RTF per locale.

Thin: parses arguments, loads the model (+ adapters) and calls
:func:`asr_adapt.decoding.streaming_eval.run_stream_eval`, then
:func:`asr_adapt.decoding.streaming_summary.write_summary`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from asr_adapt.cli.decode import add_policy_args, policy_kwargs

log = logging.getLogger(__name__)

DESCRIPTION = """\
Simulate streaming recognition of DATA (Kaldi data dir or JSONL manifest with references)
and compare it with the same model's offline decode, per locale.

  transducer: true chunk-by-chunk streaming (first pass, greedy), one operating point per
              --chunk-ms; offline = full attention + second pass.
  whisper:    re-decode a growing buffer every --step-ms of new audio and commit by each
              --policy: local-agreement (what --agreement consecutive hypotheses share) or
              alignatt (the words decoded before the cross-attention reaches the last
              --guard-ms of the buffer); offline = one decode.

Writes OUT/stream-<backbone>-<point>.jsonl (committed words with emission times, per
utterance), OUT/offline-<backbone>.jsonl, OUT/stream-summary.{md,json,csv} and
OUT/stream-wer-vs-latency.png. Resumable: a re-run skips finished utterances; the summary
covers every stream file in OUT (so two backbones can share one OUT).
"""


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one value")
    return vals


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "stream-eval", help="streaming WER vs latency per locale (transducer chunks, Whisper LocalAgreement/AlignAtt)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", metavar="DATA", help="Kaldi data dir or JSONL manifest (with text and utt2lang)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output directory (one run at a time)")
    p.add_argument("--backbone", required=True, help="backbone family with a streaming simulator: transducer, whisper")
    p.add_argument("--model", required=True, help="model directory or a name known to the resolver (whisper-base)")
    p.add_argument("--adapters", default=None, help="adapter bundle; routed by each utterance's locale")
    add_policy_args(p)
    p.add_argument("--chunk-ms", type=_ints, default=(160, 320, 640), metavar="MS[,MS...]",
                   help="transducer: chunk sizes in ms, multiples of 40 (default: 160,320,640)")
    p.add_argument("--left-context-chunks", type=int, default=-1, metavar="N",
                   help="transducer: chunks of left context; -1 unlimited (default)")
    p.add_argument("--step-ms", type=_ints, default=(500, 1000), metavar="MS[,MS...]",
                   help="whisper: new audio between buffer re-decodes, in ms (default: 500,1000)")
    p.add_argument("--policy", default="local-agreement", metavar="NAME[,NAME...]",
                   help="whisper: commit policies, each at every --step-ms: local-agreement, alignatt "
                        "(default: local-agreement)")
    p.add_argument("--agreement", type=int, default=2, metavar="N", help="whisper: LocalAgreement-N (default: 2)")
    p.add_argument("--guard-ms", type=int, default=400, metavar="MS",
                   help="whisper alignatt: hold back tokens whose attention peaks in the last MS of the buffer "
                        "(default: 400)")
    p.add_argument("--max-buffer-s", type=float, default=10.0,
                   help="whisper: trim committed audio once the buffer is longer (default: 10)")
    p.add_argument("--max-utts", type=int, default=None, metavar="N", help="at most N utterances per locale")
    p.add_argument("--normaliser", default="multilingual", help="text normaliser for WER (default: multilingual)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from asr_adapt.data.kaldi import load_utterances
    from asr_adapt.decoding.streaming_eval import STREAM_SIMULATORS, StreamEvalConfig, run_stream_eval
    from asr_adapt.decoding.streaming_summary import write_summary
    from asr_adapt.fileio import LockError

    if args.backbone not in STREAM_SIMULATORS:
        return _fail(f"no streaming simulator for backbone {args.backbone!r}; known: "
                     f"{', '.join(STREAM_SIMULATORS.names())}")
    try:
        config = StreamEvalConfig(
            chunk_ms=args.chunk_ms, left_context_chunks=args.left_context_chunks, step_ms=args.step_ms,
            policies=tuple(x.strip() for x in args.policy.split(",") if x.strip()), agreement=args.agreement,
            guard_ms=args.guard_ms, max_buffer_s=args.max_buffer_s, normaliser=args.normaliser,
            max_utts=args.max_utts,
        )
    except ValueError as e:
        return _fail(str(e))
    if not Path(args.data).exists():
        return _fail(f"{args.data}: no such data dir or manifest")
    utts = load_utterances(args.data)
    if not utts:
        return _fail(f"no utterances in {args.data}")
    if args.threads:
        torch.set_num_threads(args.threads)
    from asr_adapt.decoding.service import Transcriber

    try:
        transcriber = Transcriber.load(args.backbone, args.model, args.adapters, **policy_kwargs(args))
    except (FileNotFoundError, ValueError, OSError) as e:
        return _fail(f"cannot load {args.backbone} model {args.model!r}: {e}")
    try:
        result = run_stream_eval(transcriber, utts, args.output, config, progress=not args.no_progress)
    except LockError as e:
        return _fail(str(e))
    except ValueError as e:
        return _fail(str(e))
    paths = write_summary(args.output, args.normaliser)
    log.info("streamed %d utterance(s), %d already done, %d failed; summary: %s",
             result.done, result.skipped, len(result.failed), paths["md"])
    if result.failed:
        print(f"{len(result.failed)} file(s) failed; see {Path(args.output) / 'failed.tsv'}", file=sys.stderr)
        return 1
    return 0


def _fail(message: str) -> int:
    print(f"asr-adapt stream-eval: error: {message}", file=sys.stderr)
    return 2
