"""``asr-adapt export``: base model + one locale's adapter -> a stock HF or CTranslate2 model."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="fold one locale's adapter into the base model and save it for a stock runtime",
        description="Fold one locale's LoRA/S2-LoRA adapter into the base weights and write a directory "
        "that stock runtimes load: 'hf' (transformers) or 'ct2' (CTranslate2 / faster-whisper). "
        "LDA adapters cannot be folded into a stock architecture.",
    )
    p.add_argument("out", help="output model directory (written atomically)")
    p.add_argument("--model", required=True, help="base model name (whisper-base) or Hugging Face directory")
    p.add_argument("--adapters", required=True, help="adapter directory (adapter_config.json + safetensors)")
    p.add_argument("--lang", required=True, help="locale to export (BCP-47, e.g. el-GR; falls back to its language)")
    # Validated by the format registry (kept out of parser building, which must stay light).
    p.add_argument("--format", dest="fmt", default="hf", help="output format: hf or ct2 (default: hf)")
    p.add_argument("--quantization", default=None,
                   help="weight type; hf: float32|float16, ct2: int8|float16|float32|... (default float32)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--check", metavar="DATA", default=None,
                   help="after exporting, decode DATA's utterances of --lang (Kaldi dir, manifest or audio folder) "
                   "with the stock runtime(s) and with asr-adapt, and report transcript/token agreement")
    p.add_argument("--check-utts", type=int, default=10, help="utterances used by --check (default: 10)")
    p.add_argument("--check-max-tokens", type=int, default=128,
                   help="asr-adapt's token cap per utterance for --check (at most 224, the stock runtimes' own cap)")
    p.set_defaults(func=run)



def run(args: argparse.Namespace) -> int:
    import sys

    from asr_adapt.adapters import AdapterError
    from asr_adapt.export import export_model

    try:
        out = export_model(args.model, args.adapters, args.lang, args.out, fmt=args.fmt,
                           quantization=args.quantization, overwrite=args.overwrite)
    except (AdapterError, FileExistsError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e  # KeyError str() adds quotes
        print(f"asr-adapt export: error: {msg}", file=sys.stderr)
        return 2
    print(out)
    if args.check:
        return check(args, out)
    return 0


def check(args: argparse.Namespace, out) -> int:
    """Decode ``--check`` utterances with the export's runtimes and with asr-adapt; print agreement.

    Returns 1 when a runtime that sees stock Whisper input disagrees with asr-adapt on a float32
    export (quantised weights legitimately flip uncertain tokens).
    """
    from asr_adapt.data.audio import load_audio
    from asr_adapt.data.kaldi import load_utterances
    from asr_adapt.export import merge_for_export
    from asr_adapt.export.parity import RUNTIMES, check_parity
    from asr_adapt.langtags import language_of

    utts = [u for u in load_utterances(args.check)
            if u.lang is None or language_of(u.lang) == language_of(args.lang)][: args.check_utts]
    if not utts:
        print(f"--check: no {args.lang} utterances in {args.check}")
        return 1
    wavs = [load_audio(u.audio, offset=u.offset, duration=u.duration) for u in utts]
    merged = merge_for_export(args.model, args.adapters, args.lang).backbone
    status = 0
    for runtime, spec in RUNTIMES.items():
        if spec.fmt != args.fmt:
            continue
        rep = check_parity(merged, out, runtime, wavs, args.lang, [u.utt_id for u in utts], args.check_max_tokens)
        # faster-whisper pads the log-mel where Whisper pads the audio: its count is a figure, not a check.
        print(rep.summary() + ("" if spec.exact else " (reported only: its input differs from Whisper's)"))
        for r in rep.rows:
            if not r["agree"]:
                print(f"  {r['id']}: first token flip at {r['first_flip']}\n    asr-adapt: {r['ours']}\n"
                      f"    {runtime}: {r['theirs']}")
        if spec.exact and (args.quantization or "float32") == "float32" and rep.n_agree < len(rep.rows):
            status = 1
    return status
