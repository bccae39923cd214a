"""Case 1: bad and odd audio as a user meets it, through `asr-adapt decode`, `asr-adapt
pseudo-label` and data preparation. Every file ends in a transcript or a failed.tsv line
naming it and the reason; nothing else is lost; the exit code says something failed."""

from __future__ import annotations

import numpy as np
import pytest

from asr_adapt.cli.main import main
from asr_adapt.data.kaldi import load_utterances, write_data_dir
from asr_adapt.decoding.decoders import decoding_options, transcribe_batch
from asr_adapt.fileio import read_jsonl
from tests.reliability.helpers import BAD_AUDIO, FAST, fabricate_bad_audio, run_measured, write_long_wav


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    return fabricate_bad_audio(tmp_path_factory.mktemp("bad-audio") / "in")


@pytest.fixture(scope="module")
def decoded(bad_dir, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("bad-decode") / "out"
    rc = main(["decode", str(bad_dir), "-o", str(out), "--model", str(tiny_model), "--lang", "en",
               "--format", "txt,jsonl", *FAST])
    return rc, out


def _failed_rows(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "path\treason"
    return dict(line.split("\t", 1) for line in lines[1:])


def test_decode_bad_audio_each_file_ends_in_transcript_or_failed_line(bad_dir, decoded):
    rc, out = decoded
    assert rc == 1  # something failed
    failed = _failed_rows(out / "failed.tsv")
    recs = read_jsonl(out / "hyp.jsonl")
    by_audio = {r["audio"]: r for r in recs}
    assert len(by_audio) == len(recs)  # one line per utterance
    for name, (kind, want) in BAD_AUDIO.items():
        path = str(bad_dir / name)
        if kind == "failed":
            assert path in failed and path not in by_audio, name
            assert want in failed[path], (name, failed[path])
        else:
            assert path in by_audio and path not in failed, name
            rec = by_audio[path]
            assert isinstance(rec["text"], str)
            if want is not None:
                assert rec["duration"] == pytest.approx(want, abs=0.02), name
            assert (out / f"{rec['out']}.txt").read_text(encoding="utf-8") == rec["text"] + "\n"
    assert len(failed) + len(recs) == len(BAD_AUDIO)


def test_decode_long_clip_is_chunked_and_duplicates_keep_their_folders(bad_dir, decoded):
    _, out = decoded
    by_out = {r["out"]: r for r in read_jsonl(out / "hyp.jsonl")}
    assert len(by_out["long45"]["segments"]) == 2  # 45 s -> two pieces of <= 30 s
    assert by_out["long45"]["segments"][-1][1] == pytest.approx(45.0, abs=0.01)
    assert {"a/same", "b/same", "ünïcødé dir/καλή μέρα 1"} <= set(by_out)
    assert by_out["a/same"]["utt_id"] != by_out["b/same"]["utt_id"]
    assert (out / "ünïcødé dir" / "καλή μέρα 1.txt").exists()


def test_decode_rerun_only_retries_the_failed(bad_dir, decoded, tiny_model):
    rc, out = decoded
    before = (out / "hyp.jsonl").read_text(encoding="utf-8")
    assert main(["decode", str(bad_dir), "-o", str(out), "--model", str(tiny_model), "--lang", "en", *FAST]) == 1
    assert (out / "hyp.jsonl").read_text(encoding="utf-8") == before
    assert len(_failed_rows(out / "failed.tsv")) == sum(k == "failed" for k, _ in BAD_AUDIO.values())


def test_pseudo_label_bad_audio(bad_dir, tiny_model, tmp_path):
    out = tmp_path / "pl"
    rc = main(["pseudo-label", str(bad_dir), "-o", str(out), "--model", str(tiny_model), "--batch-size", "4",
               "--min-window", "1", "--min-cps", "0", "--max-cps", "1e9", "--max-compression-ratio", "1e9",
               "--no-lang-match"])
    assert rc == 1
    n_bad = sum(k == "failed" for k, _ in BAD_AUDIO.values())
    failed = [line.split("\t") for line in (out / "failed.tsv").read_text(encoding="utf-8").splitlines()]
    assert len(failed) == n_bad
    for audio, _utt, reason in failed:
        kind, want = BAD_AUDIO[str(audio)[len(str(bad_dir)) + 1 :]]
        assert kind == "failed" and reason.strip()
    recs = read_jsonl(out / "hyp.jsonl")
    assert len(recs) == len(BAD_AUDIO) - n_bad and len({r["utt_id"] for r in recs}) == len(recs)
    assert main(["data", "validate", str(out / "data")]) == 0


def test_data_prep_of_a_bad_folder(bad_dir, tmp_path, caplog):
    utts = load_utterances(bad_dir)
    assert len(utts) == len(BAD_AUDIO) and len({u.utt_id for u in utts}) == len(utts)
    unreadable = {u.audio for u in utts if u.duration is None}
    # Header-level problems are found here already; the rest at load time (decode/training).
    assert str(bad_dir / "zero.wav") in unreadable and str(bad_dir / "text.wav") in unreadable
    assert str(bad_dir / "a" / "same.wav") not in unreadable
    d = tmp_path / "data"
    write_data_dir(d, [u for u in utts if u.duration is not None])
    assert main(["data", "validate", str(d)]) == 0


@pytest.mark.parametrize("minutes", [pytest.param(20, marks=pytest.mark.slow), 2])
def test_long_clip_decodes_with_bounded_memory(tmp_path, tiny_model, baseline_decode, minutes, record_property):
    """Peak RSS of a decode subprocess on one long clip vs on short clips: the difference stays
    within a few copies of the audio itself (the clip is decoded in passes of bounded size)."""
    long_dir = tmp_path / "long"
    write_long_wav(long_dir / "long.wav", minutes * 60)
    base = baseline_decode
    run = run_measured("decode", long_dir, "-o", tmp_path / "o2", "--model", str(tiny_model), "--lang", "en", *FAST)
    assert run.rc == 0, run.stderr[-2000:]
    (rec,) = read_jsonl(tmp_path / "o2" / "hyp.jsonl")
    assert rec["duration"] == pytest.approx(minutes * 60, abs=0.1)
    assert len(rec["segments"]) >= 2 * minutes
    audio_mb = minutes * 60 * 16000 * 4 / 2**20  # the clip as float32 at 16 kHz
    growth = run.peak_rss_mb - base.peak_rss_mb
    record_property("peak_rss_mb", {"short": round(base.peak_rss_mb), f"{minutes}min": round(run.peak_rss_mb)})
    print(f"peak RSS: short clips {base.peak_rss_mb:.0f} MB, {minutes} min clip {run.peak_rss_mb:.0f} MB")
    assert growth < 3 * audio_mb + 100, f"{growth:.0f} MB more for {minutes} min of audio ({audio_mb:.0f} MB)"


def test_long_clip_is_encoded_in_bounded_passes(tiny_model, monkeypatch):
    """A 5-minute clip has 10 pieces; a batch of one clip never puts more than 8 through the encoder."""
    from asr_adapt.decoding.whisper_decode import PIECES_PER_PASS
    from asr_adapt.models.whisper import WhisperBackbone

    bb = WhisperBackbone.from_pretrained(str(tiny_model))
    seen = []
    encode = bb.encode
    monkeypatch.setattr(bb, "encode", lambda feats: (seen.append(feats.shape[0]), encode(feats))[1])
    wav = np.concatenate([np.zeros(16000, np.float32), np.tile(np.float32([0.1, -0.1]), 150 * 16000)])
    opts = decoding_options(bb, min_window_s=1.0, fallback="none", max_new_tokens=2, language="en")
    (hyp,) = transcribe_batch(bb, [wav], ["en"], opts, route=None)
    assert len(hyp.segments) >= 10 and sum(seen) == len(hyp.segments)
    assert max(seen) <= PIECES_PER_PASS
