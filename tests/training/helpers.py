"""Tiny Whisper model directories and data dirs for training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asr_adapt.data.kaldi import write_data_dir
from asr_adapt.data.types import Utterance

WORDS = {"el-GR": ["καλη", "μερα", "σπιτι"], "uk-UA": ["добрий", "день", "хата"], "en-US": ["good", "day", "house"]}


def tiny_whisper_dir(path: Path) -> Path:
    """Save a random-weight tiny Whisper (real multilingual tokenizer) as a HF directory."""
    import torch

    from asr_adapt.models.whisper import (
        WhisperBackbone,
        load_whisper_tokenizer,
        packaged_tokenizer_dir,
        tiny_config,
    )

    if (path / "config.json").exists():
        return path
    torch.manual_seed(0)
    tok = load_whisper_tokenizer(packaged_tokenizer_dir())
    bb = WhisperBackbone.from_config(tiny_config(), tok)
    bb.hf.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def make_data(root: Path, locales=("el-GR", "uk-UA"), per_locale: int = 4, seed: int = 0, text: bool = True) -> Path:
    """A Kaldi data dir of short tone clips whose pitch depends on the words (learnable)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    utts = []
    for li, loc in enumerate(locales):
        for i in range(per_locale):
            words = [WORDS[loc][(i + k) % 3] for k in range(2)]
            dur = 0.8 + 0.1 * (i % 3)
            t = np.arange(int(dur * 16000)) / 16000
            f0 = 200 + 150 * li + 40 * (i % 3)
            wav = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.01 * rng.standard_normal(len(t))
            spk = f"{loc}-s{i % 2}"
            uid = f"{spk}-u{i:03d}"
            p = root / "wav" / f"{uid}.wav"
            p.parent.mkdir(parents=True, exist_ok=True)
            sf.write(p, wav.astype(np.float32), 16000, subtype="PCM_16")
            utts.append(Utterance(uid, str(p), " ".join(words) if text else None, loc, spk, round(dur, 3)))
    write_data_dir(root, utts)
    return root


def tiny_foundation(root: Path, locales=("en-US", "el-GR")) -> tuple[Path, Path, Path]:
    """(train, dev, init_dir): tone-clip data dirs and a `tiny` transducer foundation initialised
    on them (character tokenizer from the train text, CMVN from the first locale's audio)."""
    from asr_adapt.data.kaldi import load_utterances
    from asr_adapt.models.transducer import train_tokenizer
    from asr_adapt.training import foundation as fd

    train = make_data(root / "train", locales=locales, per_locale=4)
    dev = make_data(root / "dev", locales=locales, per_locale=2, seed=1)
    tok = train_tokenizer("char", [u.text for u in load_utterances(train)])
    tok.save(root / "tok")
    init_dir = root / "init"
    fd.init_foundation(init_dir, root / "tok", train, fd.FoundationInitConfig(preset="tiny", cmvn_locales=(locales[0],)))
    return train, dev, init_dir
