"""Fixtures: tiny random Whisper directories with LoRA, S2-LoRA and LDA adapter bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.export import bundles


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return bundles.tiny_dir(tmp_path_factory.mktemp("tiny") / "whisper-tiny-random")


@pytest.fixture(scope="session")
def smooth_base(tmp_path_factory) -> Path:
    return bundles.tiny_dir(tmp_path_factory.mktemp("tiny") / "whisper-tiny-smooth", init_std=0.02)


@pytest.fixture(scope="session")
def smooth_lora_bundle(smooth_base, tmp_path_factory) -> Path:
    return bundles.make_bundle(smooth_base, tmp_path_factory.mktemp("ad") / "lora", "lora", {"rank": 4})


@pytest.fixture(scope="session")
def smooth_s2lora_bundle(smooth_base, tmp_path_factory) -> Path:
    # Only "el" (a language, no region): exporting el-GR must fall back to it.
    return bundles.make_bundle(smooth_base, tmp_path_factory.mktemp("ad") / "s2lora", "s2lora", {"rank": 4}, locales=("el",))


@pytest.fixture(scope="session")
def lora_bundle(tiny_base, tmp_path_factory) -> Path:
    return bundles.make_bundle(tiny_base, tmp_path_factory.mktemp("ad") / "lora", "lora", {"rank": 4})


@pytest.fixture(scope="session")
def chatty_base(tiny_base, tmp_path_factory) -> Path:
    # Its decoder ranks <|en|> first at every step: only asr-adapt's suppression list stops it.
    return bundles.prefer_token(tiny_base, tmp_path_factory.mktemp("tiny") / "whisper-tiny-chatty", "<|en|>")


@pytest.fixture(scope="session")
def chatty_lora_bundle(chatty_base, tmp_path_factory) -> Path:
    return bundles.make_bundle(chatty_base, tmp_path_factory.mktemp("ad") / "lora", "lora", {"rank": 4})


@pytest.fixture(scope="session")
def lda_bundle(tiny_base, tmp_path_factory) -> Path:
    return bundles.make_bundle(tiny_base, tmp_path_factory.mktemp("ad") / "lda", "lda", {"bottleneck": 8})


@pytest.fixture(scope="session")
def clips() -> list[np.ndarray]:
    return bundles.clips()
