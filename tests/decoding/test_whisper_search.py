"""Lean greedy/beam search vs Hugging Face, routing alignment, repetition guard, chunking."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transformers.generation import GenerationMixin

from asr_adapt import routing
from asr_adapt.decoding.decoders import transcribe_batch
from asr_adapt.decoding.options import DecodingOptions
from asr_adapt.decoding.repetition import compression_ratio, cut_loop, tail_loop
from asr_adapt.decoding.whisper_decode import detect_language
from asr_adapt.decoding.whisper_search import COMPACT_AT, SEARCHES, run_search

RAW = DecodingOptions(
    repetition_guard=False,
    compression_ratio_threshold=None,
    fallback="none",
    suppress_blank=False,
    suppress_tokens=(),
    suppress_special=False,
)
LANGS = ["en", "de", "fr", "en", "el"]


def _wavs(seconds, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(int(16000 * s)) * 0.1).astype(np.float32) for s in seconds]


def _encode(bb, n=5, context="full"):
    feats = bb.features(_wavs([2.0] * n), context, min_window_s=2.0)
    prompts = torch.tensor([bb.prompt(lang) for lang in LANGS[:n]])
    return feats, bb.encode(feats), prompts


def test_greedy_equals_hf_generate(tiny):
    feats, enc, prompts = _encode(tiny)
    ours = run_search(tiny, enc, prompts, [15] * 5, RAW, routing.Route.base(enc.shape[0]))
    ref = GenerationMixin.generate(
        tiny.hf, input_features=feats, decoder_input_ids=prompts, max_new_tokens=15, do_sample=False, num_beams=1
    )[:, prompts.shape[1] :]
    eot = tiny.tokens.eot
    expected = [[t for t in row if t != eot] for row in ref.tolist()]
    assert [r.tokens for r in ours] == expected
    assert len({len(t) for t in expected}) > 2  # rows really finished at different steps


def test_beam_one_equals_greedy(tiny):
    _, enc, prompts = _encode(tiny)
    greedy = run_search(tiny, enc, prompts, [15] * 5, RAW, routing.Route.base(enc.shape[0]))
    beam1 = run_search(tiny, enc, prompts, [15] * 5, dataclasses.replace(RAW, search="beam"), routing.Route.base(enc.shape[0]))
    assert [r.tokens for r in beam1] == [r.tokens for r in greedy]
    for a, b in zip(beam1, greedy):
        assert a.sum_logprob == pytest.approx(b.sum_logprob, abs=1e-4)


def test_beam_search_scores_at_least_greedy(tiny):
    _, enc, prompts = _encode(tiny)
    greedy = run_search(tiny, enc, prompts, [15] * 5, RAW, routing.Route.base(enc.shape[0]))
    beam = run_search(tiny, enc, prompts, [15] * 5, dataclasses.replace(RAW, beam_size=4), routing.Route.base(enc.shape[0]))
    assert "beam" in SEARCHES and "greedy" in SEARCHES
    for g, b in zip(greedy, beam):
        if not g.truncated and not b.truncated:
            assert b.avg_logprob >= g.avg_logprob - 1e-4


@pytest.mark.parametrize("beam_size", [1, 3])
def test_routing_stays_aligned_when_rows_finish(tiny, beam_size):
    """An adapter-like hook checks every layer's batch against the routed rows."""
    seen = []

    def check(module, inputs, out):
        x = out[0] if isinstance(out, tuple) else out
        groups = routing.groups(x.shape[0])  # raises if rows and routing disagree
        seen.append(sorted(k for k in groups))

    hooks = [tiny.decoder.layers[0].register_forward_hook(check), tiny.encoder.layers[0].register_forward_hook(check)]
    try:
        wavs = _wavs([2.0, 1.0, 3.0, 2.5, 1.5])
        locales = ["en-GB", "de-DE", "el-GR", "en-US", "fr-FR"]
        opts = dataclasses.replace(RAW, beam_size=beam_size, max_new_tokens=12)
        hyps = transcribe_batch(tiny, wavs, locales, opts, route=locales)
        assert routing.current() is None  # the route travels with the batch: nothing ambient is left
    finally:
        for h in hooks:
            h.remove()
    assert len(hyps) == 5 and [h.lang for h in hyps] == locales
    assert len(seen) > 5 and len(min(seen, key=len)) < 5  # rows were pruned along the way


def test_pruned_rows_route_to_their_own_locale(tiny):
    """After pruning, the routed locale of each surviving row is the locale of its clip."""
    wavs = _wavs([2.0] * 5)
    locales = [f"l{i}" for i in range(5)]
    langs = ["en", "de", "fr", "en", "el"]
    feats = tiny.features(wavs, "full")
    trace = []

    def record(module, inputs, out):
        trace.append((routing.current(), out.shape[0]))

    h = tiny.decoder.layers[1].register_forward_hook(record)
    try:
        with routing.use(locales):
            enc = tiny.encode(feats)
        prompts = torch.tensor([tiny.prompt(lang) for lang in langs])
        res = run_search(tiny, enc, prompts, [15] * 5, RAW, routing.Route(locales))
    finally:
        h.remove()
    lengths = [len(r.tokens) for r in res]
    # At generated step s (s=0 is the prompt pass) the rows still running are those with > s-1 tokens.
    # Finished rows ride along (ignored) until at most COMPACT_AT of the batch is still running.
    dropped = False
    for step, (rows, batch) in enumerate(trace):
        running = tuple(loc for loc, n in zip(locales, lengths) if n >= step) if step else tuple(locales)
        assert batch == len(rows) and set(running) <= set(rows)
        assert list(rows) == [loc for loc in locales if loc in rows]  # each position keeps its clip's locale
        assert rows == running or len(running) > COMPACT_AT * len(rows)
        dropped |= len(rows) < len(locales)
    assert dropped


def test_repetition_guard_stops_a_loop(plain):
    """The plain tiny model repeats one token forever; the guard stops it early."""
    _, enc, prompts = _encode(plain, n=2)
    looping = run_search(plain, enc, prompts, [60, 60], RAW, routing.Route.base(enc.shape[0]))
    assert all(r.truncated and len(r.tokens) == 60 for r in looping)
    guarded = run_search(plain, enc, prompts, [60, 60], dataclasses.replace(RAW, repetition_guard=True), routing.Route.base(enc.shape[0]))
    assert all(r.looped and not r.truncated and len(r.tokens) < 60 for r in guarded)
    assert all(tail_loop(r.tokens, 16, 4, 10) == 0 for r in guarded)


def test_fallback_redecodes_loops_at_full_context(plain):
    wavs = _wavs([2.0, 3.0])
    opts = dataclasses.replace(RAW, repetition_guard=True, fallback="full_context", context="dynamic", min_window_s=2.0)
    hyps = transcribe_batch(plain, wavs, ["en", "de"], opts, route=None)
    assert all(h.fallback and h.looped for h in hyps)
    none = transcribe_batch(plain, wavs, ["en", "de"], dataclasses.replace(opts, fallback="none"), route=None)
    assert not any(h.fallback for h in none)


def test_tail_loop_rules():
    assert tail_loop([1, 2, 3] + [7] * 10, 16, 4, 10) == 1
    assert tail_loop([1, 2, 3] + [7] * 9, 16, 4, 10) == 0  # 9 single-token repeats < min span
    assert tail_loop([9] + [4, 5] * 5, 16, 4, 10) == 2
    assert tail_loop([5, 6, 7, 8] * 3, 16, 4, 10) == 0  # only 3 repeats
    assert cut_loop([1, 2] + [4, 5] * 5, 2) == [1, 2, 4, 5]
    assert compression_ratio("hello " * 40) > 2.4 > compression_ratio("the quick brown fox jumps over the lazy dog")


def test_language_detection_restricted_to_language_tokens(tiny):
    _, enc, _ = _encode(tiny, n=3)
    codes = detect_language(tiny, enc)
    assert len(codes) == 3 and all(c in tiny.tokens.lang_to_id for c in codes)
    hyps = transcribe_batch(tiny, _wavs([2.0, 2.0, 2.0]), [None, "de-DE", None], dataclasses.replace(RAW, max_new_tokens=5), route=None)
    assert hyps[1].lang == "de-DE"
    assert hyps[0].lang in tiny.tokens.lang_to_id and hyps[2].lang in tiny.tokens.lang_to_id


def test_long_audio_is_chunked_and_joined(tiny):
    wavs = _wavs([65.0, 2.0], seed=3)
    opts = dataclasses.replace(RAW, max_new_tokens=6, chunk_s=30.0)
    seen = []
    h = tiny.encoder.layers[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    try:
        hyps = transcribe_batch(tiny, wavs, ["en", "de"], opts, route=["en-GB", "de-DE"])
    finally:
        h.remove()
    assert seen[0] == 4  # three pieces of the long clip + the short clip, encoded together
    segs = hyps[0].segments
    assert len(segs) == 3 and segs[0][0] == 0.0 and segs[-1][1] == pytest.approx(65.0)
    assert all(e - s <= 30.0 for s, e, _ in segs)
    assert hyps[0].text == " ".join(t for _, _, t in segs if t)
    assert len(hyps[1].segments) == 1


def test_options_validation_and_replace():
    o = DecodingOptions()
    assert o.method == "greedy" and dataclasses.replace(o, beam_size=5).method == "beam"
    assert DecodingOptions(language="auto").language is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.beam_size = 3
    for bad in (dict(beam_size=0), dict(context="half"), dict(task="x"), dict(min_window_s=40)):
        with pytest.raises(ValueError):
            DecodingOptions(**bad)
    assert o.token_cap(2.0, 4, 448) == 56 and o.token_cap(100.0, 4, 448) == 224
