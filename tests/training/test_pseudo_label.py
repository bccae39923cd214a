"""Pseudo-label filters drop what they should; the job writes a data dir and a report,
and a re-run decodes nothing twice."""

from __future__ import annotations

import json

from asr_adapt.data.kaldi import load_utterances
from asr_adapt.training.pl_filters import FilterConfig, apply_filters, compression_ratio
from tests.training.helpers import make_data, tiny_whisper_dir


def rec(uid, text, lang="el-GR", expected="el-GR", dur=2.0, conf=-0.3):
    return {"utt_id": uid, "text": text, "lang": lang, "expected_lang": expected, "duration": dur, "avg_logprob": conf}


def test_filters_each_reason():
    recs = [
        rec("a", "καλη μερα σας"),
        rec("b", ""),                                   # empty
        rec("c", "hello there friend", lang="en"),      # predicted language differs
        rec("d", "να " * 40),                          # repetitive (compression ratio)
        rec("e", "ab", dur=5.0),                        # 0.4 chars/s: too few
        rec("f", "α" * 200, dur=1.0),                   # 200 chars/s (and repetitive)
        rec("g", "ενα δυο τρια", conf=-3.0),            # low confidence
    ]
    kept, report = apply_filters(recs, FilterConfig(min_confidence=-1.0))
    assert [r["utt_id"] for r in kept] == ["a"]
    c = report["el-GR"]
    assert c["kept"] == 1 and c["empty"] == 1 and c["lang_mismatch"] == 1 and c["low_confidence"] == 1
    assert c["repetitive"] == 2 and c["too_few_chars"] == 1
    assert compression_ratio("να " * 40) > 2.4


def test_keep_top_percent_per_locale():
    recs = [rec(f"el{i}", "καλη μερα σας", conf=-i / 10) for i in range(10)]
    recs += [rec(f"uk{i}", "добрий день вам", lang="uk-UA", expected="uk-UA", conf=-i) for i in range(4)]
    kept, report = apply_filters(recs, FilterConfig(keep_top_percent=50))
    assert sorted(r["utt_id"] for r in kept) == ["el0", "el1", "el2", "el3", "el4", "uk0", "uk1"]
    assert report["el-GR"]["below_top_percent"] == 5 and report["uk-UA"]["kept"] == 2


def test_pseudo_label_job_writes_data_and_resumes(tmp_path):
    from asr_adapt.decoding.service import Transcriber
    from asr_adapt.loading import load_model
    from asr_adapt.training.pseudo_label import pseudo_label

    model = tiny_whisper_dir(tmp_path / "tiny")
    src = make_data(tmp_path / "unlab", per_locale=3, text=False)
    (src / "wav" / "el-GR-s0-u000.wav").write_bytes(b"not audio")  # a corrupt file is recorded, not fatal
    teacher = Transcriber(load_model("whisper", str(model)), {"max_new_tokens": 6})
    # Keep everything the random teacher says, so the data dir is non-empty.
    keep_all = FilterConfig(min_cps=0.0, max_cps=1e9, max_compression_ratio=1e9, require_lang_match=False)
    summary, report = pseudo_label(teacher, src, tmp_path / "pl", keep_all, batch_size=2)
    assert summary.decoded == 6 and summary.failed == 1
    hyps = [json.loads(x) for x in (tmp_path / "pl" / "hyp.jsonl").read_text().splitlines()]
    assert len(hyps) == 5 and len({h["utt_id"] for h in hyps}) == 5
    failed = (tmp_path / "pl" / "failed.tsv").read_text()
    assert "el-GR-s0-u000" in failed
    kept = {u.utt_id for u in load_utterances(tmp_path / "pl" / "data")} if (tmp_path / "pl" / "data" / "text").exists() else set()
    assert kept == {h["utt_id"] for h in hyps if h["text"].strip()}
    assert sum(sum(c.values()) for c in report.values()) == 5
    # Re-run: everything is already done, nothing is decoded again, outputs unchanged.
    summary2, _ = pseudo_label(teacher, src, tmp_path / "pl", keep_all, batch_size=2)
    assert summary2.decoded == 0 and summary2.skipped_done == 6
    assert len((tmp_path / "pl" / "hyp.jsonl").read_text().splitlines()) == 5
