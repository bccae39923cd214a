"""Synthetic corpus with several engines and variety: recorded per utterance, held out, deterministic."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from asr_adapt.cli.main import main
from asr_adapt.data.kaldi import read_data_dir, validate
from asr_adapt.data.locales import LOCALES
from asr_adapt.data.synth import SynthConfig, plan, synthesize
from asr_adapt.data.tables import read_table
from asr_adapt.data.tts_engines import ENGINES, FESTIVAL_VOICES

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="needs flite (apt-get install flite)")

EN = SynthConfig(locales=("en-US",), utts_per_locale=2, jobs=1, speakers_per_split=2, splits=("train", "dev", "test"))


def digest(root: Path, prefix: str = "") -> dict[str, str]:
    """sha256 of the files under root (except synth.json and wav.scp, which name OUT) whose path
    relative to root starts with one of the comma-separated ``prefix``es."""
    prefixes = tuple(prefix.split(","))
    return {
        rel: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("synth.json", "wav.scp")
        and (rel := p.relative_to(root).as_posix()).startswith(prefixes)
    }


def test_defaults_keep_the_corpus_bytes_of_before(tmp_path):
    # Made with the generator as it was before engines and variety existed (same config, seed 0).
    synthesize(tmp_path, SynthConfig(locales=("el-GR",), utts_per_locale=3, jobs=1, speakers_per_split=2,
                                     splits=("dev",)), progress=False)
    wav = tmp_path / "wav" / "dev" / "el-GR" / "el-GR-m6-r155-p55-dev00002.wav"
    assert hashlib.sha256(wav.read_bytes()).hexdigest() == \
        "4aa48a7c22e08c3686af606efae6c8e40246088179f99c37f1af68f4626e28a3"
    assert set(read_table(tmp_path / "dev" / "utt2engine").values()) == {"espeak-ng"}
    assert not (tmp_path / "dev" / "utt2variety").exists()


def test_config_rejects_bad_engine_settings():
    with pytest.raises(KeyError, match="synthesis engine"):
        SynthConfig(engines=("nope",))
    with pytest.raises(ValueError, match="at least two engines"):
        SynthConfig(engines=("espeak-ng",), holdout_engine="espeak-ng")
    with pytest.raises(ValueError, match="one of"):
        SynthConfig(engines=("espeak-ng", "flite"), holdout_engine="festival")
    with pytest.raises(KeyError, match="variety preset"):
        SynthConfig(variety="extreme")


def test_engine_voice_tables_keep_held_out_voices_out_of_train():
    for name, engine in ENGINES.items():
        for tag in LOCALES.names():
            train = set(engine.voices(tag, "train")) | set(engine.voices(tag, "unlabelled"))
            assert not train & (set(engine.voices(tag, "dev")) | set(engine.voices(tag, "test"))), (name, tag)
    # flite and festival share two speakers (kal, slt): slt is held out in both.
    flite, festival = ENGINES.get("flite"), ENGINES.get("festival")
    assert "slt" in flite.voices("en-US", "test") and "slt" not in festival.table["en-US"]["train"]
    assert set(FESTIVAL_VOICES) == {v for t in festival.table.values() for vs in t.values() for v in vs}


def test_plan_alternates_engines_and_holds_one_out(tmp_path):
    both = dataclasses.replace(EN, engines=("espeak-ng", "flite"), utts_per_locale=4, speakers_per_split=4)
    jobs = plan(both, tmp_path)
    for split in ("train", "dev", "test"):
        assert {j.engine for j in jobs if j.split == split} == {"espeak-ng", "flite"}
    held = plan(dataclasses.replace(both, holdout_engine="flite"), tmp_path)
    assert {j.engine for j in held if j.split == "train"} == {"espeak-ng"}
    assert {j.engine for j in held if j.split in ("dev", "test")} == {"flite"}
    assert {j.variant for j in held if j.split == "dev"} <= {"rms"} and {j.variant for j in held if j.split == "test"} == {"slt"}
    # A held-out engine that does not speak a locale leaves that locale's dev/test to the others.
    mixed = plan(dataclasses.replace(both, locales=("en-US", "el-GR"), holdout_engine="flite"), tmp_path)
    assert {j.engine for j in mixed if j.split == "dev" and j.locale == "el-GR"} == {"espeak-ng"}
    assert {j.engine for j in mixed if j.split == "train"} == {"espeak-ng"}


def test_holding_out_espeak_leaves_its_dev_and_test_as_they_were(tmp_path):
    # The held-out engine keeps its own dev/test speaker draw, so its eval sets equal the one-engine corpus's.
    one = plan(EN, tmp_path)
    held = plan(dataclasses.replace(EN, engines=("espeak-ng", "flite"), holdout_engine="espeak-ng"), tmp_path)
    assert [j for j in one if j.split != "train"] == [j for j in held if j.split != "train"]


def test_named_espeak_variants_add_train_voices_only(tmp_path):
    named = ENGINES.get("espeak-ng-named")
    numbered = {v for s in ("train", "dev", "test") for v in ENGINES.get("espeak-ng").voices("en-US", s)}
    assert len(named.voices("en-US", "train")) >= 40 and not set(named.voices("en-US", "train")) & numbered
    assert named.voices("en-US", "dev") == named.voices("en-US", "test") == ()
    # Adding the engine changes train only: dev/test stay the espeak-ng corpus's, draw for draw.
    both = plan(dataclasses.replace(EN, engines=("espeak-ng", "espeak-ng-named"), speakers_per_split=4), tmp_path)
    assert [j for j in plan(EN, tmp_path) if j.split != "train"] == [j for j in both if j.split != "train"]
    assert {j.engine for j in both if j.split == "train"} == {"espeak-ng", "espeak-ng-named"}
    spec = LOCALES.get("en-US")
    a = named.speak("hello world", spec, "klatt3", 175, 50)
    b = ENGINES.get("espeak-ng").speak("hello world", spec, "m1", 175, 50)
    assert a.size > 8000 and np.abs(a).max() > 0.01 and (a.size != b.size or not np.allclose(a, b))


@needs_flite
def test_engines_and_holdout_are_recorded_per_utterance(tmp_path):
    out = tmp_path / "c"
    rc = main(["synth", str(out), "--locales", "en-US", "--utts-per-locale", "2", "--splits", "train,dev,test",
               "--jobs", "1", "--speakers-per-split", "2", "--engines", "espeak-ng,flite", "--holdout-engine", "flite"])
    assert rc == 0
    for split in ("train", "dev", "test"):
        assert validate(out / split) == []
        engines = read_table(out / split / "utt2engine")
        assert set(engines) == {u.utt_id for u in read_data_dir(out / split)}
        assert set(engines.values()) == ({"espeak-ng"} if split == "train" else {"flite"})
        for utt, engine in engines.items():
            assert ("-flite_" in utt) == (engine == "flite")
    meta = json.loads((out / "synth.json").read_text())
    assert meta["engines"] == ["espeak-ng", "flite"] and meta["holdout_engine"] == "flite"


@needs_flite
def test_flite_speaks_slower_at_a_lower_rate_and_shifts_pitch():
    flite, spec = ENGINES.get("flite"), LOCALES.get("en-US")
    fast = flite.speak("the quick brown fox jumps", spec, "slt", 230, 50)
    slow = flite.speak("the quick brown fox jumps", spec, "slt", 115, 50)
    assert fast.dtype == np.float32 and np.abs(fast).max() > 0.05
    assert len(slow) / len(fast) == pytest.approx(2.0, rel=0.25)
    high = flite.speak("the quick brown fox jumps", spec, "slt", 230, 80)
    assert len(high) == pytest.approx(len(fast), rel=0.02) and not np.allclose(high[: len(fast)], fast[: len(high)])


@pytest.mark.skipif(shutil.which("text2wave") is None, reason="needs festival")
@pytest.mark.parametrize("locale,voice,text", [
    ("cs-CZ", "dita", "dobrý den jak se máte"),
    ("it-IT", "pc", "buongiorno città"),
    ("ru-RU", "msu", "привет как дела"),
])
def test_festival_speaks_each_locale_in_its_encoding(locale, voice, text):
    festival = ENGINES.get("festival")
    if not festival.installed(voice):
        pytest.skip(f"festival voice {voice} is not installed")
    wav = festival.speak(text, LOCALES.get(locale), voice, 175, 50)
    # A wrong encoding makes festival spell out bytes (over twice as long) or fail.
    assert 0.5 < len(wav) / 16000 < 3 and np.abs(wav).max() > 0.05


def test_wide_variety_is_recorded_and_deterministic(tmp_path):
    wide = dataclasses.replace(EN, variety="wide", conditions={"clean": 1.0}, utts_per_locale=6, splits=("dev",))
    synthesize(tmp_path / "a", wide, progress=False)
    synthesize(tmp_path / "b", dataclasses.replace(wide, jobs=2), progress=False)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    variety = read_table(tmp_path / "a" / "dev" / "utt2variety")
    assert len(variety) == 6 and len(set(variety.values())) > 1
    assert any("noise=" in v or "channel=" in v or "rt60=" in v for v in variety.values())
    speakers = {u.speaker for u in read_data_dir(tmp_path / "a" / "dev")}
    rates = {int(s.split("-r")[1][:3]) for s in speakers}
    assert rates <= {95, 115, 135, 155, 175, 200, 230, 260}
    # Same words as the plain corpus: variety changes how they sound, not what is said.
    synthesize(tmp_path / "plain", dataclasses.replace(wide, variety="none"), progress=False)
    assert sorted(read_table(tmp_path / "a" / "dev" / "text").values()) == \
        sorted(read_table(tmp_path / "plain" / "dev" / "text").values())


@pytest.mark.skipif(shutil.which("sox") is None, reason="needs sox")
def test_festival_crash_falls_back_to_the_neutral_rate_and_a_sox_tempo(monkeypatch):
    from asr_adapt.data import tts_engines

    calls = []

    def text2wave(v, data, stretch):
        calls.append(stretch)
        if stretch != 1.0:
            raise tts_engines.EngineCrashed("text2wave died from signal 11")
        t = np.arange(16000) / 16000
        return (0.3 * np.sin(2 * np.pi * 200 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)

    monkeypatch.setattr(tts_engines.Festival, "_text2wave", staticmethod(text2wave))
    wav = ENGINES.get("festival").speak("non", LOCALES.get("it-IT"), "lp", 140, 50)
    assert calls == [pytest.approx(175 / 140), 1.0]
    assert len(wav) / 16000 == pytest.approx(175 / 140, rel=0.02)  # the asked rate, by tempo change
