"""Synthetic corpus: text normalisation, locales, determinism, valid Kaldi output."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from asr_adapt.cli.main import main
from asr_adapt.data.augment import CONDITIONS, add_noise, band_limit
from asr_adapt.data.kaldi import read_data_dir, validate
from asr_adapt.data.locales import LOCALES, SPLIT_VARIANTS
from asr_adapt.data.synth import SynthConfig, derive_seed, synthesize
from asr_adapt.data.synth_text import normalise
from asr_adapt.data.tables import read_table

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

TINY = SynthConfig(locales=("en-US", "el-GR", "ar-EG"), utts_per_locale=3, jobs=1, speakers_per_split=2)


def digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root except synth.json and wav.scp (they name the absolute OUT)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("synth.json", "wav.scp")
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "corpus"
    synthesize(out, TINY, progress=False)
    return out


def test_registry_covers_scripts_and_roles():
    specs = [LOCALES.get(n) for n in LOCALES.names()]
    assert len(specs) >= 12
    assert {"Latin", "Greek", "Cyrillic", "Arabic", "Hebrew", "Armenian"} <= {s.script for s in specs}
    assert {s.role for s in specs} == {"head", "tail"}
    assert not set(SPLIT_VARIANTS["train"]) & (set(SPLIT_VARIANTS["dev"]) | set(SPLIT_VARIANTS["test"]))


def test_normalise_keeps_only_speakable_native_script_words():
    ar, el, fa = LOCALES.get("ar-EG"), LOCALES.get("el-GR"), LOCALES.get("fa-IR")
    assert normalise("0669 فردوس Mission، الموركة.", ar) == "فردوس الموركة"
    assert normalise("Βερίνου 066-907, Κέρκυρα!", el) == "βερίνου κέρκυρα"
    assert normalise("شیشه\u200cای بال", fa) == "شیشه\u200cای بال"
    assert normalise("ул. Советов, д. 166", LOCALES.get("ru-RU"), drop_abbreviations=True) == "советов"
    assert normalise("L'homme Zoran-Baum", LOCALES.get("fr-FR")) == "l'homme zoran baum"


def test_tiny_corpus_is_valid_and_complete(tiny):
    for split in TINY.splits:
        assert validate(tiny / split) == [], split
    train = read_data_dir(tiny / "train")
    counts = {loc: sum(u.lang == loc for u in train) for loc in TINY.locales}
    assert counts == {"en-US": 3, "el-GR": 1, "ar-EG": 1}  # tail: max(1, round(3 * 0.25))
    assert len(read_data_dir(tiny / "dev")) == 9
    for u in train:
        assert u.utt_id.startswith(u.speaker + "-")
        assert u.text and not any(ch.isdigit() for ch in u.text)
        assert all(LOCALES.get(u.lang).in_script(ch) for ch in u.text if ch.isalpha())
        wav = u.load()
        assert len(wav) / 16000 == pytest.approx(u.duration, abs=1e-3)
        assert 0.05 < np.abs(wav).max() <= 0.91
    conditions = set(read_table(tiny / "train" / "utt2condition").values())
    assert conditions <= set(CONDITIONS.names())
    meta = json.loads((tiny / "synth.json").read_text())
    assert meta["counts"]["train"]["el-GR"] == 1 and meta["sample_rate"] == 16000


def test_unlabelled_keeps_transcripts_aside(tiny):
    assert not (tiny / "unlabelled" / "text").exists()
    hidden = read_table(tiny / "unlabelled" / ".text_hidden")
    utts = read_data_dir(tiny / "unlabelled")
    assert set(hidden) == {u.utt_id for u in utts} and all(hidden.values())
    assert all(u.text is None for u in utts)


def test_eval_speakers_never_occur_in_train(tiny):
    def variants(split):
        return {u.speaker.split("-")[2] for u in read_data_dir(tiny / split)}

    assert variants("train") <= set(SPLIT_VARIANTS["train"])
    assert variants("dev") <= set(SPLIT_VARIANTS["dev"])
    assert not variants("train") & (variants("dev") | variants("test"))


def test_same_seed_same_bytes_regardless_of_jobs(tiny, tmp_path):
    again = tmp_path / "again"
    synthesize(again, dataclasses.replace(TINY, jobs=2), progress=False)
    assert digest(again) == digest(tiny)
    other = tmp_path / "other"
    synthesize(other, dataclasses.replace(TINY, seed=1, splits=("dev",)), progress=False)
    assert read_table(other / "dev" / "text") != read_table(tiny / "dev" / "text")


def test_more_train_speakers_leave_dev_and_test_byte_identical(tiny, tmp_path):
    more = tmp_path / "more"
    synthesize(more, dataclasses.replace(TINY, train_speakers=3, utts_per_locale=3), progress=False)
    for split in ("dev", "test"):
        a = {k: v for k, v in digest(more).items() if k.startswith((f"{split}/", f"wav/{split}/"))}
        b = {k: v for k, v in digest(tiny).items() if k.startswith((f"{split}/", f"wav/{split}/"))}
        assert a == b and a
    spk = {line.split()[1] for line in (more / "train" / "utt2spk").read_text().splitlines()}
    assert len([s for s in spk if s.startswith("en-US")]) == 3
    # The same words (utterance ids name the speaker, so compare the transcripts, not the ids).
    assert sorted(read_table(more / "train" / "text").values()) == sorted(read_table(tiny / "train" / "text").values())


def test_refuses_to_overwrite(tiny):
    with pytest.raises(FileExistsError, match="overwrite"):
        synthesize(tiny, TINY, progress=False)


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "c"
    rc = main(["synth", str(out), "--locales", "he-IL,hy-AM", "--utts-per-locale", "2", "--splits", "test",
               "--jobs", "1", "--conditions", "telephone"])
    assert rc == 0
    assert "test: 4 utterances, 2 locales, valid" in capsys.readouterr().out
    assert set(read_table(out / "test" / "utt2condition").values()) == {"telephone"}
    assert sorted(p.name for p in out.iterdir()) == ["synth.json", "test", "wav"]
    assert main(["data", "validate", str(out / "test")]) == 0


def test_conditions():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    speech = (0.5 * np.sin(2 * np.pi * 997 * t)).astype(np.float32)  # no samples exactly at zero
    noisy = add_noise(speech, 10.0, rng)
    snr = 10 * np.log10(np.mean(speech**2) / np.mean((noisy - speech) ** 2))
    assert snr == pytest.approx(10.0, abs=0.3)
    low = (0.5 * np.sin(2 * np.pi * 100 * t)).astype(np.float32)
    assert np.abs(band_limit(low, 16000, 300, 3400)).max() < 0.1  # 100 Hz is outside the telephone band
    assert np.abs(band_limit(speech, 16000, 300, 3400)[2000:-2000]).max() > 0.45  # ~1 kHz passes


def test_derive_seed_is_stable():
    # Pinned literals: a change of the derivation (and so of every corpus's bytes) must fail here.
    assert derive_seed(0, "el-GR", "train", 3) == 2457351580110141204
    assert derive_seed(1, "a") == 1836665311988765781
    assert derive_seed(0, "el-GR", "train", 3) != derive_seed(0, "el-GR", "train", 4)
    assert 0 <= derive_seed(1, "a") < 2**63
