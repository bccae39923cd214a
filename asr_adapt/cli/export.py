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
    return 0
