"""Case 2: bad data dirs and text. What `asr-adapt data validate` catches beyond
tests/data/test_data_kaldi.py, and references that cannot be scored or that need care
(whitespace-only, emptied by normalisation, right-to-left, combining marks, CJK) through
`asr-adapt score`."""

from __future__ import annotations

import json
import unicodedata

import pytest

from asr_adapt.cli.main import main

WAV = "u1 /a/1.wav\nu2 /a/2.wav\nu3 /a/3.wav\n"
GOOD = {
    "wav.scp": WAV,
    "text": "u1 hello world\nu2 καλημέρα κόσμε\nu3 שלום עולם\n",
    "utt2spk": "u1 s\nu2 s\nu3 s\n",
    "spk2utt": "s u1 u2 u3\n",
    "utt2lang": "u1 en-US\nu2 el-GR\nu3 he-IL\n",
}


def _dir(root, files):
    d = root / "data"
    d.mkdir(exist_ok=True)
    for name, content in files.items():
        (d / name).write_text(content, encoding="utf-8")
    return d


@pytest.mark.parametrize(
    "file, content, expected",
    [
        ("text", "u1 hello world\nu2 \t  \nu3 שלום\n", "text:2: u2: empty transcript"),  # whitespace only
        ("text", "u1 hello world\nu2 \u00a0\nu3 שלום\n", "text:2: u2: empty transcript"),  # no-break space
        ("utt2lang", "u1 english\nu2 el-GR\nu3 he-IL\n", "utt2lang:1: u1: locale 'english' is not a BCP-47 tag"),
        ("utt2lang", "u1 en_US\nu2 el-GR\nu3 he-IL\n", "utt2lang:1: u1: locale 'en_US' is not a BCP-47 tag"),
        ("text", "\ufeffu1 hello world\nu2 a\nu3 b\n", "text:1: utterance '\\ufeffu1' is not in wav.scp"),  # BOM
        ("wav.scp", "u1\nu2 /a/2.wav\nu3 /a/3.wav\n", "wav.scp:1: u1: empty audio path"),
        ("utt2dur", "u1 nan\nu2 1\nu3 inf\n", "utt2dur:1: u1: duration 'nan' must be positive"),
    ],
)
def test_validate_catches(tmp_path, capsys, file, content, expected):
    d = _dir(tmp_path, {**GOOD, file: content})
    assert main(["data", "validate", str(d)]) == 1
    assert expected in capsys.readouterr().out


def test_validate_accepts_script_subtags_and_bare_languages(tmp_path, capsys):
    d = _dir(tmp_path, {**GOOD, "utt2lang": "u1 en\nu2 el-GR\nu3 zh-Hans-CN\n"})
    assert main(["data", "validate", str(d)]) == 0, capsys.readouterr().out


def _score(tmp_path, refs: dict[str, tuple[str, str]], hyps: dict[str, str], capsys):
    """Score through the CLI: refs as a Kaldi data dir with utt2lang, hyps as decode output JSONL."""
    ids = sorted(refs)
    d = _dir(tmp_path, {
        "wav.scp": "".join(f"{u} /a/{u}.wav\n" for u in ids),
        "text": "".join(f"{u} {refs[u][0]}\n" for u in ids),
        "utt2lang": "".join(f"{u} {refs[u][1]}\n" for u in ids),
        "utt2spk": "".join(f"{u} {u}\n" for u in ids),
        "spk2utt": "".join(f"{u} {u}\n" for u in ids),
    })
    hyp = tmp_path / "dec" / "hyp.jsonl"
    hyp.parent.mkdir(exist_ok=True)
    hyp.write_text("".join(json.dumps({"utt_id": u, "text": t}, ensure_ascii=False) + "\n" for u, t in hyps.items()),
                   encoding="utf-8")
    capsys.readouterr()
    rc = main(["score", str(d), str(hyp), "-o", str(tmp_path / "score"), "--bootstrap", "0", "--no-plots",
               "--name", "sys"])
    return rc, capsys.readouterr()


def test_whitespace_only_reference_is_an_error_naming_the_utterance(tmp_path, capsys):
    refs = {"ok": ("a b", "en-US"), "blank7": ("\u3000\u00a0", "en-US")}  # ideographic + no-break space
    rc, cap = _score(tmp_path, refs, {"ok": "a b", "blank7": "x"}, capsys)
    assert rc == 1 and "'blank7'" in cap.err and "empty reference" in cap.err


def test_reference_emptied_by_normalisation_is_an_error(tmp_path, capsys):
    refs = {"ok": ("a b", "en-US"), "noise3": ("[laughter] ... !!", "en-US")}
    rc, cap = _score(tmp_path, refs, {"ok": "a b", "noise3": ""}, capsys)
    assert rc == 1 and "'noise3'" in cap.err and "empty after normaliser" in cap.err


def test_rtl_combining_marks_and_cjk_score_correctly(tmp_path, capsys):
    cafe_nfd = unicodedata.normalize("NFD", "καφές café")
    refs = {
        "ar1": ("مرحبا بالعالم", "ar-EG"),
        "he1": ("שלום עולם", "he-IL"),
        "el1": (unicodedata.normalize("NFC", "καφές café"), "el-GR"),
        "zh1": ("我爱北京", "zh-CN"),
    }
    hyps = {
        "ar1": "مرحبا بالعالم",  # identical right-to-left text
        "he1": "שלום עולמי",  # one word differs
        "el1": cafe_nfd,  # same words, combining marks decomposed
        "zh1": "我爱上海",  # two characters differ
    }
    rc, cap = _score(tmp_path, refs, hyps, capsys)
    assert rc == 0, cap.err
    out = cap.out
    assert "ar-EG %WER 0.00 [ 0 / 2," in out
    assert "he-IL %WER 50.00 [ 1 / 2, 0 ins, 0 del, 1 sub ]" in out
    assert "el-GR %WER 0.00 [ 0 / 2," in out  # NFD vs NFC is not an error
    assert "zh-CN %CER 50.00 [ 2 / 4, 0 ins, 0 del, 2 sub ]" in out
