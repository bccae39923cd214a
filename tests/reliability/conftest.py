"""Fixtures of the reliability suite: one tiny random-weight Whisper per session."""

from __future__ import annotations

import pytest
import soundfile as sf
import torch

from tests.reliability.helpers import FAST, run_measured, tone
from tests.training.helpers import tiny_whisper_dir


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return tiny_whisper_dir(tmp_path_factory.mktemp("reliability-tiny") / "tiny")


@pytest.fixture(scope="session")
def baseline_decode(tmp_path_factory, tiny_model):
    """Peak RSS of an `asr-adapt decode` subprocess on 20 short files: what memory tests compare to."""
    root = tmp_path_factory.mktemp("baseline")
    (root / "in").mkdir()
    for i in range(20):
        sf.write(root / "in" / f"u{i:02d}.wav", tone(0.3), 16000, subtype="PCM_16")
    run = run_measured("decode", root / "in", "-o", root / "out", "--model", tiny_model, "--lang", "en",
                       "--batch-size", "16", *FAST)
    assert run.rc == 0, run.stderr[-2000:]
    return run
