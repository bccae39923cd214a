"""Kaldi data dirs: tables, read/write, validate, fix, load_utterances, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from asr_adapt.cli.main import main
from asr_adapt.data.kaldi import (
    fix,
    load_utterances,
    read_data_dir,
    utterances_from_audio_dir,
    validate,
    write_data_dir,
)
from asr_adapt.data.tables import format_table, read_entries, read_table, spk2utt_from_utt2spk, write_table
from asr_adapt.data.types import Utterance

GOOD = {
    "wav.scp": "spkA-u1 /a/1.wav\nspkA-u2 sox /a/2.flac -t wav - |\nspkB-u3 /b/3.wav\n",
    "text": "spkA-u1 hello world\nspkA-u2 καλημέρα\nspkB-u3 שלום\n",
    "utt2spk": "spkA-u1 spkA\nspkA-u2 spkA\nspkB-u3 spkB\n",
    "spk2utt": "spkA spkA-u1 spkA-u2\nspkB spkB-u3\n",
    "utt2lang": "spkA-u1 en-US\nspkA-u2 el-GR\nspkB-u3 he-IL\n",
    "utt2dur": "spkA-u1 1.500\nspkA-u2 2.000\nspkB-u3 0.750\n",
}


def make_dir(root: Path, files: dict[str, str | bytes], name: str = "d") -> Path:
    d = root / name
    d.mkdir()
    for fname, content in files.items():
        (d / fname).write_bytes(content if isinstance(content, bytes) else content.encode())
    return d


def messages(problems) -> str:
    return "\n".join(str(p) for p in problems)


# ---------------------------------------------------------------- tables


def test_read_table_tolerates_crlf_and_missing_final_newline(tmp_path):
    p = tmp_path / "text"
    p.write_bytes(b"u1 hello  world\r\nu2 \xce\xb1\xce\xb2\r\n\r\nu3")
    assert read_table(p) == {"u1": "hello  world", "u2": "αβ", "u3": ""}
    assert [e.lineno for e in read_entries(p)] == [1, 2, 4]


def test_write_table_is_bytewise_sorted(tmp_path):
    # LC_ALL=C: uppercase < lowercase, "a-" < "a0" < "a_" < "aa", Greek after Latin.
    write_table(tmp_path / "t", {"b": "2", "a_": "x", "A": "1", "aa": "y", "a0": "z", "a-": "w", "α": "g"})
    keys = [line.split()[0] for line in (tmp_path / "t").read_text().splitlines()]
    assert keys == ["A", "a-", "a0", "a_", "aa", "b", "α"]
    assert keys == sorted(keys, key=lambda k: k.encode())
    assert (tmp_path / "t").read_bytes().endswith(b"\n")


def test_format_table_rejects_bad_keys_and_values():
    with pytest.raises(ValueError, match="whitespace"):
        format_table({"a b": "x"})
    with pytest.raises(ValueError, match="line break"):
        format_table({"a": "x\ny"})
    assert format_table({"u1": ""}) == "u1\n"


def test_spk2utt_from_utt2spk():
    assert spk2utt_from_utt2spk({"s2-b": "s2", "s1-b": "s1", "s1-a": "s1"}) == {"s1": "s1-a s1-b", "s2": "s2-b"}


# ---------------------------------------------------------------- read/write


def test_read_data_dir(tmp_path):
    utts = read_data_dir(make_dir(tmp_path, GOOD))
    assert [u.utt_id for u in utts] == ["spkA-u1", "spkA-u2", "spkB-u3"]
    u = utts[1]
    assert (u.audio, u.text, u.lang, u.speaker, u.duration) == ("sox /a/2.flac -t wav - |", "καλημέρα", "el-GR", "spkA", 2.0)
    assert not u.segment


def test_write_then_read_round_trip_with_segments(tmp_path):
    utts = [
        Utterance("s1-b", "/r/rec1.wav", text="two", lang="el-GR", speaker="s1", duration=1.25, offset=2.0, segment=True),
        Utterance("s1-a", "/r/rec1.wav", text="one", lang="el-GR", speaker="s1", duration=2.0, offset=0.0, segment=True),
        Utterance("s2-a", "cat /r/rec2.wav |", text="three", lang="ar-EG", speaker="s2", duration=1.0, offset=0.5,
                  segment=True, recording="rec2"),
    ]
    d = tmp_path / "out"
    write_data_dir(d, utts)
    assert validate(d) == []
    assert (d / "segments").read_text() == "s1-a rec1 0.000 2.000\ns1-b rec1 2.000 3.250\ns2-a rec2 0.500 1.500\n"
    assert read_table(d / "wav.scp") == {"rec1": "/r/rec1.wav", "rec2": "cat /r/rec2.wav |"}
    back = read_data_dir(d)
    assert [(u.utt_id, u.offset, u.duration, u.segment, u.text, u.lang) for u in back] == [
        ("s1-a", 0.0, 2.0, True, "one", "el-GR"),
        ("s1-b", 2.0, 1.25, True, "two", "el-GR"),
        ("s2-a", 0.5, 1.0, True, "three", "ar-EG"),
    ]


def test_write_data_dir_unlabelled_removes_stale_text(tmp_path):
    d = make_dir(tmp_path, GOOD)
    write_data_dir(d, [Utterance("x-1", "/a.wav", speaker="x", duration=1.0)])
    assert not (d / "text").exists() and not (d / "utt2lang").exists()
    assert validate(d) == []
    assert read_data_dir(d)[0].text is None


def test_write_data_dir_rejects_duplicates_and_partial_text(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        write_data_dir(tmp_path / "a", [Utterance("u", "/a.wav", duration=1.0)] * 2)
    with pytest.raises(ValueError, match="text is known for 1 of 2"):
        write_data_dir(tmp_path / "b", [Utterance("u1", "/a.wav", text="x", duration=1.0),
                                        Utterance("u2", "/b.wav", duration=1.0)])


def test_write_data_dir_reads_missing_durations(tmp_path, make_wav):
    wav = make_wav("a.wav", seconds=0.5)
    write_data_dir(tmp_path / "d", [Utterance("u1", str(wav))])
    assert read_table(tmp_path / "d" / "utt2dur") == {"u1": "0.500"}


# ---------------------------------------------------------------- validate


def test_validate_accepts_good_dir(tmp_path):
    assert validate(make_dir(tmp_path, GOOD)) == []


@pytest.mark.parametrize(
    "file, content, expected",
    [
        ("text", "spkA-u2 καλημέρα\nspkA-u1 hello world\nspkB-u3 שלום\n", "text:2: not sorted"),
        ("utt2spk", "spkA-u1 spkA\nspkA-u1 spkA\nspkA-u2 spkA\nspkB-u3 spkB\n", "utt2spk:2: duplicate key 'spkA-u1'"),
        ("text", GOOD["text"].replace("\n", "\r\n"), "text:1: CRLF line ending"),
        ("utt2lang", GOOD["utt2lang"].rstrip("\n"), "utt2lang:3: no newline at end of file"),
        ("text", "spkA-u1 hello world\nspkB-u3 שלום\n", "text:0: 1 utterances of wav.scp are missing here (first: 'spkA-u2')"),
        ("utt2lang", GOOD["utt2lang"] + "spkC-u9 en-US\n", "utt2lang:4: utterance 'spkC-u9' is not in wav.scp"),
        ("utt2dur", "spkA-u1 1.5\nspkA-u2 0\nspkB-u3 abc\n", "utt2dur:2: spkA-u2: duration '0' must be positive"),
        ("utt2dur", "spkA-u1 1.5\nspkA-u2 2\nspkB-u3 abc\n", "utt2dur:3: spkB-u3: duration 'abc' is not a number"),
        ("utt2dur", "spkA-u1 1.5\nspkA-u2 -2\nspkB-u3 1\n", "utt2dur:2: spkA-u2: duration '-2' must be positive"),
        ("text", "spkA-u1 hello world\nspkA-u2\nspkB-u3 שלום\n", "text:2: spkA-u2: empty transcript"),
        ("text", "spkA-u1 hello world\n\nspkA-u2 a\nspkB-u3 b\n", "text:2: blank line"),
        ("spk2utt", "spkA spkA-u1\nspkB spkB-u3 spkA-u2\n", "spk2utt:2: speaker 'spkB' lists 'spkA-u2', which belongs to 'spkA'"),
        ("utt2spk", "spkA-u1 spkA\nspkA-u2 zzz\nspkB-u3 spkB\n", "utt2spk:0: utterance order differs from speaker order"),
        ("text", b"spkA-u1 hello\nspkA-u2 \xff\xfe\nspkB-u3 x\n", "text:2: not valid UTF-8"),
    ],
)
def test_validate_catches(tmp_path, file, content, expected):
    problems = validate(make_dir(tmp_path, {**GOOD, file: content}))
    assert expected in messages(problems)


def test_validate_collapses_repeats_and_missing_files(tmp_path):
    files = {k: v.replace("\n", "\r\n") for k, v in GOOD.items() if k not in ("spk2utt",)}
    msgs = messages(validate(make_dir(tmp_path, files)))
    assert "text:1: CRLF line ending (Windows); Kaldi needs LF (and 2 more lines like it)" in msgs
    assert "spk2utt:0: missing" in msgs
    assert messages(validate(tmp_path / "nope")) == f"{tmp_path / 'nope'}:0: not a directory"
    assert "wav.scp:0: missing" in messages(validate(make_dir(tmp_path, {"text": "a b\n"}, "e")))


@pytest.mark.parametrize(
    "segments, expected",
    [
        ("spkA-u1 rec1 0.0 1.0\nspkA-u2 rec1 2.0 1.5\n", "segments:2: spkA-u2: end 1.5 must be greater than start 2.0"),
        ("spkA-u1 rec1 0.0 1.0\nspkA-u2 recX 0 1\n", "segments:2: spkA-u2: recording 'recX' is not in wav.scp"),
        ("spkA-u1 rec1 -1 1.0\nspkA-u2 rec1 1 2\n", "segments:1: spkA-u1: start -1 must be a finite, non-negative time"),
        ("spkA-u1 rec1 0\nspkA-u2 rec1 1 2\n", "segments:1: spkA-u1: expected 'utt recording start end'"),
    ],
)
def test_validate_bad_segments(tmp_path, segments, expected):
    files = {
        "wav.scp": "rec1 /r/1.wav\n",
        "segments": segments,
        "utt2spk": "spkA-u1 spkA\nspkA-u2 spkA\n",
        "spk2utt": "spkA spkA-u1 spkA-u2\n",
    }
    assert expected in messages(validate(make_dir(tmp_path, files)))


# ---------------------------------------------------------------- fix


def test_fix_sorts_drops_and_backs_up(tmp_path):
    broken = {
        "wav.scp": "spkB-u3 /b/3.wav\r\nspkA-u1 /a/1.wav\r\nspkA-u2 /a/2.wav\r\nspkA-u4 /a/4.wav",
        "text": "spkA-u1 hello\nspkA-u2\nspkB-u3 shalom\nspkA-u4 four\nspkZ-u9 orphan\n",
        "utt2spk": "spkA-u1 spkA\nspkA-u2 spkA\nspkB-u3 spkB\nspkA-u4 spkA\n",
        "utt2dur": "spkA-u1 1.0\nspkA-u2 1.0\nspkB-u3 1.0\nspkA-u4 0\n",
        "spk2utt": "spkA spkA-u1\n",
    }
    d = make_dir(tmp_path, broken)
    assert validate(d)
    assert fix(d) == (2, 4)  # u2: empty transcript, u4: zero duration
    assert validate(d) == []
    assert read_table(d / "text") == {"spkA-u1": "hello", "spkB-u3": "shalom"}
    assert (d / "spk2utt").read_text() == "spkA spkA-u1\nspkB spkB-u3\n"
    backups = list((d / ".backup").iterdir())
    assert len(backups) == 1
    assert (backups[0] / "wav.scp").read_bytes() == broken["wav.scp"].encode()
    fix(d)  # a second fix keeps the first backup
    assert len(list((d / ".backup").iterdir())) == 2


def test_fix_drops_conflicting_duplicates_and_bad_segments(tmp_path):
    files = {
        "wav.scp": "rec1 /r/1.wav\n",
        "segments": "s-a rec1 0 1\ns-b rec1 2 1\ns-c recX 0 1\ns-d rec1 1 2\n",
        "utt2spk": "s-a s\ns-b s\ns-c s\ns-d s\ns-d t\n",
    }
    d = make_dir(tmp_path, files)
    assert fix(d) == (1, 4)
    assert read_table(d / "segments") == {"s-a": "rec1 0 1"}
    assert validate(d) == []


# ---------------------------------------------------------------- load_utterances


def test_load_utterances_from_audio_folder_with_duplicate_basenames(tmp_path, make_wav):
    make_wav("corpus/spk1/a.wav", 0.25)
    make_wav("corpus/spk2/a.wav", 0.5)
    make_wav("corpus/x-y/b.wav", 0.25)
    make_wav("corpus/x/y-b.wav", 0.25)  # sanitises to the same id as x-y/b
    (tmp_path / "corpus" / "broken.wav").write_text("not audio")
    utts = load_utterances(tmp_path / "corpus", lang="el-GR")
    ids = [u.utt_id for u in utts]
    assert len(set(ids)) == 5
    assert "spk1-a" in ids and "spk2-a" in ids
    assert sum(i.startswith("x-y-b-") for i in ids) == 2  # hash suffix on the collision
    by_id = {u.utt_id: u for u in utts}
    assert by_id["spk2-a"].duration == pytest.approx(0.5)
    assert by_id["broken"].duration is None
    assert all(u.lang == "el-GR" for u in utts)
    assert utts == utterances_from_audio_dir(tmp_path / "corpus", lang="el-GR")


def test_load_utterances_dispatches_on_path(tmp_path):
    d = make_dir(tmp_path, GOOD)
    assert [u.utt_id for u in load_utterances(d)] == ["spkA-u1", "spkA-u2", "spkB-u3"]
    m = tmp_path / "m.jsonl"
    m.write_text('{"audio_filepath": "/x.wav", "duration": 1.0, "text": "hi", "lang": "en-US", "utt_id": "x"}\n')
    assert load_utterances(m)[0].text == "hi"
    with pytest.raises(FileNotFoundError):
        load_utterances(tmp_path / "missing")


# ---------------------------------------------------------------- CLI


def test_cli_validate_and_fix(tmp_path, capsys):
    d = make_dir(tmp_path, {**GOOD, "text": "spkA-u2 b\nspkA-u1 a\n"})
    assert main(["data", "validate", str(d)]) == 1
    out = capsys.readouterr().out
    assert f"{d}/text:2: not sorted" in out
    assert f"{d}/text:0: 1 utterances of wav.scp are missing here" in out
    assert main(["data", "fix", str(d)]) == 0
    assert "kept 2 of 3" in capsys.readouterr().out
    assert main(["data", "validate", str(d)]) == 0
