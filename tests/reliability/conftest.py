"""Fixtures of the reliability suite: one tiny random-weight Whisper per session."""

from __future__ import annotations

import pytest
import torch

from tests.training.helpers import tiny_whisper_dir


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return tiny_whisper_dir(tmp_path_factory.mktemp("reliability-tiny") / "tiny")
