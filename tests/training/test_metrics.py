"""Per-locale dev WER during validation: totals and per-utterance errors agree with jiwer."""

from __future__ import annotations

import jiwer
import pytest

from asr_adapt.training import metrics
from asr_adapt.training.metrics import LocaleAccumulator

ROWS = [
    ("u1", "the cat sat", "the cat sat", "en"),
    ("u2", "on the mat", "on a mat today", "en"),
    ("u3", "   ", "anything", "en"),  # empty reference after normalisation: skipped
    ("g1", "καλη μερα", "καλη", "el"),
]


def test_utterance_errors_add_up_to_the_locale_wer():
    acc = LocaleAccumulator()
    acc.add(*zip(*ROWS))
    out = acc.compute()
    assert list(out) == ["el", "en"] and out["en"]["n"] == 2
    assert out["en"]["wer"] == pytest.approx(100 * jiwer.wer(["the cat sat", "on the mat"], ["the cat sat", "on a mat today"]))
    en = acc.utt_errors["en"]
    assert {k: en[k] for k in ("utt", "err", "ref")} == {"utt": ["u1", "u2"], "err": [0, 2], "ref": [3, 3]}
    assert {k: acc.utt_errors["el"][k] for k in ("utt", "err", "ref")} == {"utt": ["g1"], "err": [1], "ref": [2]}
    # Per-utterance character counts add up to the locale's CER (the merge's --metric cer bootstraps them).
    assert en["cerr"][0] == 0 and en["cref"] == [len("the cat sat"), len("on the mat")]
    assert 100 * sum(en["cerr"]) / sum(en["cref"]) == pytest.approx(out["en"]["cer"])
    acc.reset()
    assert acc.compute() == {} and acc.utt_errors == {}


def test_distributed_padding_counts_each_utterance_once(monkeypatch):
    """DistributedSampler repeats utterances to even out ranks; each is scored once."""
    acc = LocaleAccumulator()
    acc.add(*zip(*ROWS[:2]))
    monkeypatch.setattr(metrics.dist, "is_available", lambda: True)
    monkeypatch.setattr(metrics.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(metrics.dist, "get_world_size", lambda: 2)

    def all_gather_object(out, rows):  # rank 1 holds u2 again (padding)
        out[0], out[1] = rows, [rows[1]]

    monkeypatch.setattr(metrics.dist, "all_gather_object", all_gather_object)
    out = acc.compute(distributed=True)
    assert out["en"]["n"] == 2 and acc.utt_errors["en"]["utt"] == ["u1", "u2"]
