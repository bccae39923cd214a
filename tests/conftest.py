"""Shared fixtures: tiny audio files made by the test itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


@pytest.fixture
def make_wav(tmp_path: Path):
    """``make_wav(name, seconds=1.0, sr=16000, channels=1, freq=440.0) -> Path``: a 16-bit sine WAV.

    Channel ``c`` has amplitude ``0.5 / (c + 1)``, so a downmix is distinguishable from any
    single channel.
    """

    def make(name: str, seconds: float = 1.0, sr: int = 16000, channels: int = 1, freq: float = 440.0) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(round(seconds * sr))) / sr
        tone = np.sin(2 * np.pi * freq * t)
        data = np.stack([tone * 0.5 / (c + 1) for c in range(channels)], axis=1)
        sf.write(path, data, sr, subtype="PCM_16")
        return path

    return make
