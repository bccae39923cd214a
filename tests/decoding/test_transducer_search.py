"""Transducer search on a tiny model overfit to three tone-coded utterances."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from asr_adapt.decoding.decoders import transcribe_batch
from asr_adapt.decoding.transducer_search import (
    DECODE_MODES,
    SEARCH_METHODS,
    TransducerDecodingOptions,
    beam_search,
    greedy_search,
    modified_beam_search,
)
from asr_adapt.models.base import Hypothesis
from asr_adapt.models.transducer import TransducerBackbone
from asr_adapt.models.transducer.tokenizer import CharTokenizer
from asr_adapt.routing import Route

# Each character is a 0.2 s tone at its own pitch (space: silence), 50 ms gaps.
TONES = {"a": 400.0, "b": 900.0, "c": 1600.0, " ": None}
TEXTS = ["abc", "cab", "ba"]
SR = 16000


def tone_utterance(text: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = [np.zeros(int(0.1 * SR))]
    for ch in text:
        t = np.arange(int(0.2 * SR)) / SR
        parts.append(0.5 * np.sin(2 * np.pi * TONES[ch] * t) if TONES[ch] else np.zeros(len(t)))
        parts.append(np.zeros(int(0.05 * SR)))
    wav = np.concatenate(parts)
    return (wav + 0.01 * rng.standard_normal(len(wav))).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads (and a busy pool spin-waits)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained():
    """The tiny preset trained (dynamic chunks, both passes) until it memorises TEXTS."""
    torch.manual_seed(0)
    wavs = [tone_utterance(t, i) for i, t in enumerate(TEXTS)]
    model = TransducerBackbone.from_preset("tiny", CharTokenizer.train(TEXTS))
    model.fit_cmvn(wavs)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(300):
        loss = model.compute_loss(wavs, TEXTS, [None] * len(TEXTS))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), wavs


@pytest.mark.parametrize("opts", [
    TransducerDecodingOptions(),
    TransducerDecodingOptions(chunk_ms=0),
    TransducerDecodingOptions(method="modified_beam", beam_size=4),
    TransducerDecodingOptions(method="beam", beam_size=4),
    TransducerDecodingOptions(mode="streaming", chunk_ms=320),
    TransducerDecodingOptions(mode="streaming", chunk_ms=160, left_context_chunks=2),
], ids=["full-greedy", "full-ctx-greedy", "full-modbeam4", "full-beam4", "stream-320ms", "stream-160ms-left2"])
def test_overfit_batch_decodes_to_its_transcripts(trained, opts):
    model, wavs = trained
    hyps = transcribe_batch(model, wavs, ["xx-XX", None, "yy"], opts, route=["xx-XX", None, "yy"])
    assert [h.text for h in hyps] == TEXTS
    for h, wav in zip(hyps, wavs):
        assert isinstance(h, Hypothesis)
        assert model.tokenizer.decode(h.tokens) == h.text
        assert len(h.times) == len(h.tokens)
        assert h.times == sorted(h.times) and 0.0 <= h.times[0] and h.times[-1] <= len(wav) / SR
        assert h.avg_logprob is not None and -1.0 < h.avg_logprob <= 0.0


def test_streaming_emissions_depend_only_on_audio_heard_so_far(trained):
    """Two inputs equal up to 0.35 s: streaming emissions of the chunks that end before
    then must be identical (with 160 ms chunks, encoder frames 0-7 read samples < 0.35 s)."""
    model, wavs = trained
    cut = int(0.35 * SR)
    other = tone_utterance("cab", 1)
    forked = np.concatenate([wavs[0][:cut], other[cut : len(wavs[0])]])
    opts = TransducerDecodingOptions(mode="streaming", chunk_ms=160)
    a, b = transcribe_batch(model, [wavs[0], forked], [None, None], opts, route=None)
    early_a = [(tok, t) for tok, t in zip(a.tokens, a.times) if t < 0.32]
    early_b = [(tok, t) for tok, t in zip(b.tokens, b.times) if t < 0.32]
    assert early_a == early_b
    assert a.tokens != b.tokens  # the inputs diverge later, and so do the outputs
    assert all(round(t / 0.04, 6).is_integer() for t in a.times)  # frame starts, 40 ms apart


def _second_pass(model, wavs) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected second-pass encoder output (B, T, J) under 320 ms first-pass chunks, and lengths."""
    feats, lens = model.features(wavs)
    with torch.no_grad():
        out = model.encode(feats, lens, 8)
        return model.joiner.project_encoder(out.second, "second_pass"), out.lengths


def test_modified_beam_with_beam_1_is_greedy_with_one_symbol_per_frame(trained):
    model, wavs = trained
    enc_p, lengths = _second_pass(model, wavs)
    with torch.no_grad():
        opts = TransducerDecodingOptions(method="modified_beam", beam_size=1, max_symbols_per_frame=1)
        beam = modified_beam_search(model, enc_p, lengths, opts, Route.base(len(lengths)))
        greedy = greedy_search(model, enc_p, lengths, opts, Route.base(len(lengths)))
    for b, g in zip(beam, greedy):
        assert b.tokens == g.tokens and b.times == g.times and b.decisions == g.decisions
        assert abs(b.logprob - g.logprob) < 1e-4


def test_beam_with_beam_1_is_greedy_with_the_same_symbol_cap(trained):
    model, wavs = trained
    enc_p, lengths = _second_pass(model, wavs)
    with torch.no_grad():
        opts = TransducerDecodingOptions(method="beam", beam_size=1, max_symbols_per_frame=3)
        beam = beam_search(model, enc_p, lengths, opts, Route.base(len(lengths)))
        greedy = greedy_search(model, enc_p, lengths, opts, Route.base(len(lengths)))
    for b, g in zip(beam, greedy):
        assert b.tokens == g.tokens and b.times == g.times
        assert abs(b.logprob - g.logprob) < 1e-4


class _TwoPerFrame:
    """A stub transducer whose best path emits "a", "b" and then blank, all at frame 0:
    the joiner's logits depend only on the last token (blank -> a -> b -> blank)."""

    class _Pred:
        context_size, blank_id = 1, 0

        def __call__(self, ctx, need_pad=False):
            return torch.nn.functional.one_hot(ctx, 3).float()  # (N, 1, 3)

        def start_context(self, batch, device=None):
            return torch.zeros(batch, 1, dtype=torch.long)

    class _Joiner:
        table = torch.tensor([[-5.0, 0.0, -5.0], [-5.0, -5.0, 0.0], [0.0, -5.0, -5.0]])

        def project_decoder(self, x):
            return x

        def __call__(self, enc, dec):
            return dec @ self.table  # (H, 3)

    def __init__(self) -> None:
        self.predictor, self.joiner = self._Pred(), self._Joiner()
        self.config = type("C", (), {"frame_s": 0.08})()


def test_beam_emits_several_symbols_in_one_frame_where_modified_beam_cannot():
    """At 80 ms frames and characters, one symbol per frame deletes characters."""
    model, enc_p, lens = _TwoPerFrame(), torch.zeros(1, 1, 3), torch.tensor([1])
    opts = TransducerDecodingOptions(method="beam", beam_size=4, max_symbols_per_frame=3)
    assert beam_search(model, enc_p, lens, opts, Route.base(1))[0].tokens == [1, 2]
    assert greedy_search(model, enc_p, lens, opts, Route.base(1))[0].tokens == [1, 2]
    assert modified_beam_search(model, enc_p, lens, opts, Route.base(1))[0].tokens == [1]


def test_wider_beam_never_scores_below_beam_1(trained):
    model, wavs = trained
    enc_p, lengths = _second_pass(model, wavs)
    with torch.no_grad():
        for search in (modified_beam_search, beam_search):
            one = search(model, enc_p, lengths, TransducerDecodingOptions(beam_size=1), Route.base(len(lengths)))
            four = search(model, enc_p, lengths, TransducerDecodingOptions(beam_size=4), Route.base(len(lengths)))
            assert all(f.logprob >= o.logprob - 1e-6 for f, o in zip(four, one))


def test_streaming_decode_matches_offline_first_pass_greedy(trained):
    """Streaming greedy == greedy over the offline first pass under the same chunk mask."""
    model, wavs = trained
    feats, lens = model.features(wavs)
    opts = TransducerDecodingOptions(mode="streaming", chunk_ms=160, left_context_chunks=1)
    with torch.no_grad():
        out = model.encode(feats, lens, opts.chunk_frames(model.config.frame_ms), opts.left_context_chunks, second_pass=False)
        offline = greedy_search(model, model.joiner.project_encoder(out.first, "first_pass"), out.lengths, opts,
                                Route.base(len(out.lengths)))
    streamed = transcribe_batch(model, wavs, [None] * 3, opts, route=None)
    for s, o in zip(streamed, offline):
        assert s.tokens == o.tokens and s.times == o.times


def test_options_are_validated_and_registered():
    assert {"greedy", "beam", "modified_beam"} <= set(SEARCH_METHODS.names())
    assert {"full", "streaming"} <= set(DECODE_MODES.names())
    opts = TransducerDecodingOptions()
    assert dataclasses.replace(opts, chunk_ms=640).chunk_frames(40) == 16
    assert dataclasses.replace(opts, chunk_ms=0).chunk_frames(40) == -1
    for f in dataclasses.fields(TransducerDecodingOptions):
        assert f.metadata.get("help")
    for bad in (dict(mode="nope"), dict(method="nope"), dict(mode="streaming", method="modified_beam"),
                dict(chunk_ms=100), dict(mode="streaming", chunk_ms=0), dict(beam_size=0),
                dict(left_context_chunks=-2)):
        with pytest.raises((ValueError, KeyError)):
            TransducerDecodingOptions(**bad)


@pytest.mark.parametrize("opts", [
    TransducerDecodingOptions(),
    TransducerDecodingOptions(method="modified_beam", beam_size=3),
    TransducerDecodingOptions(mode="streaming", chunk_ms=160),
], ids=["full-greedy", "full-beam3", "stream-160ms"])
def test_output_adapters_route_per_row_in_every_search(trained, opts):
    """LDA on the encoder passes *and* the output side (prediction network, joiner), made
    non-identity: in a mixed batch
    every row decodes as it does alone, and a row with no adapter decodes as the base."""
    import copy

    from asr_adapt.adapters import attach_adapters

    model, wavs = trained
    base = transcribe_batch(model, wavs, [None] * 3, opts, route=None)
    adapted = copy.deepcopy(model)
    attach_adapters(adapted, adapted.injection_points(), "lda", {"bottleneck": 4}, ["xx-XX", "yy"],
                    ["first_pass", "second_pass", "output"])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lda_" in name and name.endswith("up.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * (3.0 if "joiner" in name or "predictor" in name else 0.3))
    langs = ["xx-XX", None, "yy"]
    batch = transcribe_batch(adapted, wavs, langs, opts, route=langs)
    alone = [transcribe_batch(adapted, [w], [lang], opts, route=[lang])[0] for w, lang in zip(wavs, langs)]
    assert [h.tokens for h in batch] == [h.tokens for h in alone]
    assert [h.avg_logprob for h in batch] == pytest.approx([h.avg_logprob for h in alone], abs=1e-4)
    assert batch[1].tokens == base[1].tokens  # no adapter: the base model's output
    assert batch[1].avg_logprob == pytest.approx(base[1].avg_logprob, abs=1e-6)
    for i in (0, 2):  # the adapters do act on the rows they serve
        assert abs(batch[i].avg_logprob - base[i].avg_logprob) > 1e-5
    if opts.mode == "streaming":  # stream-eval's piece-by-piece path routes the same way
        from asr_adapt.decoding.streaming_transducer import TransducerStreamingConfig, stream_transducer

        for wav, lang, hyp in zip(wavs, langs, batch):
            streamed = stream_transducer(adapted, wav, lang, TransducerStreamingConfig(chunk_ms=opts.chunk_ms))
            assert streamed.tokens == hyp.tokens
