"""Fixtures: a tiny Whisper with a LoRA bundle (el-GR, uk-UA) as a serving engine, and WAV bytes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.export import bundles

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def serve_bundle(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("serve")
    base = bundles.tiny_dir(root / "base")
    return base, bundles.make_bundle(base, root / "lora", "lora", {"rank": 4})


@pytest.fixture(scope="session")
def engine(serve_bundle):
    from asr_adapt.decoding.service import Transcriber
    from asr_adapt.serve import ASREngine

    base, bundle = serve_bundle
    # Few tokens: random weights never say end-of-text on their own.
    return ASREngine(Transcriber.load("whisper", str(base), str(bundle), options={"max_new_tokens": 8}))


@pytest.fixture(scope="session")
def clips() -> list[np.ndarray]:
    return bundles.clips()


def wav_bytes(wav: np.ndarray, sr: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="WAV", subtype="FLOAT")  # float: the server sees the exact samples
    return buf.getvalue()
