"""LocalAgreement commit policy and latency arithmetic on scripted examples."""

import pytest

from asr_adapt.scoring.streaming import (
    LocalAgreement,
    common_prefix_len,
    emission_delays,
    first_token_latency,
    pair_correct_tokens,
    real_time_factor,
    summarise_latency,
    utt_latency,
)


def test_common_prefix_len():
    assert common_prefix_len([("a", "b", "c"), ("a", "b"), ("a", "b", "d")]) == 2
    assert common_prefix_len([("x",), ("y",)]) == 0
    assert common_prefix_len([]) == 0


def test_local_agreement_2_with_revisions():
    la = LocalAgreement(2)
    assert la.update(["i"], 1.0).items == ()  # one hypothesis: nothing to agree with
    c = la.update(["i", "am"], 2.0)
    assert c.items == ("i",) and c.time == 2.0
    assert la.update(["i", "was", "here"], 3.0).items == ()  # "am" revised to "was": no agreement
    assert la.pending == ("was", "here")
    c = la.update(["i", "was", "here", "today"], 4.0)
    assert c.items == ("was", "here")
    # A hypothesis that revises committed text commits nothing and retracts nothing.
    assert la.update(["you", "was", "here", "today"], 5.0).items == ()
    assert la.committed == ["i", "was", "here"]
    c = la.finish(6.0)
    assert c.items == ("today",)
    assert la.text() == "i was here today"
    assert la.commit_times == [2.0, 4.0, 4.0, 6.0]


def test_local_agreement_3_needs_three_votes():
    la = LocalAgreement(3)
    la.update(["a", "b"], 1.0)
    assert la.update(["a", "b"], 2.0).items == ()
    assert la.update(["a", "c"], 3.0).items == ("a",)


def test_trim_and_prompt_handover():
    la = LocalAgreement(2)
    la.update(["i", "was", "here"], 1.0)
    la.update(["i", "was", "here", "today"], 2.0)
    assert la.committed == ["i", "was", "here"] and la.buffer_prefix() == ("i", "was", "here")
    # The decoder cuts the audio after "was": those items leave the buffer.
    assert la.trim(2) == ("i", "was")
    assert la.prompt() == ("i", "was") and la.buffer_prefix() == ("here",)
    # Hypotheses now describe the trimmed buffer; agreement continues with the shifted history.
    assert la.update(["here", "today", "now"], 3.0).items == ("today",)
    assert la.text() == "i was here today"
    with pytest.raises(ValueError):
        la.trim(5)


def test_latency_arithmetic():
    emit = [1.0, 1.5, 3.0]
    avail = [0.6, 1.2, 2.0]
    assert emission_delays(emit, avail).tolist() == pytest.approx([0.4, 0.3, 1.0])
    assert first_token_latency(emit, speech_onset=0.5) == pytest.approx(0.5)
    assert first_token_latency([]) is None
    assert real_time_factor(2.0, 4.0) == 0.5
    with pytest.raises(ValueError):
        real_time_factor(1.0, 0.0)
    with pytest.raises(ValueError):
        emission_delays([1.0], [1.0, 2.0])
    s = summarise_latency([
        utt_latency("u1", "el-GR", emit, avail, speech_onset=0.5, processing_s=1.0, audio_s=3.0),
        utt_latency("u2", "sw-KE", [2.0], [1.0], processing_s=2.0, audio_s=2.0),
    ])
    # Delays 300, 400, 1000 ms: p50 400, p90 = 400 + 0.8 * 600 = 880 (linear interpolation).
    assert s["el-GR"]["delay"]["p50_ms"] == pytest.approx(400.0)
    assert s["el-GR"]["delay"]["p90_ms"] == pytest.approx(880.0)
    assert s["el-GR"]["first_token"]["p50_ms"] == pytest.approx(500.0)
    assert s["el-GR"]["rtf"] == pytest.approx(1 / 3)
    assert s["all"]["n_tokens"] == 4 and s["all"]["rtf"] == pytest.approx(3.0 / 5.0)


def test_pair_correct_tokens_keeps_hits_only():
    e, a = pair_correct_tokens(["a", "x", "c"], [1.0, 2.0, 3.0], ["a", "b", "c"], [0.5, 1.5, 2.5])
    assert e == [1.0, 3.0] and a == [0.5, 2.5]
