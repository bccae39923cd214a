"""Degradations: reverberation decays as asked, noise lands at the asked SNR, channels band-limit."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf

from asr_adapt.data import degrade
from asr_adapt.data.augment import active_power, mix_at_snr
from asr_adapt.data.degrade import (
    CHANNELS,
    NOISES,
    align,
    available_channels,
    reverberate,
    synthetic_rir,
)
from asr_adapt.data.variety import VARIETY, Draw, describe, make_babble, speak_with_pauses

SR = 16000


def speechlike(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """Harmonics of a gliding 120-200 Hz voice, amplitude-modulated into syllables, with silences
    at both ends: broadband like speech, with pauses that must not count towards its power."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 80 * t / seconds
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 30))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None)
    wav = 0.3 * voiced * envelope + 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return np.pad(wav, (SR // 5, SR // 5)).astype(np.float32)


def band_energy(wav: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(wav.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(len(wav), 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum())


def ringing(wav: np.ndarray, end: int) -> float:
    """Seconds after sample ``end`` (where the dry signal has died away) that ``wav`` stays above
    -50 dB of its peak."""
    return (np.nonzero(np.abs(wav) > np.abs(wav).max() * 10 ** (-50 / 20))[0][-1] - end) / SR


def test_rir_decays_at_the_asked_rt60():
    for rt60 in (0.3, 0.8):
        rir = synthetic_rir(rt60, SR, np.random.default_rng(1), drr_db=0.0)
        tail = rir[1:] ** 2
        edc = 10 * np.log10(np.cumsum(tail[::-1])[::-1] / tail.sum())  # Schroeder energy decay curve
        t = np.arange(len(edc)) / SR
        fit = (edc < -5) & (edc > -35)
        slope = np.polyfit(t[fit], edc[fit], 1)[0]  # dB per second
        assert -60 / slope == pytest.approx(rt60, rel=0.1)
        assert rir[0] == 1.0 and np.sum(tail) == pytest.approx(1.0)  # DRR 0 dB: equal energies


def test_reverberation_lengthens_the_energy_decay():
    dry = speechlike()
    end = np.nonzero(np.abs(dry) > np.abs(dry).max() * 1e-3)[0][-1]  # -60 dB: the dry sound is over
    short = reverberate(dry, synthetic_rir(0.3, SR, np.random.default_rng(0)))
    long = reverberate(dry, synthetic_rir(1.0, SR, np.random.default_rng(0)))
    assert len(long) > len(short) > len(dry)
    assert ringing(dry, end) <= 0
    assert ringing(long, end) > ringing(short, end) + 0.2 > 0.25
    assert np.corrcoef(short[: len(dry)], dry)[0, 1] > 0.5  # the direct path still carries the speech


@pytest.mark.parametrize("kind", NOISES.names())
@pytest.mark.parametrize("snr", [0.0, 7.5, 20.0])
def test_noise_lands_at_the_asked_snr(kind, snr):
    speech = speechlike()
    noisy = mix_at_snr(speech, NOISES.get(kind)(len(speech), np.random.default_rng(3)), snr)
    measured = 10 * np.log10(active_power(speech) / np.mean((noisy - speech).astype(np.float64) ** 2))
    assert measured == pytest.approx(snr, abs=1.0)


def test_noise_colours_have_their_spectral_slopes():
    # Power in 50-500 Hz over power in 4000-7500 Hz for a spectrum falling as 1/f**k:
    # white (k=0) 450/3500, pink (k=1) ln(10)/ln(7500/4000), brown (k=2) (1/50-1/500)/(1/4000-1/7500).
    expected = {"white": 450 / 3500, "pink": np.log(10) / np.log(7500 / 4000),
                "brown": (1 / 50 - 1 / 500) / (1 / 4000 - 1 / 7500)}
    for kind, ratio in expected.items():
        noise = NOISES.get(kind)(SR * 4, np.random.default_rng(0))
        assert band_energy(noise, 50, 500) / band_energy(noise, 4000, 7500) == pytest.approx(ratio, rel=0.25), kind


def test_babble_is_short_talkers_looped_to_length_at_the_asked_snr():
    speech = speechlike(2.0)
    talkers = [speechlike(0.5, seed=i) for i in range(4)]
    babble = make_babble(lambda i: talkers[i], len(speech), 4, np.random.default_rng(0))
    assert babble.shape == speech.shape and np.abs(babble[-SR // 2:]).max() > 0  # looped, not zero-padded
    noisy = mix_at_snr(speech, babble, 10.0)
    assert 10 * np.log10(active_power(speech) / np.mean((noisy - speech) ** 2)) == pytest.approx(10.0, abs=1.0)


@pytest.mark.parametrize("name", ["telephone", "gsm"])
def test_narrowband_channels_leave_nothing_above_4khz(name):
    if name not in available_channels():
        pytest.skip(f"this libsndfile cannot write {name}")
    wav = speechlike() + 0.05 * np.random.default_rng(0).standard_normal(len(speechlike())).astype(np.float32)
    out, label = CHANNELS.get(name).apply(wav, SR, np.random.default_rng(0))
    assert label == name and len(out) == len(wav)
    assert band_energy(wav, 4200, 8000) / band_energy(wav, 0, 8000) > 0.05
    assert band_energy(out, 4200, 8000) / band_energy(out, 0, 8000) < 1e-4
    assert band_energy(out, 0, 250) / band_energy(out, 0, 8000) < 0.01  # the 300 Hz high-pass
    # Still the same speech, in time: strongly correlated with the band-limited input.
    ref = degrade.band_limit(wav, SR, *degrade.TELEPHONE_BAND_HZ)
    assert np.corrcoef(out, ref)[0, 1] > 0.8


@pytest.mark.parametrize("name", ["mp3", "opus"])
def test_lossy_codecs_run_at_low_bitrates_without_shifting_time(name):
    if name not in available_channels():
        pytest.skip(f"this libsndfile cannot write {name}")
    wav = speechlike(3.0)
    out, label = CHANNELS.get(name).apply(wav, SR, np.random.default_rng(0))
    kbps = int(label.split(":")[1].removesuffix("kbps"))
    assert label.startswith(f"{name}:") and 6 <= kbps <= 40
    assert len(out) == len(wav) and not np.array_equal(out, wav)
    assert np.corrcoef(out, wav)[0, 1] > 0.9  # aligned: the codec delay is removed
    again, _ = CHANNELS.get(name).apply(wav, SR, np.random.default_rng(0))
    assert np.array_equal(out, again)


def test_align_removes_a_known_delay():
    ref = speechlike()
    delayed = np.concatenate([np.zeros(1105, np.float32), ref, np.zeros(300, np.float32)])
    assert np.array_equal(align(delayed, ref), ref)


def test_a_codec_this_libsndfile_lacks_is_skipped_with_a_log_line(monkeypatch, caplog):
    monkeypatch.setattr(sf, "check_format", lambda fmt, subtype=None: fmt != "MP3")
    available_channels.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="asr_adapt.data.degrade"):
            names = available_channels()
        assert "mp3" not in names and {"telephone", "gsm", "opus"} <= set(names)
        assert "skipping channel mp3" in caplog.text
        draws = [VARIETY.get("wide").draw(5, np.random.default_rng(s)).channel for s in range(200)]
        assert "mp3" not in draws and "opus" in draws
    finally:
        available_channels.cache_clear()


def test_none_preset_draws_nothing_and_consumes_no_randomness():
    rng = np.random.default_rng(5)
    assert VARIETY.get("none").draw(6, rng) == Draw()
    assert rng.random() == np.random.default_rng(5).random()
    assert describe(Draw()) == "dry"


def test_wide_preset_draws_every_stage_and_describes_it():
    draws = [VARIETY.get("wide").draw(6, np.random.default_rng(s)) for s in range(300)]
    assert {d.noise for d in draws} >= {None, "white", "pink", "brown", "babble"}
    assert {d.channel for d in draws} >= {None} | set(available_channels())
    assert 0.35 < np.mean([d.rt60 is not None for d in draws]) < 0.65
    assert all(0 <= d.snr_db <= 25 for d in draws) and any(any(d.pauses) for d in draws)
    d = Draw(pauses=(0.0, 0.4, 0.2), rt60=0.5, drr_db=3.0, noise="babble", snr_db=7.25, talkers=4, channel="mp3")
    assert describe(d, "mp3:16kbps") == "pauses=2 rt60=0.50 drr=3.0dB noise=babble snr=7.2dB talkers=4 channel=mp3:16kbps"


def test_pauses_split_the_text_into_phrases_with_silence_between():
    said = []

    def speak(text):
        said.append(text)
        return np.ones(100, np.float32)

    out = speak_with_pauses(speak, "a b c d", (0.0, 0.25, 0.0))
    assert said == ["a b", "c d"] and len(out) == 200 + 4000 and not out[100:4100].any()
    said.clear()
    speak_with_pauses(speak, "a  b", (0.0,))
    assert said == ["a  b"]  # no pause: the text is spoken exactly as given
