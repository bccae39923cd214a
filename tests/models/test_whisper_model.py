"""WhisperBackbone on a tiny random model: features, dynamic encoder, loss, injection points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr_adapt.models.base import BACKBONES
from asr_adapt.models.whisper import (
    WhisperBackbone,
    load_whisper_tokenizer,
    packaged_tokenizer_dir,
    tiny_config,
)
from asr_adapt.models.whisper_features import LogMel, split_long_audio, window_samples


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return WhisperBackbone.from_config(tiny_config(), load_whisper_tokenizer(packaged_tokenizer_dir()))


def _wavs(seconds, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(int(16000 * s)) * 0.1).astype(np.float32) for s in seconds]


def test_registered():
    assert BACKBONES.get("whisper") is WhisperBackbone
    assert WhisperBackbone.family == "whisper"


def test_logmel_matches_hf_feature_extractor():
    from transformers import WhisperFeatureExtractor

    wavs = _wavs([3.3, 7.0])
    ref = WhisperFeatureExtractor()(wavs, sampling_rate=16000, return_tensors="np").input_features
    ours = LogMel(80)(wavs, window_samples(0, "full")).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    # A short window gives exactly the first frames of the 30 s features.
    short = LogMel(80)(wavs, 16000 * 8).numpy()
    assert short.shape == (2, 80, 800)
    np.testing.assert_allclose(short, ours[..., :800], atol=1e-6)


def test_window_policy():
    assert window_samples(16000 * 3, "full") == 480000
    assert window_samples(16000 * 3, "dynamic", min_window_s=10) == 160000
    assert window_samples(int(16000 * 12.2), "dynamic", min_window_s=10) == 16000 * 13
    assert window_samples(16000 * 40, "dynamic") == 480000
    with pytest.raises(ValueError):
        window_samples(1, "short")


def test_full_context_encoder_equals_hf(backbone):
    feats = backbone.features(_wavs([2.0, 4.0]), "full")
    ref = backbone.hf.model.encoder(feats).last_hidden_state
    torch.testing.assert_close(backbone.encode(feats), ref, rtol=0, atol=1e-6)


def test_sliced_encoder_shape_and_prefix_positions(backbone):
    feats = backbone.features(_wavs([2.0, 3.5]), "dynamic", min_window_s=1.0)
    assert feats.shape == (2, 80, 400)
    out = backbone.encode(feats)
    assert out.shape == (2, 200, backbone.config.d_model)
    with pytest.raises(ValueError):
        backbone.encode(torch.zeros(1, 80, 3002))


def test_loss_finite_and_prompt_masked(backbone):
    wavs = _wavs([1.5, 2.5])
    loss = backbone.compute_loss(wavs, ["hello world", "guten tag"], ["en", "de-DE"])
    assert torch.isfinite(loss) and loss.item() > 0
    inputs, labels = backbone.teacher_forcing(["hello", "guten tag"], ["en", "de"])
    text = backbone.tokenizer(" hello", add_special_tokens=False).input_ids
    prompt = backbone.prompt("en")
    assert inputs[0, :4].tolist() == prompt
    # Targets: nothing for the first 3 prompt positions, then the text and end-of-text.
    assert labels[0, :3].tolist() == [-100] * 3
    assert labels[0, 3 : 3 + len(text) + 1].tolist() == text + [backbone.tokens.eot]
    assert (labels[0, 3 + len(text) + 1 :] == -100).all()  # padding of the shorter row
    assert not set(prompt) & set(labels[:, :3].flatten().tolist())
    with pytest.raises(ValueError, match="no language token"):
        backbone.compute_loss(wavs[:1], ["x"], ["qq"])


def test_loss_gradients_reach_unfrozen_params(backbone):
    layer = backbone.encoder.layers[0].fc1
    layer.weight.requires_grad_(True)
    try:
        backbone.compute_loss(_wavs([1.0]), ["hi"], ["en"]).backward()
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    finally:
        layer.weight.requires_grad_(False)
        layer.weight.grad = None


def test_injection_points_resolve(backbone):
    points = backbone.injection_points()
    names = dict(backbone.named_modules())
    assert len(points.blocks["encoder"]) == 2 and len(points.blocks["decoder"]) == 2
    for group in points.blocks.values():
        assert all(n in names for n in group)
    for group, linears in points.linears.items():
        assert linears, group
        assert all(isinstance(names[n], torch.nn.Linear) for n in linears)
    assert len(points.linears["decoder.cross_attn"]) == 8
    assert isinstance(names[backbone.feature_module()], torch.nn.Conv1d)


def test_split_long_audio_cuts_at_silence():
    rng = np.random.default_rng(0)
    wav = (rng.standard_normal(16000 * 70) * 0.1).astype(np.float32)
    wav[16000 * 27 : 16000 * 27 + 3200] = 0.0  # a 200 ms pause inside the search zone
    pieces = split_long_audio(wav, max_s=30, search_s=5)
    assert pieces[0][0] == 0 and pieces[-1][1] == len(wav)
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    assert all(e - s <= 16000 * 30 for s, e in pieces)
    assert 16000 * 27 <= pieces[0][1] <= 16000 * 27 + 3200
