"""Signal degradations for corpus variety: room reverberation, coloured noise, channels and codecs.

All functions take (N,) float32 audio and a ``numpy.random.Generator`` and are pure
functions of the input and the generator's state, so a corpus stays a function of its seed.

* Reverberation convolves with a synthetic room impulse response: a direct path plus
  exponentially decaying Gaussian noise whose energy falls 60 dB in ``rt60`` seconds (the
  statistical model of a diffuse late reverberant field; no room geometry needed).
* Noise types are registered in :data:`NOISES` (``white``, ``pink``, ``brown``); babble is
  made from other synthetic speech by the caller and mixed with :func:`asr_adapt.data.augment.mix_at_snr`.
* Channels are registered in :data:`CHANNELS`: ``telephone`` (300-3400 Hz, 8 kHz, G.711
  mu-law), ``gsm`` (GSM 06.10 full rate at 8 kHz), ``mp3`` and ``opus`` at low bitrates.
  Codecs run through libsndfile (the ``soundfile`` wheel bundles one with MP3 and Opus);
  a codec this libsndfile cannot write is left out of :func:`available_channels` with a log line.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import soundfile as sf
from scipy import signal

from asr_adapt.data.augment import TELEPHONE_BAND_HZ, band_limit
from asr_adapt.registry import Registry

log = logging.getLogger(__name__)

NARROWBAND_RATE = 8000
_DECAY_60DB = 3 * np.log(10)  # amplitude exp(-k t / rt60) is 60 dB down at t = rt60 for k = 3 ln 10
_MAX_CODEC_DELAY = 4096  # samples: mp3 encoders add up to ~1100 of priming delay at these rates


# --- reverberation -----------------------------------------------------------------------------


def synthetic_rir(rt60: float, sample_rate: int, rng: np.random.Generator, drr_db: float = 3.0) -> np.ndarray:
    """(K,) room impulse response: a unit direct path, then a decaying diffuse tail.

    ``drr_db`` is the direct-to-reverberant energy ratio (higher: the talker is closer).
    The tail starts 2.5 ms after the direct path (the first reflections' delay) and lasts until
    it is 72 dB down (1.2 x rt60).
    """
    if rt60 <= 0:
        raise ValueError(f"rt60 must be > 0, got {rt60}")
    n = int(1.2 * rt60 * sample_rate)
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-_DECAY_60DB * t / rt60)
    tail[: int(0.0025 * sample_rate)] = 0.0
    tail *= np.sqrt(10 ** (-drr_db / 10) / max(float(np.sum(tail**2)), 1e-12))
    tail[0] = 1.0
    return tail


def reverberate(wav: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Full convolution: the output is ``len(rir) - 1`` samples longer, so the decay is kept."""
    return signal.fftconvolve(wav.astype(np.float64), rir).astype(np.float32)


# --- noise -------------------------------------------------------------------------------------

NoiseSource = Callable[[int, np.random.Generator], np.ndarray]  # (samples, rng) -> (samples,) noise
NOISES: Registry[NoiseSource] = Registry("noise type")


def coloured_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Gaussian noise whose power spectrum falls as 1 / f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0  # keep the DC bin finite; it is the mean, which the caller's scaling ignores
    return np.fft.irfft(spectrum / f ** (exponent / 2), n)


NOISES.register("white", lambda n, rng: coloured_noise(n, rng, 0.0))
NOISES.register("pink", lambda n, rng: coloured_noise(n, rng, 1.0))
NOISES.register("brown", lambda n, rng: coloured_noise(n, rng, 2.0))


# --- channels and codecs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Channel:
    """A transmission channel: ``apply(wav, sample_rate, rng) -> (wav, description)``.

    ``needs`` names the libsndfile (format, subtype) the channel encodes with, if any.
    """

    apply: Callable[[np.ndarray, int, np.random.Generator], tuple[np.ndarray, str]]
    needs: tuple[str, str] | None = None


CHANNELS: Registry[Channel] = Registry("channel")


def align(decoded: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``decoded`` shifted by its codec delay (found by cross-correlation) and cut/padded to
    ``len(reference)``, so a codec changes the sound but not the timing."""
    window = decoded[: len(reference) + _MAX_CODEC_DELAY].astype(np.float64)
    corr = signal.correlate(window, reference.astype(np.float64), mode="full", method="fft")
    lags = signal.correlation_lags(len(window), len(reference), mode="full")
    ok = (lags >= 0) & (lags <= _MAX_CODEC_DELAY)
    lag = int(lags[ok][np.argmax(corr[ok])]) if ok.any() else 0
    out = decoded[lag: lag + len(reference)]
    return np.pad(out, (0, len(reference) - len(out))).astype(np.float32)


def codec_roundtrip(wav: np.ndarray, sample_rate: int, fmt: str, subtype: str, **kw) -> tuple[np.ndarray, int]:
    """Encode with libsndfile and decode again; returns the aligned audio and the encoded size in bytes."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1.0, 1.0), sample_rate, format=fmt, subtype=subtype, **kw)
    nbytes = buf.tell()
    buf.seek(0)
    decoded, _ = sf.read(buf, dtype="float32")
    return align(decoded, wav), nbytes


def _narrowband(wav: np.ndarray, sample_rate: int, fmt: str, subtype: str) -> np.ndarray:
    # Down to 8 kHz and back: nothing above 4 kHz survives, as on a real narrowband line.
    if sample_rate != 2 * NARROWBAND_RATE:
        raise ValueError(f"narrowband channels expect {2 * NARROWBAND_RATE} Hz input, got {sample_rate}")
    limited = band_limit(wav, sample_rate, *TELEPHONE_BAND_HZ)
    coded, _ = codec_roundtrip(signal.resample_poly(limited, 1, 2), NARROWBAND_RATE, fmt, subtype)
    return signal.resample_poly(coded, 2, 1)[: len(wav)].astype(np.float32)


def _telephone(wav: np.ndarray, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    return _narrowband(wav, sample_rate, "WAV", "ULAW"), "telephone"


def _gsm(wav: np.ndarray, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    return _narrowband(wav, sample_rate, "WAV", "GSM610"), "gsm"


def _lossy(fmt: str, subtype: str, name: str, levels: tuple[float, float], **kw):
    # libsndfile's compression_level maps 0..1 to its highest..lowest bitrate; these ranges
    # give about 8-25 kbps (mp3, constant bitrate) and 11-33 kbps (opus) for 16 kHz mono.
    def apply(wav: np.ndarray, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        level = round(float(rng.uniform(*levels)), 3)
        out, nbytes = codec_roundtrip(wav, sample_rate, fmt, subtype, compression_level=level, **kw)
        kbps = nbytes * 8 / max(len(wav) / sample_rate, 1e-3) / 1000
        return out, f"{name}:{kbps:.0f}kbps"

    return Channel(apply, needs=(fmt, subtype))


CHANNELS.register("telephone", Channel(_telephone, needs=("WAV", "ULAW")))
CHANNELS.register("gsm", Channel(_gsm, needs=("WAV", "GSM610")))
CHANNELS.register("mp3", _lossy("MP3", "MPEG_LAYER_III", "mp3", (0.9, 0.99), bitrate_mode="CONSTANT"))
CHANNELS.register("opus", _lossy("OGG", "OPUS", "opus", (0.9, 0.99)))


@cache
def available_channels() -> tuple[str, ...]:
    """Channels whose codec this libsndfile can write; each one left out is logged once."""
    ok = []
    for name, ch in CHANNELS.items():
        if ch.needs is None or sf.check_format(ch.needs[0], ch.needs[1]):
            ok.append(name)
        else:
            log.warning("skipping channel %s: libsndfile %s cannot write %s/%s",
                        name, sf.__libsndfile_version__, *ch.needs)
    return tuple(ok)
