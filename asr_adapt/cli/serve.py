"""``asr-adapt serve``: HTTP transcription with one base model and a whole adapter bundle.

Flags are generated from :class:`asr_adapt.serve.config.ServeConfig` (one help string per
field), so the dataclass stays the single description of the settings.
"""

from __future__ import annotations

import argparse
import dataclasses


def _parse_map(text: str) -> dict[str, str]:
    pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
    if any(len(p) != 2 for p in pairs):
        raise argparse.ArgumentTypeError(f"expected locale=adapter[,locale=adapter...], got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def _parse_list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _parse_bool(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1", "yes")


# field type (as annotated) -> argparse type; a registry rather than a chain of checks.
_ARG_TYPES = {"str": str, "str | None": str, "int": int, "float": float, "bool": _parse_bool,
              "dict[str, str]": _parse_map, "tuple[str, ...]": _parse_list}


def register(subparsers) -> None:
    from asr_adapt.serve.config import ServeConfig

    p = subparsers.add_parser(
        "serve",
        help="serve transcription over HTTP (base model + every locale's adapter, dynamic batching)",
        description="POST /transcribe (multipart 'file', optional 'locale'; without a locale the language is "
        "identified and routed to its adapter), GET /locales, GET /health. Binds 127.0.0.1 by default.",
    )
    for f in dataclasses.fields(ServeConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=_ARG_TYPES[str(f.type)], default=default,
                       help=f"{f.metadata['help']} (default: {default})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from asr_adapt.serve import ASREngine, ServeConfig, create_app, serve_forever

    config = ServeConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)})
    engine = ASREngine.from_config(config)
    print(f"asr-adapt serve: {config.model} with adapters for {', '.join(engine.locales) or '(none)'} "
          f"on http://{config.host}:{config.port}", flush=True)
    serve_forever(create_app(engine, config), config.host, config.port)
    return 0
