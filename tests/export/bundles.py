"""Tiny random Whisper directories and adapter bundles (shared by the export and serve tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from asr_adapt import adapters as A

LOCALES = ("el-GR", "uk-UA")


def tiny_dir(path: Path, init_std: float = 0.5) -> Path:
    """Save a tiny Whisper (real multilingual tokenizer, Whisper generation config) as a HF dir.

    ``init_std=0.5`` spreads the logits, so greedy choices are not near-ties that float
    rounding in another runtime could flip; the stock ``0.02`` gives a well-conditioned
    network whose logits can be compared at tight tolerances.
    """
    from transformers import WhisperFeatureExtractor

    from asr_adapt.export.hf import whisper_generation_config
    from asr_adapt.models.whisper import (
        WhisperBackbone,
        load_whisper_tokenizer,
        packaged_tokenizer_dir,
        tiny_config,
    )

    torch.manual_seed(0)
    tok = load_whisper_tokenizer(packaged_tokenizer_dir())
    bb = WhisperBackbone.from_config(tiny_config(init_std=init_std), tok)
    bb.hf.generation_config = whisper_generation_config(path, tok, bb.hf.config)
    bb.hf.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    WhisperFeatureExtractor(feature_size=80).save_pretrained(str(path))
    return path


def prefer_token(base: Path, out: Path, token: str, margin: float = 10.0) -> Path:
    """Copy of ``base`` whose decoder ranks ``token`` (e.g. ``"<|en|>"``) first at every step.

    The output projection is tied to the token embeddings: a large final-LayerNorm bias along
    ``token``'s (rescaled) embedding lifts that token's logit above every other one. A runtime
    that does not suppress the token emits it; asr-adapt's mask removes it.
    """
    import shutil

    from transformers import WhisperForConditionalGeneration, WhisperTokenizer

    tok = WhisperTokenizer.from_pretrained(str(base))
    model = WhisperForConditionalGeneration.from_pretrained(str(base))
    emb, norm = model.model.decoder.embed_tokens.weight, model.model.decoder.layer_norm
    with torch.no_grad():
        row = emb[tok.convert_tokens_to_ids(token)]
        # Twice a random row's norm (init_std=0.5, d=64): the token's logit gains 8 * margin, a
        # random token's margin * N(0, 0.5), too little to overtake it.
        row.mul_(8.0 / row.norm())
        norm.bias.add_(margin * row / row.norm())
    model.save_pretrained(str(out))
    for f in base.iterdir():  # tokenizer and feature extractor files
        if not (out / f.name).exists():
            shutil.copy2(f, out / f.name)
    return out


def make_bundle(base: Path, out: Path, adapter: str, conf: dict, locales=LOCALES, seed: int = 0) -> Path:
    """Attach ``adapter`` for ``locales`` with random (non-identity) weights and save it."""
    from asr_adapt.models.whisper import WhisperBackbone

    bb = WhisperBackbone.from_pretrained(str(base))
    A.attach_adapters(bb, bb.injection_points(), adapter, conf, list(locales))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in bb.named_parameters():
            if A.is_adapter_param(n):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    A.save_adapters(bb, out, A.model_fingerprint(bb))
    return out


def clips() -> list[np.ndarray]:
    """Three short 16 kHz clips: a tone, a chirp, noise (different encoder inputs)."""
    rng = np.random.default_rng(0)
    t1, t2 = np.arange(16000) / 16000, np.arange(24000) / 16000
    return [
        (0.3 * np.sin(2 * np.pi * 300 * t1)).astype(np.float32),
        (0.3 * np.sin(2 * np.pi * (200 + 400 * t2) * t2)).astype(np.float32),
        (0.1 * rng.standard_normal(20000)).astype(np.float32),
    ]
