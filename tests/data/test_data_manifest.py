"""JSONL manifests and their conversion to and from Kaldi data dirs."""

from __future__ import annotations

import json

import pytest

from asr_adapt.cli.main import main
from asr_adapt.data.kaldi import read_data_dir, validate, write_data_dir
from asr_adapt.data.manifest import kaldi_to_manifest, manifest_to_kaldi, read_manifest, write_manifest
from asr_adapt.data.tables import read_table
from asr_adapt.data.types import Utterance

UTTS = [
    Utterance("s1-a", "/abs/a.wav", text="γειά σου", lang="el-GR", speaker="s1", duration=1.5, recording="s1-a"),
    Utterance("s1-b", "/abs/long.wav", text="مرحبا", lang="ar-EG", speaker="s1", duration=2.0, offset=3.0, segment=True,
              recording="long"),
    Utterance("s2-a", "sox /abs/c.flac -t wav - |", text="", lang="en-US", speaker="s2", duration=0.5,
              recording="s2-a"),
]


def test_manifest_round_trip(tmp_path):
    path = tmp_path / "m.jsonl"
    write_manifest(path, UTTS)
    lines = path.read_text(encoding="utf-8").splitlines()
    rec = json.loads(lines[1])
    assert rec == {"audio_filepath": "/abs/long.wav", "duration": 2.0, "text": "مرحبا", "lang": "ar-EG",
                   "offset": 3.0, "speaker": "s1", "utt_id": "s1-b"}
    assert "offset" not in json.loads(lines[0])
    assert "مرحبا" in lines[1]  # UTF-8, not \u escapes
    back = read_manifest(path)
    strip = [(u.utt_id, u.audio, u.text, u.lang, u.speaker, u.duration, u.offset, u.segment) for u in UTTS]
    assert [(u.utt_id, u.audio, u.text, u.lang, u.speaker, u.duration, u.offset, u.segment) for u in back] == strip


def test_kaldi_manifest_kaldi_round_trip(tmp_path):
    d1, d2, m = tmp_path / "d1", tmp_path / "d2", tmp_path / "m.jsonl"
    write_data_dir(d1, [u for u in UTTS if u.text])  # Kaldi would reject the empty transcript
    assert validate(d1) == []
    assert kaldi_to_manifest(d1, m) == 2
    assert manifest_to_kaldi(m, d2) == 2
    assert validate(d2) == []
    for name in ("text", "utt2spk", "spk2utt", "utt2lang", "utt2dur"):
        assert read_table(d1 / name) == read_table(d2 / name), name
    # Manifests carry no recording ids, so only the segment times must survive.
    def times(d):
        return {k: v.split()[1:] for k, v in read_table(d / "segments").items()}

    assert times(d1) == times(d2) == {"s1-a": ["0.000", "1.500"], "s1-b": ["3.000", "5.000"]}
    assert [u.audio for u in read_data_dir(d2)] == [u.audio for u in read_data_dir(d1)]


def test_relative_paths_are_relative_to_the_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    write_manifest(tmp_path / "sub" / "m.jsonl", [Utterance("u", "wavs/a.wav", duration=1.0)])
    rec = json.loads((tmp_path / "sub" / "m.jsonl").read_text())
    assert rec["audio_filepath"] == "../wavs/a.wav"
    assert read_manifest(tmp_path / "sub" / "m.jsonl")[0].audio == str(tmp_path / "wavs" / "a.wav")
    assert read_manifest("sub/m.jsonl")[0].audio == "wavs/a.wav"


def test_read_manifest_derives_ids_and_reports_errors(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"audio_filepath": "/x/spk/a.wav", "duration": 1}\r\n\n{"audio_filepath": "/x/spk/a.flac"}\n')
    utts = read_manifest(p)
    assert [u.utt_id for u in utts] == ["x-spk-a", "x-spk-a-3"]
    assert utts[1].duration is None and utts[1].text is None and not utts[1].segment
    p.write_text('{"duration": 1}\n')
    with pytest.raises(ValueError, match="missing 'audio_filepath'"):
        read_manifest(p)
    p.write_text('{"audio_filepath": "/a.wav"}\nnot json\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2: not valid JSON"):
        read_manifest(p)
    p.write_text('{"audio_filepath": "/a.wav", "utt_id": "u"}\n{"audio_filepath": "/b.wav", "utt_id": "u"}\n')
    with pytest.raises(ValueError, match="duplicate utt_id 'u'"):
        read_manifest(p)


def test_cli_conversions(tmp_path, capsys):
    d, m, d2 = tmp_path / "d", tmp_path / "m.jsonl", tmp_path / "d2"
    write_data_dir(d, UTTS[:2])
    assert main(["data", "to-jsonl", str(d), str(m)]) == 0
    assert main(["data", "from-jsonl", str(m), str(d2)]) == 0
    assert "wrote 2 utterances" in capsys.readouterr().out
    assert read_table(d / "text") == read_table(d2 / "text")
