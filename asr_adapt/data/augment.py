"""Acoustic conditions applied to clean speech: additive noise, telephone band-limiting.

Each condition is a function ``(wav, sample_rate, rng) -> wav`` registered in
:data:`CONDITIONS`; ``wav`` is (N,) float32 and ``rng`` a ``numpy.random.Generator``, so
the result is a pure function of the input and the generator's seed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import signal

from asr_adapt.registry import Registry

Condition = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
CONDITIONS: Registry[Condition] = Registry("acoustic condition")

SNR_DB = (5.0, 20.0)
TELEPHONE_BAND_HZ = (300.0, 3400.0)


def add_noise(wav: np.ndarray, snr_db: float, rng: np.random.Generator, colour: float = 0.0) -> np.ndarray:
    """``wav`` plus noise at ``snr_db`` dB relative to the speech's :func:`active_power`.

    ``colour`` in [0, 1) low-pass filters white noise with a one-pole filter (0 white,
    towards 1 darker, like room or traffic noise).
    """
    noise = rng.standard_normal(len(wav)).astype(np.float64)
    if colour > 0:
        noise = signal.lfilter([1.0 - colour], [1.0, -colour], noise)
    return mix_at_snr(wav, noise, snr_db)


def active_power(wav: np.ndarray) -> float:
    """Mean power over samples above -40 dB of the peak, so pauses do not count as speech."""
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    active = wav[np.abs(wav) > peak * 0.01] if peak > 0 else wav[:0]
    return float(np.mean(active.astype(np.float64) ** 2)) if active.size else 1e-8


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech`` plus ``noise`` (tiled or cut to length) scaled to ``snr_db`` dB below the speech's
    :func:`active_power`; the noise power is its mean over the whole utterance."""
    reps = -(-len(speech) // max(1, len(noise)))
    n = np.tile(noise.astype(np.float64), reps)[: len(speech)]
    p_noise = float(np.mean(n**2)) or 1.0
    scale = np.sqrt(active_power(speech) / (p_noise * 10 ** (snr_db / 10)))
    return (speech + scale * n).astype(np.float32)


def band_limit(wav: np.ndarray, sample_rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    """4th-order Butterworth band-pass (zero-phase), as a telephone channel passes 300-3400 Hz."""
    sos = signal.butter(4, [low_hz, high_hz], btype="bandpass", fs=sample_rate, output="sos")
    return signal.sosfiltfilt(sos, wav).astype(np.float32)


@CONDITIONS.decorator("clean")
def _clean(wav: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    return wav


@CONDITIONS.decorator("noise")
def _noise(wav: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    snr = rng.uniform(*SNR_DB)
    return add_noise(wav, snr, rng, colour=float(rng.uniform(0.0, 0.95)))


@CONDITIONS.decorator("telephone")
def _telephone(wav: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    # A little line noise as well, at a high SNR: real telephone audio is never silent.
    limited = band_limit(wav, sample_rate, *TELEPHONE_BAND_HZ)
    return band_limit(add_noise(limited, rng.uniform(25.0, 35.0), rng), sample_rate, *TELEPHONE_BAND_HZ)


def normalise_peak(wav: np.ndarray, peak: float = 0.9) -> np.ndarray:
    """Scale so that max |wav| == ``peak`` (silence stays silence)."""
    m = float(np.max(np.abs(wav))) if wav.size else 0.0
    return wav if m == 0 else (wav * (peak / m)).astype(np.float32)
