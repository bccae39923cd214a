"""Routing travels with the batch: mixed-locale batches decode every row as that row alone.

For every adapter type (non-identity weights, so a misrouted row changes its output), with
greedy and beam search and with rows whose language is identified, a batch decoded through
the decode service gives each row exactly what decoding that row alone gives. The transducer
side (offline greedy/beam, streaming) is in test_transducer_search.py
(test_output_adapters_route_per_row_in_every_search) and parametrised over adapter types below.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from asr_adapt import routing
from asr_adapt.decoding.service import Transcriber
from asr_adapt.routing import Route
from tests.export import bundles

torch.set_num_threads(1)

ADAPTERS = {"lda": {"bottleneck": 8}, "lora": {"rank": 4}, "s2lora": {"rank": 4}}


def _wavs() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    base = bundles.clips()
    # Different lengths, so sorting by duration reorders the rows of the batch.
    return [base[0], base[1], base[2], (0.2 * rng.standard_normal(12000)).astype(np.float32), base[1][:18000]]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return bundles.tiny_dir(tmp_path_factory.mktemp("route") / "base")


def _slow_unless(keep: bool):
    """Default suite: one case per adapter type and search; the full cross product in `make test-slow`."""
    return () if keep else (pytest.mark.slow,)


@pytest.mark.parametrize("adapter,beam_size", [
    pytest.param(a, b, marks=_slow_unless(b == 3 or a == "lora")) for a in sorted(ADAPTERS) for b in (1, 3)
])
def test_whisper_mixed_batch_rows_equal_rows_alone(tiny_base, tmp_path, adapter, beam_size):
    bundle = bundles.make_bundle(tiny_base, tmp_path / adapter, adapter, ADAPTERS[adapter])
    service = Transcriber.load("whisper", str(tiny_base), str(bundle),
                               options={"max_new_tokens": 6, "beam_size": beam_size})
    wavs = _wavs()
    # Two adapters, a locale without one (the base), and two rows to identify.
    locales = ["el-GR", "uk-UA", "de-DE", None, None]
    batch = service.transcribe(wavs, locales)
    alone = [service.transcribe([w], [loc])[0] for w, loc in zip(wavs, locales)]
    assert [d.hyp.tokens for d in batch] == [d.hyp.tokens for d in alone]
    assert [d.adapter for d in batch] == [d.adapter for d in alone]
    assert [d.adapter for d in batch[:3]] == ["el-GR", "uk-UA", None]
    assert all(d.detected for d in batch[3:]) and not any(d.detected for d in batch[:3])
    # The adapters act: the same clip decodes differently through the two adapters.
    el, uk = service.transcribe([wavs[0], wavs[0]], ["el-GR", "uk-UA"])
    assert el.hyp.tokens != uk.hyp.tokens or el.hyp.avg_logprob != pytest.approx(uk.hyp.avg_logprob, abs=1e-6)


@pytest.mark.parametrize("adapter,method,mode", [
    pytest.param(a, m, md, marks=_slow_unless(a == "lda" or (m, md) == ("beam", "full")))
    for a in sorted(ADAPTERS) for m, md in (("greedy", "full"), ("beam", "full"), ("greedy", "streaming"))
])
def test_transducer_mixed_batch_rows_equal_rows_alone(adapter, method, mode):
    from asr_adapt import adapters as A
    from asr_adapt.models.transducer import TransducerBackbone
    from asr_adapt.models.transducer.tokenizer import CharTokenizer

    torch.manual_seed(0)
    wavs = _wavs()[:3]
    model = TransducerBackbone.from_preset("tiny", CharTokenizer.train(["abc de", "fgh"])).eval()
    model.fit_cmvn(wavs)
    adapted = copy.deepcopy(model)
    A.attach_adapters(adapted, adapted.injection_points(), adapter, ADAPTERS[adapter], ["xx-XX", "yy"])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in adapted.named_parameters():
            if A.is_adapter_param(n):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    service = Transcriber(adapted, {"method": method, "mode": mode, "beam_size": 3, "chunk_ms": 160})
    locales = ["xx-XX", None, "yy"]
    batch = service.transcribe(wavs, locales)
    alone = [service.transcribe([w], [loc])[0] for w, loc in zip(wavs, locales)]
    # A random model emits few tokens: the log-probabilities of all decisions (blanks too)
    # tell a misrouted row apart.
    assert [d.hyp.tokens for d in batch] == [d.hyp.tokens for d in alone]
    assert [d.hyp.avg_logprob for d in batch] == pytest.approx([d.hyp.avg_logprob for d in alone], abs=1e-5)
    assert [d.adapter for d in batch] == ["xx-XX", None, "yy"]
    base = Transcriber(model, {"method": method, "mode": mode, "beam_size": 3, "chunk_ms": 160})
    plain = base.transcribe([wavs[0], wavs[1]], [None, None])
    assert batch[1].hyp.avg_logprob == pytest.approx(plain[1].hyp.avg_logprob, abs=1e-6)  # no adapter: the base
    assert abs(batch[0].hyp.avg_logprob - plain[0].hyp.avg_logprob) > 1e-5  # the adapter acts


def test_route_reshapes_like_the_tensor_it_routes():
    keys = ["a", "b", None, "c"]
    x = torch.arange(4)
    route = Route(keys)
    idx = torch.tensor([2, 0, 0, 3])
    assert list(route.select(idx).keys) == [keys[i] for i in x[idx].tolist()]
    assert list(route.repeat(2).keys) == [keys[i] for i in x.repeat_interleave(2).tolist()]
    assert route.select([1]) == Route(["b"])


def test_a_reshape_the_route_did_not_follow_fails_loudly():
    with routing.use(Route(["a", "b", "c"])):
        assert routing.groups(3) is not None
        with pytest.raises(RuntimeError, match="Route"):
            routing.groups(2)  # a row was dropped from the activations but not from the route
    assert routing.current() is None


def test_decoding_requires_an_explicit_route():
    from asr_adapt.decoding.decoders import transcribe_batch

    with pytest.raises(TypeError):
        transcribe_batch(object(), [], [], None)  # route is keyword-only and required
