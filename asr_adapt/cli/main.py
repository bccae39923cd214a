"""``asr-adapt`` entry point.

Each subcommand lives in its own module under :mod:`asr_adapt.cli` and exposes
``register(subparsers)`` which adds its parser and sets ``func`` (called with the parsed
args, returns an exit code). Modules are listed in :data:`COMMAND_MODULES`; adding a
command means adding a module and one line here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMAND_MODULES = [
    "asr_adapt.cli.data",
    "asr_adapt.cli.prepare",
    "asr_adapt.cli.synth",
    "asr_adapt.cli.import_ct2",
    "asr_adapt.cli.decode",
    "asr_adapt.cli.score",
    "asr_adapt.cli.report",
    "asr_adapt.cli.adapters",
    "asr_adapt.cli.export",
    "asr_adapt.cli.train",
    "asr_adapt.cli.pseudo_label",
    "asr_adapt.cli.merge",
    "asr_adapt.cli.stream_eval",
    "asr_adapt.cli.tokenizer",
    "asr_adapt.cli.lm",
    "asr_adapt.cli.init_model",
    "asr_adapt.cli.serve",
    "asr_adapt.cli.stream",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asr-adapt",
        description="Adapt pretrained speech recognisers (Whisper, streaming Conformer-transducers) "
        "to tail languages and new locales with per-locale adapters.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # command not built yet in this checkout
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        # A problem the user fixes (a path, a permission, a lock held by another run, adapters
        # for another base model) is one line on stderr; `-v` shows the traceback.
        if not _is_user_error(e) or "-v" in argv or "--verbose" in argv:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


def _dispatch(argv: list[str]) -> int:
    # `train` hands its arguments to LightningCLI untouched.
    if argv[:1] == ["train"]:
        from asr_adapt.cli.train import run_train

        return run_train(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


def _is_user_error(e: BaseException) -> bool:
    from asr_adapt.fileio import LockError

    kinds: list[type] = [OSError, LockError]
    adapters = sys.modules.get("asr_adapt.adapters.registry")  # loaded whenever adapters were used
    if adapters is not None:
        kinds.append(adapters.AdapterError)
    return isinstance(e, tuple(kinds))


if __name__ == "__main__":
    sys.exit(main())
