"""Variety presets for the synthetic corpus: speaker grids, pauses, rooms, noise and channels.

A preset (registered in :data:`VARIETY`) says how varied a corpus is. ``none`` is the
original corpus (espeak-ng's narrow rate/pitch grid, no pauses, no rooms, no extra noise or
codecs) and keeps its bytes; ``wide`` spreads rate and pitch over most of espeak-ng's range,
inserts pauses between words, and puts utterances in reverberant rooms, behind white, pink,
brown or babble noise at 0-25 dB SNR, and through telephone, GSM, MP3 or Opus channels.

Per utterance, :meth:`VarietySpec.draw` turns a preset and a seeded generator into a
:class:`Draw` (what happens to this utterance), and :func:`describe` writes it as one
``utt2variety`` line such as ``pauses=2 rt60=0.43 drr=4.1dB noise=pink snr=12.3dB channel=mp3:17kbps``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from asr_adapt.data.audio import SAMPLE_RATE
from asr_adapt.data.augment import active_power, mix_at_snr
from asr_adapt.data.degrade import CHANNELS, NOISES, available_channels
from asr_adapt.data.locales import PITCHES, RATES
from asr_adapt.registry import Registry

BABBLE = "babble"  # a noise type made from other synthetic talkers, not by a NoiseSource


@dataclass(frozen=True)
class Draw:
    """What the variety stages do to one utterance (None / empty: the stage is skipped)."""

    pauses: tuple[float, ...] = ()  # seconds of silence after word i (0: none), one per word gap
    rt60: float | None = None
    drr_db: float = 0.0
    noise: str | None = None
    snr_db: float = 0.0
    talkers: int = 0
    channel: str | None = None


def _pick(weights: Mapping[str, float], rng: np.random.Generator) -> str:
    names = sorted(weights)
    w = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


@dataclass(frozen=True)
class VarietySpec:
    """How varied a corpus is. Probabilities are per utterance (pauses: per word gap)."""

    rates: tuple[int, ...] = field(default=RATES, metadata={"help": "speaker rates, words per minute (175 neutral)"})
    pitches: tuple[int, ...] = field(default=PITCHES, metadata={"help": "speaker pitches, 0-99 (50 neutral)"})
    pause_prob: float = field(default=0.0, metadata={"help": "chance of a pause in each gap between words"})
    pause_s: tuple[float, float] = field(default=(0.15, 0.8), metadata={"help": "pause length range, seconds"})
    reverb_prob: float = field(default=0.0, metadata={"help": "chance of a reverberant room"})
    rt60_s: tuple[float, float] = field(default=(0.2, 1.0), metadata={"help": "room RT60 range, seconds"})
    drr_db: tuple[float, float] = field(default=(-3.0, 10.0), metadata={"help": "direct-to-reverberant ratio range"})
    noise_prob: float = field(default=0.0, metadata={"help": "chance of additive noise"})
    noises: Mapping[str, float] = field(default_factory=dict, metadata={"help": "noise type -> relative weight"})
    snr_db: tuple[float, float] = field(default=(0.0, 25.0), metadata={"help": "SNR range, dB"})
    babble_talkers: tuple[int, int] = field(default=(3, 6), metadata={"help": "babble talkers, inclusive range"})
    channel_prob: float = field(default=0.0, metadata={"help": "chance of a channel or codec"})
    channels: Mapping[str, float] = field(default_factory=dict, metadata={"help": "channel -> relative weight"})

    def __post_init__(self) -> None:
        for p in (self.pause_prob, self.reverb_prob, self.noise_prob, self.channel_prob):
            if not 0 <= p <= 1:
                raise ValueError(f"probabilities must be in [0, 1], got {p}")
        for name in self.noises:
            if name != BABBLE:
                NOISES.get(name)
        for name in self.channels:
            CHANNELS.get(name)
        if not self.rates or not self.pitches or min(self.rates) < 80 or not 0 <= min(self.pitches) <= max(self.pitches) <= 99:
            raise ValueError("rates must be >= 80 wpm and pitches within 0-99")

    def draw(self, n_words: int, rng: np.random.Generator) -> Draw:
        """One utterance's draw. A stage whose probability is 0 consumes no random numbers,
        so the ``none`` preset leaves ``rng`` untouched."""
        kw: dict = {}
        if self.pause_prob > 0 and n_words > 1:
            gaps = rng.random(n_words - 1) < self.pause_prob
            lengths = rng.uniform(*self.pause_s, size=n_words - 1)
            kw["pauses"] = tuple(round(float(s), 3) if g else 0.0 for g, s in zip(gaps, lengths))
        if self.reverb_prob > 0 and rng.random() < self.reverb_prob:
            kw["rt60"] = round(float(rng.uniform(*self.rt60_s)), 3)
            kw["drr_db"] = round(float(rng.uniform(*self.drr_db)), 1)
        if self.noise_prob > 0 and self.noises and rng.random() < self.noise_prob:
            kw["noise"] = _pick(self.noises, rng)
            kw["snr_db"] = round(float(rng.uniform(*self.snr_db)), 1)
            if kw["noise"] == BABBLE:
                kw["talkers"] = int(rng.integers(self.babble_talkers[0], self.babble_talkers[1] + 1))
        usable = {c: w for c, w in self.channels.items() if c in available_channels()}
        if self.channel_prob > 0 and usable and rng.random() < self.channel_prob:
            kw["channel"] = _pick(usable, rng)
        return Draw(**kw)


VARIETY: Registry[VarietySpec] = Registry("variety preset")
VARIETY.register("none", VarietySpec())
VARIETY.register("wide", VarietySpec(
    rates=(95, 115, 135, 155, 175, 200, 230, 260),
    pitches=(5, 20, 35, 50, 65, 80, 95),
    pause_prob=0.2,
    reverb_prob=0.5,
    noise_prob=0.6, noises={"white": 1.0, "pink": 1.5, "brown": 1.0, BABBLE: 1.5},
    channel_prob=0.5, channels={"telephone": 1.0, "gsm": 1.0, "mp3": 1.0, "opus": 1.0},
))


def speak_with_pauses(speak: Callable[[str], np.ndarray], text: str, pauses: tuple[float, ...]) -> np.ndarray:
    """Speak ``text`` as phrases split at the pauses, with that much silence between them.

    Without pauses the whole text is one call, exactly as before pauses existed.
    """
    if not any(pauses):
        return speak(text)
    words = text.split()
    pieces, phrase = [], [words[0]]
    for word, pause in zip(words[1:], pauses):
        if pause > 0:
            pieces += [speak(" ".join(phrase)), np.zeros(round(pause * SAMPLE_RATE), np.float32)]
            phrase = []
        phrase.append(word)
    pieces.append(speak(" ".join(phrase)))
    return np.concatenate(pieces).astype(np.float32)


def make_babble(talk: Callable[[int], np.ndarray], n_samples: int, talkers: int, rng: np.random.Generator) -> np.ndarray:
    """(n_samples,) babble: ``talkers`` utterances (``talk(i)``), each at unit speech power,
    looped to length and started at a random point, summed."""
    out = np.zeros(n_samples, np.float64)
    for i in range(talkers):
        speech = talk(i).astype(np.float64)
        speech /= np.sqrt(active_power(speech))
        looped = np.tile(speech, -(-n_samples // len(speech)) + 1)
        start = int(rng.integers(0, len(speech)))
        out += looped[start: start + n_samples]
    return out


def add_noise_and_channel(wav: np.ndarray, d: Draw, rng: np.random.Generator,
                          babble: Callable[[int, int], np.ndarray]) -> tuple[np.ndarray, str]:
    """Apply the draw's noise, then its channel (noise reaches the microphone before the line).

    ``babble(n_samples, talkers)`` supplies babble noise. Returns the audio and the channel's
    description (e.g. ``mp3:17kbps``; empty without a channel).
    """
    if d.noise == BABBLE:
        wav = mix_at_snr(wav, babble(len(wav), d.talkers), d.snr_db)
    elif d.noise is not None:
        wav = mix_at_snr(wav, NOISES.get(d.noise)(len(wav), rng), d.snr_db)
    if d.channel is None:
        return wav, ""
    return CHANNELS.get(d.channel).apply(wav, SAMPLE_RATE, rng)


def describe(d: Draw, channel: str = "") -> str:
    """One ``utt2variety`` value; ``dry`` when no stage applied."""
    parts = []
    if any(d.pauses):
        parts.append(f"pauses={sum(1 for p in d.pauses if p > 0)}")
    if d.rt60 is not None:
        parts.append(f"rt60={d.rt60:.2f} drr={d.drr_db:.1f}dB")
    if d.noise is not None:
        talkers = f" talkers={d.talkers}" if d.noise == BABBLE else ""
        parts.append(f"noise={d.noise} snr={d.snr_db:.1f}dB{talkers}")
    if d.channel is not None:
        parts.append(f"channel={channel or d.channel}")
    return " ".join(parts) or "dry"
