"""Corpus preparers on fabricated Common Voice and FLEURS releases (see fabricate.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from fabricate import make_commonvoice, make_fleurs

from asr_adapt.cli.main import main
from asr_adapt.data.audio import load_audio
from asr_adapt.data.corpora import CORPORA, SKIPPED_FILE, CommonVoiceConfig, FleursConfig, bcp47
from asr_adapt.data.kaldi import load_utterances, validate
from asr_adapt.data.tables import read_table


@pytest.fixture(scope="module")
def cv_release(tmp_path_factory) -> Path:
    return make_commonvoice(tmp_path_factory.mktemp("cv") / "cv-corpus")


@pytest.fixture(scope="module")
def fleurs_release(tmp_path_factory) -> Path:
    return make_fleurs(tmp_path_factory.mktemp("fleurs") / "data")


@pytest.fixture(scope="module")
def cv_out(cv_release, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("cv_out")
    return out, CORPORA.get("commonvoice").prepare(cv_release, out, CommonVoiceConfig(jobs=2))


@pytest.fixture(scope="module")
def fleurs_out(fleurs_release, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("fleurs_out")
    return out, CORPORA.get("fleurs").prepare(fleurs_release, out, FleursConfig())


def skipped_rows(d: Path) -> list[dict]:
    with open(d / SKIPPED_FILE, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def by_lang(d: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for lang in read_table(d / "utt2lang").values():
        counts[lang] = counts.get(lang, 0) + 1
    return counts


@pytest.mark.parametrize("tag, want", [
    ("el_gr", "el-GR"), ("cmn_hans_cn", "cmn-Hans-CN"), ("pt-BR", "pt-BR"), ("sv-SE", "sv-SE"),
    ("el", "el"), ("nan-tw", "nan-TW"), ("rm-sursilv", "rm-sursilv"), ("es_419", "es-419"),
])
def test_bcp47(tag, want):
    assert bcp47(tag) == want


def test_commonvoice_dirs_validate_with_expected_counts(cv_out):
    out, report = cv_out
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["dev", "test", "train", "unlabelled"]
    for split in ("train", "dev", "test", "unlabelled"):
        assert validate(out / split) == [], split
    assert by_lang(out / "train") == {"el": 3, "pt-BR": 2}
    assert by_lang(out / "dev") == {"el": 1, "pt-BR": 1}
    assert by_lang(out / "test") == {"el": 1, "pt-BR": 1}
    assert by_lang(out / "unlabelled") == {"el": 2, "pt-BR": 1}
    assert dict(report.splits["train"].kept) == {"el": 3, "pt-BR": 2}
    assert dict(report.splits["train"].skipped) == {("el", "empty"): 1}
    assert dict(report.splits["test"].skipped) == {("pt-BR", "missing"): 1}
    summary = json.loads((out / "prepare.json").read_text())
    assert summary["splits"]["test"]["skipped"] == {"pt-BR": {"missing": 1}}


def test_commonvoice_skipped_reasons(cv_out):
    out, _ = cv_out
    train = skipped_rows(out / "train")
    assert [(r["locale"], r["reason"], Path(r["source"]).name) for r in train] == [
        ("el", "empty", "common_voice_el_4.mp3")]
    test = skipped_rows(out / "test")
    assert [(r["locale"], r["reason"], Path(r["source"]).name) for r in test] == [
        ("pt-BR", "missing", "common_voice_pt_5.mp3")]
    assert skipped_rows(out / "dev") == []
    # skipped utterances appear in no table
    assert not any("common_voice_el_4" in u for u in read_table(out / "train" / "wav.scp"))


def test_commonvoice_text_speakers_and_ids(cv_out):
    out, _ = cv_out
    text = {Path(read_table(out / "train" / "wav.scp")[u]).stem: t
            for u, t in read_table(out / "train" / "text").items()}
    assert text["common_voice_el_2"] == "Τι ώρα είναι;"
    assert text["common_voice_pt_2"] == '"Olá", disse ele.'  # quotes survive (QUOTE_NONE), reordered columns
    utt2spk = read_table(out / "train" / "utt2spk")
    for utt, spk in utt2spk.items():
        assert utt.startswith(spk + "-") and utt.endswith(("common_voice_el_1", "common_voice_el_2",
                                                           "common_voice_el_3", "common_voice_pt_1",
                                                           "common_voice_pt_2"))
    spk = {Path(u).name.rsplit("-", 1)[-1]: s for u, s in utt2spk.items()}
    # clips 1 and 2 share client aaa1; clip 3 is another client; locale prefixes the speaker
    assert spk["common_voice_el_1"] == spk["common_voice_el_2"] != spk["common_voice_el_3"]
    assert spk["common_voice_el_1"].startswith("el-") and spk["common_voice_pt_1"].startswith("pt-BR-")
    # the unlabelled client aaa1 is the same speaker id as in train
    assert spk["common_voice_el_1"] in read_table(out / "unlabelled" / "spk2utt")


def test_commonvoice_unlabelled_is_validated_minus_splits(cv_out):
    out, _ = cv_out
    d = out / "unlabelled"
    assert not (d / "text").exists()
    clips = sorted(Path(p).name for p in read_table(d / "wav.scp").values())
    assert clips == ["common_voice_el_7.mp3", "common_voice_el_8.mp3", "common_voice_pt_6.mp3"]
    assert all(u.text is None for u in load_utterances(d))


def test_prepared_mp3_loads(cv_out):
    out, _ = cv_out
    utt = load_utterances(out / "dev")[0]
    assert utt.audio.endswith(".mp3") and utt.lang == "el"
    wav = load_audio(utt.audio)
    assert wav.dtype == np.float32 and np.abs(wav).max() > 0.1
    assert abs(len(wav) / 16000 - utt.duration) < 0.1  # header duration matches the decoded audio


def test_commonvoice_locale_filter_and_missing_locale(cv_release, tmp_path):
    report = CORPORA.get("commonvoice").prepare(cv_release, tmp_path / "o", CommonVoiceConfig(locales=("pt-br",)))
    assert set(by_lang(tmp_path / "o" / "train")) == {"pt-BR"}
    assert set(report.splits["unlabelled"].kept) == {"pt-BR"}
    with pytest.raises(ValueError, match="not in the release.*el, pt-BR"):
        CORPORA.get("commonvoice").prepare(cv_release, tmp_path / "o2", CommonVoiceConfig(locales=("de",)))


def test_refuses_to_overwrite_without_flag(cv_release, tmp_path):
    prepare = CORPORA.get("commonvoice").prepare
    prepare(cv_release, tmp_path, CommonVoiceConfig(locales=("el",), unlabelled=False))
    with pytest.raises(FileExistsError):
        prepare(cv_release, tmp_path, CommonVoiceConfig(locales=("el",)))
    prepare(cv_release, tmp_path, CommonVoiceConfig(locales=("pt-BR",), overwrite=True, unlabelled=False))
    assert set(by_lang(tmp_path / "train")) == {"pt-BR"}


def test_missing_required_column_is_named(tmp_path):
    d = tmp_path / "rel" / "el"
    (d / "clips").mkdir(parents=True)
    (d / "train.tsv").write_text("client_id\tpath\tup_votes\nx\ta.mp3\t1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="sentence"):
        CORPORA.get("commonvoice").prepare(tmp_path / "rel", tmp_path / "out", CommonVoiceConfig(unlabelled=False))


def test_fleurs_dirs_validate_with_expected_counts(fleurs_out):
    out, report = fleurs_out
    for split in ("train", "dev", "test"):
        assert validate(out / split) == [], split
    assert not (out / "unlabelled").exists()
    assert by_lang(out / "train") == {"cmn-Hans-CN": 1, "el-GR": 4}
    assert by_lang(out / "test") == {"cmn-Hans-CN": 1, "el-GR": 1}
    assert dict(report.splits["test"].skipped) == {("el-GR", "unreadable"): 1}
    rows = skipped_rows(out / "test")
    assert [(r["utt_id"], r["reason"]) for r in rows] == [("el-GR-6-301", "unreadable")]
    assert rows[0]["detail"]  # libsndfile's message is kept


def test_fleurs_ids_unique_when_rows_share_files(fleurs_out):
    out, _ = fleurs_out
    wav = read_table(out / "train" / "wav.scp")
    assert sorted(wav) == ["cmn-Hans-CN-7-400", "el-GR-1-100", "el-GR-1-101", "el-GR-2-102", "el-GR-3-102"]
    assert wav["el-GR-2-102"] == wav["el-GR-3-102"]
    text = read_table(out / "train" / "text")
    assert text["el-GR-2-102"] == 'Είπε "ναι".' and text["el-GR-3-102"] == "Ίδιο αρχείο, άλλη πρόταση."
    assert text["cmn-Hans-CN-7-400"] == "你好，世界。"


def test_fleurs_normalized_text(fleurs_release, tmp_path):
    CORPORA.get("fleurs").prepare(fleurs_release, tmp_path, FleursConfig(locales=("el-GR",), text="normalized"))
    assert read_table(tmp_path / "train" / "text")["el-GR-1-100"] == "καλημέρα κόσμε"
    with pytest.raises(ValueError, match="raw, normalized"):
        FleursConfig(text="cased")


def test_cli_end_to_end(cv_release, fleurs_release, tmp_path, capsys):
    assert main(["prepare", "commonvoice", str(cv_release), str(tmp_path / "cv"), "--locales", "el",
                 "--no-unlabelled", "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "empty=1" in printed and "skipped 1 row(s)" in printed
    assert sorted(p.name for p in (tmp_path / "cv").iterdir() if p.is_dir()) == ["dev", "test", "train"]
    assert validate(tmp_path / "cv" / "train") == []
    # a second run refuses, --overwrite replaces
    assert main(["prepare", "commonvoice", str(cv_release), str(tmp_path / "cv"), "--locales", "el"]) == 1
    assert "already exist" in capsys.readouterr().err
    assert main(["prepare", "fleurs", str(fleurs_release), str(tmp_path / "fl"), "--text", "normalized",
                 "--locales", "cmn_hans_cn"]) == 0
    assert read_table(tmp_path / "fl" / "dev" / "text") == {"cmn-Hans-CN-8-500": "车站在哪里"}
    summary = json.loads((tmp_path / "fl" / "prepare.json").read_text())
    assert summary["config"]["text"] == "normalized" and summary["corpus"] == "fleurs"
