"""Streaming first pass: chunk masks, exact chunk-by-chunk equivalence, state round trip, cascade."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from asr_adapt.models.transducer import TransducerBackbone
from asr_adapt.models.transducer.cascade import StreamingState
from asr_adapt.models.transducer.encoder import chunk_attention_mask
from asr_adapt.models.transducer.tokenizer import CharTokenizer


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine the thread
    pool's spin-waiting makes them many times slower; restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny(**overrides):
    torch.manual_seed(0)
    m = TransducerBackbone.from_preset("tiny", CharTokenizer.train(["abc"]), **overrides).eval()
    rng = np.random.default_rng(1)
    m.fit_cmvn([(0.1 * rng.standard_normal(16000)).astype(np.float32)])
    return m


def _feats(m):
    # 1 s and 0.7 s at 40 ms frames; as many encoder frames (so chunk 8 still masks) at 80 ms
    rng = np.random.default_rng(0)
    scale = m.config.subsampling // 4
    wavs = [(0.1 * rng.standard_normal(n * scale)).astype(np.float32) for n in (16000, 11000)]
    return m.features(wavs)


@pytest.fixture(scope="module")
def model():
    return _tiny()


@pytest.fixture(scope="module")
def feats(model):
    return _feats(model)


@pytest.fixture(scope="module", params=[4, 8], ids=["4x", "8x"])
def model_and_feats(request):
    """The tiny model at 40 ms (4x) and at 80 ms (8x: stacked 4x frames) encoder frames."""
    m = _tiny(subsampling=request.param)
    return m, _feats(m)


def _stream(model, feats, lens, chunk, left, piece, state=None, start=0, stop=None):
    state = state or model.init_streaming_state(feats.shape[0], chunk, left)
    stop = feats.shape[1] if stop is None else stop
    ys, yls = [], []
    for s in range(start, stop, piece):
        x = feats[:, s : min(s + piece, stop)]
        xl = (lens - s).clamp(0, x.shape[1])
        y, yl, state = model.streaming_forward(x, xl, state, final=s + piece >= feats.shape[1])
        ys.append(y)
        yls.append(yl)
    return torch.cat(ys, 1), torch.stack(yls).sum(0), state


def test_chunk_attention_mask():
    m = chunk_attention_mask(6, 2, left_chunks=1)
    expected = torch.tensor([
        [1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(m, expected)
    assert chunk_attention_mask(6, 2, -1)[5].all()
    assert chunk_attention_mask(4, -1).all()


def test_subsampling_streams_exactly(model_and_feats):
    model, (x, lens) = model_and_feats
    sub = model.encoder.subsampling
    stride = model.config.subsampling
    with torch.no_grad():
        full, out_lens = sub(x, lens)
        cache, parts = sub.init_cache(2, 80), []
        for s in range(0, x.shape[1], 5):
            y, cache = sub.streaming_forward(x[:, s : s + 5], cache)
            parts.append(y)
            assert 3 <= cache.shape[1] <= stride + 2  # never more than one output frame pending
    assert out_lens.tolist() == (lens // stride).tolist()
    assert full.shape[1] == int(lens.max()) // stride
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)


@pytest.mark.parametrize("chunk,left,piece", [(4, -1, 16), (2, 1, 8), (3, 0, 7), (8, 2, 13), (1, -1, 4)])
def test_streaming_equals_offline_under_the_same_chunk_mask(model_and_feats, chunk, left, piece):
    model, (x, lens) = model_and_feats
    with torch.no_grad():
        full = model.encode(x, lens, chunk, left, second_pass=False)
        y, ylens, _ = _stream(model, x, lens, chunk, left, piece)
        full_ctx = model.encode(x, lens, -1, -1, second_pass=False).first
    assert ylens.tolist() == full.lengths.tolist()
    for b, n in enumerate(full.lengths.tolist()):
        assert (y[b, :n] - full.first[b, :n]).abs().max() < 1e-4
        # the mask matters: the same frames under full attention differ (so this test can fail)
        assert (full_ctx[b, :n] - full.first[b, :n]).abs().max() > 1e-3


def test_first_pass_is_causal_per_chunk_and_second_pass_is_not(model, feats):
    x, lens = feats
    x2 = x.clone()
    x2[:, 60:] += 1.0  # change feature frames from 60 on: encoder frames >= 15 (chunk 4 -> from frame 16 on)
    with torch.no_grad():
        a = model.encode(x, lens, 4)
        b = model.encode(x2, lens, 4)
    assert torch.equal(a.first[:, :12], b.first[:, :12])  # earlier chunks untouched
    assert not torch.allclose(a.first[:, 16:], b.first[:, 16:])
    assert not torch.allclose(a.second[:, :12], b.second[:, :12])  # full context looks ahead


def test_cascade_second_pass_runs_on_first_pass_output(model, feats):
    x, lens = feats
    with torch.no_grad():
        out = model.encode(x, lens, 2, 1)
        again = model.encoder.second_pass(out.first, out.lengths)
    assert out.second.shape == out.first.shape
    assert torch.equal(out.second, again)


def test_state_round_trip_continues_exactly(model, feats):
    x, lens = feats
    chunk, left, piece = 2, 2, 8
    with torch.no_grad():
        y_all, l_all, _ = _stream(model, x, lens, chunk, left, piece)
        y1, l1, st = _stream(model, x, lens, chunk, left, piece, stop=40)
        buf = io.BytesIO()
        torch.save(st.to_dict(), buf)
        buf.seek(0)
        restored = StreamingState.from_dict(torch.load(buf, weights_only=True))
        y2, l2, _ = _stream(model, x, lens, chunk, left, piece, state=restored, start=40)
    assert torch.equal(torch.cat([y1, y2], 1), y_all)
    assert (l1 + l2).tolist() == l_all.tolist()


def test_routed_adapters_stream_exactly(feats):
    """The project's adapters (forward hooks on the blocks, routed per row) keep the
    streaming first pass equal to the offline one, and each row gets its own locale."""
    from asr_adapt import adapters, routing

    torch.manual_seed(0)
    m = TransducerBackbone.from_preset("tiny", CharTokenizer.train(["abc"])).eval()
    adapters.attach_adapters(m, m.injection_points(), "lda", {}, ["el-GR", "ar-EG"])
    with torch.no_grad():
        for name, p in m.named_parameters():
            if adapters.is_adapter_param(name):
                p.add_(0.05 * torch.randn_like(p))  # new adapters are the identity; make them act
    x, lens = feats
    with torch.no_grad():
        base = m.encode(x, lens, 4).first
        with routing.use(["el-GR", "ar-EG"]):
            full = m.encode(x, lens, 4)
            y, _, _ = _stream(m, x, lens, 4, -1, 16)
        with routing.use(["ar-EG", "el-GR"]):
            swapped = m.encode(x, lens, 4).first
    for b, n in enumerate(full.lengths.tolist()):
        assert (y[b, :n] - full.first[b, :n]).abs().max() < 1e-4
        assert (full.first[b, :n] - base[b, :n]).abs().max() > 1e-3
        assert (full.first[b, :n] - swapped[b, :n]).abs().max() > 1e-3
