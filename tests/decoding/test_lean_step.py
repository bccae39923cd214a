"""The lean decoder step (static KV cache, SDPA, layers called directly) computes what Hugging
Face's decoder computes: logits step by step, searches token for token, adapters and their
routing guards included; fused q|k|v and bfloat16 cross-attention in the reduced types."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from asr_adapt import routing
from asr_adapt.adapters import AdapterError, attach_adapters, is_adapter_param, merge_locale
from asr_adapt.decoding import whisper_search
from asr_adapt.decoding.options import DecodingOptions
from asr_adapt.decoding.whisper_search import run_search
from asr_adapt.models import whisper_step
from asr_adapt.models.whisper import WhisperBackbone, tiny_config
from asr_adapt.models.whisper_step import StaticKV, search_cache

RAW = DecodingOptions(repetition_guard=False, compression_ratio_threshold=None, fallback="none",
                      suppress_blank=False, suppress_tokens=(), suppress_special=False)
LANGS = ["en", "de", "fr", "en"]


def _model(tokenizer, seed: int = 0, **conf) -> WhisperBackbone:
    torch.manual_seed(seed)
    return WhisperBackbone.from_config(tiny_config(**conf), tokenizer)


def _enc(bb: WhisperBackbone, n: int = 4, route=None):
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(n, bb.config.num_mel_bins, 200, generator=g)
    with torch.no_grad(), routing.use(route or routing.Route.base(n)):
        enc = bb.encode(feats)
    return enc, torch.tensor([bb.prompt(lang) for lang in LANGS[:n]])


def _steps(bb, enc, prompts, cache, route, n_steps: int = 5) -> list[torch.Tensor]:
    """Logits of the prompt call and of ``n_steps`` fixed next tokens (every row the same ids)."""
    out = []
    with torch.no_grad(), routing.use(route):
        out.append(bb.decoder_logits(prompts, enc, cache))
        for t in range(n_steps):
            ids = torch.full((enc.shape[0], 1), 1000 + 17 * t, dtype=torch.long)
            out.append(bb.decoder_logits(ids, enc, cache))
    return out


def _randomise(model) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if is_adapter_param(n):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def test_step_logits_equal_hugging_face_step_by_step(tokenizer):
    bb = _model(tokenizer, init_std=0.02)
    enc, prompts = _enc(bb)
    route = routing.Route.base(4)
    cache = search_cache(bb, 4, 10)
    assert isinstance(cache, StaticKV)
    lean = _steps(bb, enc, prompts, cache, route)
    ref = _steps(bb, enc, prompts, bb.new_cache(), route)
    for a, b in zip(lean, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert cache.length == 4 + 5
    with pytest.raises(ValueError, match="holds 10 positions"):
        bb.decoder_logits(torch.ones(4, 2, dtype=torch.long), enc, cache)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_search_with_the_static_cache_equals_the_hugging_face_cache(tiny, monkeypatch, beam_size):
    """Greedy and beam search: the same tokens and scores, rows finishing at different steps
    (greedy keeps finished rows until half the batch is done; beams reorder the cache)."""
    enc, prompts = _enc(tiny, 4)
    opts = dataclasses.replace(RAW, beam_size=beam_size)
    lean = run_search(tiny, enc, prompts, [12] * 4, opts, routing.Route.base(4))
    monkeypatch.setattr(whisper_search, "search_cache", lambda bb, n, max_len: bb.new_cache())
    ref = run_search(tiny, enc, prompts, [12] * 4, opts, routing.Route.base(4))
    assert [r.tokens for r in lean] == [r.tokens for r in ref]
    assert len({len(r.tokens) for r in ref}) > 1
    for a, b in zip(lean, ref):
        assert a.sum_logprob == pytest.approx(b.sum_logprob, abs=1e-3)


@pytest.mark.parametrize("adapter,conf", [("lda", {"bottleneck": 8}), ("lora", {"rank": 4})])
def test_adapters_route_per_row_in_the_lean_step(tokenizer, adapter, conf):
    """LDA hooks the decoder layers (run by hand in the lean step), LoRA the linears (called as
    modules): routed rows get their adapter, unrouted rows equal the base, as in HF's path."""
    bb = _model(tokenizer, init_std=0.02)
    attach_adapters(bb, bb.injection_points(), adapter, conf, ["el-GR", "de-DE"])
    _randomise(bb)
    route = routing.Route(["el-GR", None, "de-DE", "el-GR"])
    enc, prompts = _enc(bb, route=route)
    lean = _steps(bb, enc, prompts, search_cache(bb, 4, 10), route)
    ref = _steps(bb, enc, prompts, bb.new_cache(), route)
    base = _steps(bb, enc, prompts, search_cache(bb, 4, 10), routing.Route.base(4))
    for a, b, c in zip(lean, ref, base):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert torch.equal(a[1], c[1]) and not torch.allclose(a[0], c[0])


def test_merged_guard_still_refuses_other_locales_in_the_lean_step(tokenizer):
    bb = _model(tokenizer, init_std=0.02)
    attach_adapters(bb, bb.injection_points(), "lora", {"rank": 4}, ["el-GR", "de-DE"])
    _randomise(bb)
    merge_locale(bb, "el-GR")
    enc, prompts = _enc(bb, route=routing.Route(["el-GR"] * 4))
    _steps(bb, enc, prompts, search_cache(bb, 4, 10), routing.Route(["el-GR"] * 4))
    with pytest.raises(AdapterError, match="merged for 'el-GR'"):
        _steps(bb, enc, prompts, search_cache(bb, 4, 10), routing.Route(["el-GR", "de-DE", "el-GR", None]))


def test_hooks_the_lean_step_cannot_run_fall_back_to_hugging_face(tokenizer):
    bb = _model(tokenizer)
    assert isinstance(search_cache(bb, 2, 8), StaticKV)
    h = bb.decoder.layers[0].register_forward_hook(lambda m, a, k, out: out, with_kwargs=True)
    try:
        assert not isinstance(search_cache(bb, 2, 8), StaticKV)
    finally:
        h.remove()
    h = bb.decoder.register_forward_hook(lambda m, a, out: out)
    try:
        assert not whisper_step.supported(bb)
    finally:
        h.remove()


def test_fused_qkv_equals_the_three_projections_and_steps_aside_for_hooks(tokenizer):
    bb = _model(tokenizer, init_std=0.02)
    q = copy.deepcopy(bb)
    q.set_compute_type("int8_decoder")
    assert sorted(q.fused_qkv) == list(range(len(q.decoder.layers)))
    enc, prompts = _enc(q)
    route = routing.Route.base(4)
    fused = _steps(q, enc, prompts, search_cache(q, 4, 10), route)
    calls = []
    h = q.decoder.layers[1].self_attn.k_proj.register_forward_hook(lambda m, a, out: calls.append(1))
    try:
        with_hook = _steps(q, enc, prompts, search_cache(q, 4, 10), route)
    finally:
        h.remove()
    assert len(calls) == 6  # the hooked layer ran its own k projection at every call
    q.fused_qkv = {}
    separate = _steps(q, enc, prompts, search_cache(q, 4, 10), route)
    for a, b, c in zip(fused, separate, with_hook):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(c, b, rtol=1e-5, atol=1e-5)


def test_bf16_types_attend_over_bf16_cross_keys(tokenizer):
    bb = _model(tokenizer, init_std=0.02)
    ref_enc, prompts = _enc(bb)
    ref = _steps(bb, ref_enc, prompts, bb.new_cache(), routing.Route.base(4))
    q = copy.deepcopy(bb)
    q.set_compute_type("bf16_encoder_int8_decoder")
    enc, _ = _enc(q)
    cache = search_cache(q, 4, 10)
    got = _steps(q, enc, prompts, cache, routing.Route.base(4))
    assert enc.dtype == torch.float32 and cache.cross_k[0].dtype == torch.bfloat16
    assert cache.self_k[0].dtype == torch.float32
    for a, b in zip(got, ref):
        assert ((a - b).norm() / b.norm()).item() < 5e-2
    f32 = search_cache(bb, 4, 10)
    _steps(bb, ref_enc, prompts, f32, routing.Route.base(4))
    assert f32.cross_k[0].dtype == torch.float32


def test_compaction_keeps_rows_and_their_cache_together(tokenizer):
    bb = _model(tokenizer, init_std=0.02)
    enc, prompts = _enc(bb)
    full = search_cache(bb, 4, 10)
    with torch.no_grad():
        bb.decoder_logits(prompts, enc, full)
        full.batch_select_indices(torch.tensor([2, 0]))
        got = bb.decoder_logits(torch.tensor([[1000], [1001]]), None, full)
        alone = search_cache(bb, 2, 10)
        bb.decoder_logits(prompts[[2, 0]], enc[[2, 0]], alone)
        want = bb.decoder_logits(torch.tensor([[1000], [1001]]), None, alone)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert np.isfinite(got.numpy()).all()
