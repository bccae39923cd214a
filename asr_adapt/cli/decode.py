"""``asr-adapt decode INPUT -o OUT``: transcribe a folder of audio, a Kaldi data dir or a manifest.

Thin: parses arguments, loads a :class:`~asr_adapt.decoding.service.Transcriber` (model,
adapters, policies) and calls :func:`asr_adapt.decoding.runner.decode_utterances`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "decode",
        help="transcribe audio (folder, Kaldi data dir or JSONL manifest) into OUT/hyp.jsonl and other formats",
        description="Transcribe INPUT into OUT. Resumable: a re-run skips utterances already in OUT/hyp.jsonl. "
        "Unreadable audio is listed in OUT/failed.tsv and makes the exit code 1.",
    )
    p.add_argument("input", help="folder of audio (recursive: wav/flac/ogg/mp3/...), Kaldi data dir, or JSONL manifest")
    p.add_argument("-o", "--output", required=True, help="output directory (created; one run at a time)")
    p.add_argument("--model", default="whisper-base", help="model name known to the resolver, or a local model directory")
    p.add_argument("--backbone", default="whisper", help="backbone family (registry name)")
    add_routing_args(p)
    p.add_argument("--batch-size", type=int, default=8, help="utterances per batch (sorted by duration)")
    p.add_argument("--beam-size", type=int, default=1, help="1: greedy; >1: beam search")
    p.add_argument("--context", choices=("dynamic", "full"), default="dynamic",
                   help="dynamic: encoder on the real length (fast); full: stock 30 s padding")
    p.add_argument("--min-window", type=float, default=None,
                   help="dynamic context: shortest encoder window in seconds (default 10). Rows served by "
                   "--adapters use the window recorded in the bundle (the one they were trained at)")
    p.add_argument("--fallback", default=None, help="what to do with looping pieces: full_context (default) or none")
    p.add_argument("--max-new-tokens", type=int, default=None, help="hard cap on tokens per ≤30 s piece")
    p.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    p.add_argument("--mode", choices=("full", "streaming"), default=None,
                   help="transducer: full (second pass, default) or streaming (first pass, chunked)")
    p.add_argument("--chunk-ms", type=int, default=None, help="transducer: streaming chunk size in ms (default 320)")
    p.add_argument("--lm", default=None, metavar="DIR",
                   help="transducer, beam search: fuse each utterance's locale LM from DIR (`asr-adapt lm train`)")
    p.add_argument("--lm-weight", type=float, default=None, help="transducer: LM weight in shallow fusion (default 0.5)")
    p.add_argument("--lm-bonus", type=float, default=None,
                   help="transducer: score added per emitted token under fusion (default 1.0)")
    p.add_argument("--format", default="txt,jsonl",
                   help="comma-separated outputs: txt,jsonl,kaldi,srt,vtt,tsv (hyp.jsonl is always written)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--compute-type", default="float32",
                   help="whisper: precision of the base model. auto (recommended on CPU): the fastest type "
                   "bench/engine_speed.py found accurate on a CPU with this one's features (float32 where it "
                   "has no measurement, and on GPUs). float32 (default): as loaded. CPU types: int8 (every "
                   "linear layer in int8: weights per output channel, activations per token), int8_decoder "
                   "(decoder and vocabulary projection in int8, encoder float32), bfloat16 (linear layers, "
                   "encoder attention and decoder cross-attention in bfloat16), bf16_encoder_int8_decoder "
                   "(encoder bfloat16, decoder int8, cross-attention bfloat16). Linear layers carrying unmerged "
                   "LoRA/S2-LoRA adapters stay float32 (export a merged model for full speed); LDA adapters "
                   "stay float32 and work as usual")
    # One thread by default: on CPU a second thread decodes no faster (the cores share
    # floating-point throughput), and on a loaded machine it was 3.5x slower
    # (bench/RESULTS.md, "Threads on the decode path").
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def add_routing_args(p: argparse.ArgumentParser) -> None:
    """--lang, --adapters, --sibling, --adapter-aware-lid: shared by every decoding command."""
    p.add_argument("--lang", default="auto",
                   help="locale for every utterance (e.g. de-DE); 'auto' (default): each utterance's own locale, "
                   "else language identification; 'auto:el-GR,uk-UA,en-US': identification among these locales only")
    p.add_argument("--adapters", default=None,
                   help="adapter bundle saved by asr-adapt. A row's adapter: its exact locale, else its language "
                   "(el-GR -> an 'el' adapter; a detected 'el' -> the one el-* adapter), else a --sibling, "
                   "else the base model (warned once per locale)")
    add_policy_args(p)


def add_policy_args(p: argparse.ArgumentParser, candidates: bool = False) -> None:
    """--sibling and --adapter-aware-lid (+ --lid-candidates for commands whose rows carry their
    own locales): the decode service's routing and identification policies."""
    p.add_argument("--sibling", action="append", default=[], metavar="LOCALE=ADAPTER",
                   help="let LOCALE (or a language) use ADAPTER's adapter, e.g. --sibling el-CY=el-GR (repeatable)")
    p.add_argument("--adapter-aware-lid", action="store_true",
                   help="identification rescoring: decode the first seconds with each top candidate's adapter "
                   "(better on the tail languages the adapters exist for)")
    if candidates:
        p.add_argument("--lid-candidates", default="", metavar="LOCALE[,LOCALE...]",
                       help="rows without a locale are identified among these locales only (default: any language)")


def policy_kwargs(args, candidates: tuple[str, ...] | None = None) -> dict:
    """``siblings`` and ``lid`` for :meth:`Transcriber.load` from :func:`add_policy_args`'s options;
    ``candidates`` (from ``--lang auto:...``) replace ``--lid-candidates``."""
    from asr_adapt.decoding.service import LanguageId

    if candidates is None:
        candidates = tuple(c.strip() for c in getattr(args, "lid_candidates", "").split(",") if c.strip())
    return {"siblings": parse_siblings(args.sibling),
            "lid": LanguageId(candidates=candidates, adapter_aware=args.adapter_aware_lid)}


def parse_lang(spec: str) -> tuple[str | None, tuple[str, ...]]:
    """``--lang``: the locale it fixes for every row (``None``: each row's own, or identification)
    and the identification candidates of ``auto:...``."""
    from asr_adapt.decoding.service import LanguageId

    try:
        fixed, lid = LanguageId.parse(spec)
    except ValueError as e:
        raise SystemExit(f"error: --lang: {e}") from None
    return fixed, lid.candidates


def parse_siblings(items) -> dict[str, str]:
    out = {}
    for item in items:
        if item.count("=") != 1 or not all(item.split("=")):
            raise SystemExit(f"error: --sibling {item!r}: expected LOCALE=ADAPTER_LOCALE, e.g. el-CY=el-GR")
        k, v = item.split("=")
        out[k.strip()] = v.strip()
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from asr_adapt.decoding.runner import decode_utterances
    from asr_adapt.decoding.service import Transcriber
    from asr_adapt.decoding.writers import parse_formats
    from asr_adapt.fileio import LockError
    from asr_adapt.models.whisper_compute import AUTO, COMPUTE_TYPES

    try:
        formats = parse_formats(args.format)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    if args.compute_type not in COMPUTE_TYPES and args.compute_type != AUTO:
        print(f"error: unknown --compute-type {args.compute_type!r}; known: auto, {', '.join(COMPUTE_TYPES)}",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    fixed, candidates = parse_lang(args.lang)
    utterances = _read_input(args.input, fixed)
    try:
        transcriber = Transcriber.load(args.backbone, args.model, args.adapters, device=args.device,
                                       compute_type=args.compute_type, options=_family_overrides(args.backbone, args),
                                       **policy_kwargs(args, candidates))
    except ValueError as e:  # e.g. int8 asked for on a GPU, or for the transducer; a bad option value
        raise SystemExit(f"error: {e}") from None
    root = args.input if Path(args.input).is_dir() and not (Path(args.input) / "wav.scp").exists() else None
    try:
        summary = decode_utterances(
            transcriber, utterances, args.output, batch_size=args.batch_size, formats=formats,
            lang=fixed, input_root=root, progress=not args.no_progress,
        )
    except LockError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log.info(
        "decoded %d, skipped %d (already done), failed %d of %d; %.1f s audio, RTF %.3f",
        summary.decoded, summary.skipped, len(summary.failed), summary.total, summary.audio_s, summary.rtf,
    )
    if summary.failed:
        print(f"{len(summary.failed)} file(s) failed; see {Path(args.output) / 'failed.tsv'}", file=sys.stderr)
        return 1
    return 0


def _family_overrides(family: str, args) -> dict:
    """The command-line options that this backbone family's decoding options define.

    Whisper and the transducer have different option dataclasses; options a family does not
    have are an error only when the user set them explicitly.
    """
    import dataclasses

    from asr_adapt.decoding.decoders import DECODERS

    known = {f.name for f in dataclasses.fields(DECODERS.get(family).options)}
    wanted = {"beam_size": args.beam_size, "context": args.context, "task": args.task}
    explicit = {"min_window_s": args.min_window, "fallback": args.fallback, "max_new_tokens": args.max_new_tokens,
                "mode": args.mode, "chunk_ms": args.chunk_ms, "lm": args.lm, "lm_weight": args.lm_weight,
                "lm_bonus": args.lm_bonus}
    explicit = {k: v for k, v in explicit.items() if v is not None}
    unknown = sorted(k for k in explicit if k not in known)
    if unknown:
        raise SystemExit(f"error: {', '.join(unknown)} do not apply to the {args.backbone} backbone")
    out = {k: v for k, v in {**wanted, **explicit}.items() if k in known}
    if "method" in known and args.beam_size > 1:  # transducer: beam size selects beam search
        out["method"] = "beam"
    return out


def _read_input(path: str, lang: str | None):
    from asr_adapt.data.kaldi import load_utterances

    if not Path(path).exists():
        raise SystemExit(f"error: {path}: no such file or directory")
    utts = load_utterances(path, lang=lang)
    if not utts:
        raise SystemExit(f"error: no utterances found in {path}")
    return utts
