"""Transducer foundations shipped inside the package, resolvable by name.

No public multilingual streaming transducer exists to download, so the project trains its
own foundation with ``egs/synth_tail/asr2`` (stage 10) and ships it in
``asr_adapt/models/transducer/pretrained/<name>/``: ``config.json``, ``model.safetensors``,
the tokenizer files and ``foundation.json`` (the command, data seed, commit and dev/test
numbers that made it). ``--model <name>`` then works wherever a model directory does, the
way ``whisper-base`` resolves for Whisper.
"""

from __future__ import annotations

import os
from pathlib import Path

from asr_adapt.registry import Registry

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"

#: name -> directory of a shipped model
SHIPPED: Registry[Path] = Registry("shipped transducer")
SHIPPED.register("transducer-synth-compact", PRETRAINED_DIR / "transducer-synth-compact")


def resolve_transducer(name_or_dir: str | os.PathLike) -> Path:
    """A model directory for ``name_or_dir``: an existing path as is, else a shipped name."""
    path = Path(name_or_dir)
    if path.exists() or str(name_or_dir) not in SHIPPED:
        return path
    shipped = SHIPPED.get(str(name_or_dir))
    if not (shipped / "config.json").exists():
        raise FileNotFoundError(
            f"{name_or_dir}: the shipped model directory {shipped} is missing its files; reinstall the "
            "package or retrain it with `egs/synth_tail/asr2/run.sh --pretrain true`")
    return shipped
