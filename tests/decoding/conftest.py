"""A tiny random Whisper whose rows end at different steps (for pruning and equality tests)."""

from __future__ import annotations

import pytest
import torch

from asr_adapt.models.whisper import (
    WhisperBackbone,
    load_whisper_tokenizer,
    packaged_tokenizer_dir,
    tiny_config,
)


@pytest.fixture(scope="session")
def tokenizer():
    return load_whisper_tokenizer(packaged_tokenizer_dir())


@pytest.fixture(scope="session")
def tiny(tokenizer):
    """Large-init weights give varied tokens; a deterministic hook on the output projection
    makes end-of-text likely whenever a hidden unit is high, so rows finish at different steps
    (the hook is part of the model, so Hugging Face's ``generate`` sees the same model)."""
    torch.manual_seed(0)
    bb = WhisperBackbone.from_config(tiny_config(init_std=0.5), tokenizer)
    eot = bb.tokens.eot

    def eot_bias(module, inputs, out):
        out = out.clone()
        out[..., eot] += 40.0 * (inputs[0][..., 0] > 1.0).float()
        return out

    bb.proj_out.register_forward_hook(eot_bias)
    return bb


@pytest.fixture(scope="session")
def plain(tokenizer):
    torch.manual_seed(1)
    return WhisperBackbone.from_config(tiny_config(), tokenizer)
