"""``asr-adapt decode`` end to end on a tiny model: odd inputs, failures, resume, lock."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_adapt.cli.main import main
from asr_adapt.fileio import dir_lock, read_jsonl
from asr_adapt.models.whisper import WhisperBackbone, tiny_config


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    d = tmp_path_factory.mktemp("tiny-whisper")
    torch.manual_seed(0)
    WhisperBackbone.from_config(tiny_config(), tokenizer).hf.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture()
def audio_dir(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    sf.write(root / "a" / "x.wav", rng.standard_normal(16000 * 2) * 0.1, 16000)
    sf.write(root / "b" / "x.wav", rng.standard_normal(16000 * 3) * 0.1, 16000)  # same basename
    sf.write(root / "tiny.flac", rng.standard_normal(800) * 0.1, 16000)  # 0.05 s
    sf.write(root / "stereo.wav", rng.standard_normal((48000 * 2, 2)) * 0.1, 48000)
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00not really a wave file" * 8)
    return root


def _decode(audio_dir, out, model_dir, *extra):
    return main([
        "decode", str(audio_dir), "-o", str(out), "--model", str(model_dir), "--lang", "en",
        "--min-window", "1", "--fallback", "none", "--max-new-tokens", "8", "--no-progress",
        "--format", "txt,kaldi,srt,vtt,tsv", *extra,
    ])


def test_decode_folder_with_bad_and_odd_files(audio_dir, tmp_path, model_dir):
    out = tmp_path / "out"
    assert _decode(audio_dir, out, model_dir) == 1  # something failed
    failed = (out / "failed.tsv").read_text().splitlines()
    assert failed[0] == "path\treason" and len(failed) == 2 and "corrupt.wav" in failed[1]
    recs = read_jsonl(out / "hyp.jsonl")
    assert sorted(r["out"] for r in recs) == ["a/x", "b/x", "stereo", "tiny"]
    assert len({r["utt_id"] for r in recs}) == 4
    by_out = {r["out"]: r for r in recs}
    assert by_out["stereo"]["duration"] == pytest.approx(2.0, abs=0.01)  # 48 kHz stereo -> 16 kHz mono
    assert by_out["tiny"]["duration"] == pytest.approx(0.05, abs=0.01)
    for stem in ("a/x", "b/x", "stereo", "tiny"):
        assert (out / f"{stem}.txt").read_text() == by_out[stem]["text"] + "\n"
        assert (out / f"{stem}.vtt").read_text().startswith("WEBVTT")
        assert (out / f"{stem}.srt").exists()
    assert len((out / "text").read_text().splitlines()) == 4
    assert len((out / "hyp.tsv").read_text().splitlines()) == 5
    assert all(r["lang"] == "en" and isinstance(r["avg_logprob"], float) for r in recs)


def test_resume_after_kill_gives_one_line_per_utterance(audio_dir, tmp_path, model_dir):
    out = tmp_path / "out"
    (audio_dir / "corrupt.wav").unlink()
    assert _decode(audio_dir, out, model_dir) == 0
    lines = (out / "hyp.jsonl").read_text().splitlines(keepends=True)
    assert len(lines) == 4
    first_text = json.loads(lines[0])["text"]
    # Simulate kill -9 mid-write: two complete records and a torn third line.
    (out / "hyp.jsonl").write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    assert _decode(audio_dir, out, model_dir) == 0
    recs = read_jsonl(out / "hyp.jsonl")
    assert len(recs) == 4 and len({r["utt_id"] for r in recs}) == 4
    assert recs[0]["text"] == first_text
    assert (out / "hyp.jsonl").read_text().count("\n") == 4
    # A third run has nothing to do and changes nothing.
    before = (out / "hyp.jsonl").read_text()
    assert _decode(audio_dir, out, model_dir) == 0
    assert (out / "hyp.jsonl").read_text() == before


def test_second_run_on_same_output_refuses(audio_dir, tmp_path, model_dir):
    out = tmp_path / "out"
    with dir_lock(out):
        assert _decode(audio_dir, out, model_dir) == 2
    assert not (out / "hyp.jsonl").exists()


def test_unknown_format_is_an_error(audio_dir, tmp_path, model_dir):
    assert _decode(audio_dir, tmp_path / "o", model_dir, "--format", "txt,docx") == 2
