"""Speech synthesis engines for the synthetic corpus, one registered backend each.

An engine speaks a locale's text with one of its voices at a rate and a pitch and returns
(N,) float32 audio at 16 kHz. Rate and pitch use espeak-ng's scales for every engine
(rate in words per minute, 175 neutral; pitch 0-99, 50 neutral), so a speaker grid means
the same thing whichever engine voices it. Each engine says which voices serve which
split of which locale: dev/test voices never occur in train (or unlabelled), the same
guarantee :data:`~asr_adapt.data.locales.SPLIT_VARIANTS` gives for espeak-ng.

What Debian (main) offers here, checked 2026-11 on bookworm:

* ``espeak-ng``: every locale (formant synthesis, 7 train + 6 held-out voice variants).
* ``espeak-ng-named``: espeak-ng again with its named voice variants (``klatt3``, ``Andy``,
  ``aunty``, ...): other formant tables, equalisers (``tone``) and Klatt voicing, for training
  only, so a model hears more spectral envelopes than the seven numbered train variants give.
* ``flite`` (package ``flite``): American English only; voices kal, awb, rms, slt
  (kal16 is kal's speaker again and awb_time only speaks clock times, so neither is used).
* ``festival`` (``festival`` + ``festvox-*``): en-US (kal diphone, slt HTS), it-IT (lp, pc
  diphones), cs-CZ (dita, machac), ru-RU (msu clunits, a single speaker: train only).
* Not available: MBROLA voices and Pico (``libttspico-utils``) live in Debian's non-free
  and contrib components, which this machine's apt sources do not carry.

The non-espeak engines change rate natively (duration stretch) and pitch with sox's
``pitch`` effect (duration-preserving; sox is a system dependency already).
"""

from __future__ import annotations

import functools
import io
import logging
import math
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from asr_adapt.data.audio import SAMPLE_RATE
from asr_adapt.data.locales import LOCALES, SPLIT_VARIANTS, LocaleSpec
from asr_adapt.registry import Registry

log = logging.getLogger(__name__)

NEUTRAL_RATE = 175  # espeak-ng's default words per minute
NEUTRAL_PITCH = 50  # espeak-ng's default pitch
# Semitones between pitch 50 and pitch 0 (or 100) for engines pitch-shifted by sox. espeak-ng's
# own 0-99 scale spans roughly an octave; 8 semitones each way keeps voices plausible.
PITCH_SPAN_SEMITONES = 8.0
ESPEAK_RATE = 22050
_TIMEOUT_S = 120


class Engine(Protocol):
    """A speech synthesiser. ``voice`` is one of ``voices(locale, split)``."""

    def missing(self) -> str | None:
        """Why the engine cannot run here (a missing program), or None."""

    def voices(self, locale: str, split: str) -> tuple[str, ...]:
        """Voices for ``split`` of ``locale`` (empty when the engine does not speak it)."""

    def all_voices(self, locale: str) -> tuple[str, ...]:
        """Every voice the engine has for ``locale``, in a fixed order."""

    def speak(self, text: str, spec: LocaleSpec, voice: str, rate: int, pitch: int) -> np.ndarray:
        """(N,) float32 speech at 16 kHz."""


ENGINES: Registry[Engine] = Registry("synthesis engine")


class EngineCrashed(RuntimeError):
    """The synthesiser died from a signal (festival's diphone voices segfault on some inputs)."""


def _run(cmd: list[str], stdin: bytes | None = None) -> bytes:
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=_TIMEOUT_S)
    except FileNotFoundError:
        raise RuntimeError(f"{cmd[0]} is not installed") from None
    if proc.returncode < 0:
        raise EngineCrashed(f"{' '.join(cmd[:3])} died from signal {-proc.returncode}")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {proc.stderr.decode(errors='replace')[-500:]}")
    return proc.stdout


def to_16k(wav: np.ndarray, sr: int) -> np.ndarray:
    """Polyphase resampling to 16 kHz (exact rational ratio, deterministic)."""
    if sr == SAMPLE_RATE:
        return wav.astype(np.float32)
    g = math.gcd(sr, SAMPLE_RATE)
    return resample_poly(wav, SAMPLE_RATE // g, sr // g).astype(np.float32)


def sox_effect(wav: np.ndarray, *effect: str) -> np.ndarray:
    """Run 16 kHz audio through one sox effect (``"pitch", "300"``).

    ``-R`` and a float output keep sox repeatable (no dither), so bytes depend only on the input.
    """
    buf = io.BytesIO()
    sf.write(buf, wav, SAMPLE_RATE, format="WAV", subtype="FLOAT")
    out = _run(["sox", "-R", "-t", "wav", "-", "-t", "wav", "-e", "floating-point", "-b", "32", "-", *effect],
               buf.getvalue())
    return sf.read(io.BytesIO(out), dtype="float32")[0]


def shift_pitch(wav: np.ndarray, pitch: int) -> np.ndarray:
    """Shift 16 kHz speech from the neutral pitch to ``pitch`` (espeak-ng's 0-99 scale), keeping its length."""
    cents = round(100 * PITCH_SPAN_SEMITONES * (pitch - NEUTRAL_PITCH) / NEUTRAL_PITCH)
    return wav if cents == 0 else sox_effect(wav, "pitch", str(cents))


def _split_table(train: tuple[str, ...], dev: tuple[str, ...], test: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    # Unlabelled audio is pseudo-labelled and trained on, so it comes from the train voices.
    return {"train": train, "dev": dev, "test": test, "unlabelled": train}


@dataclass(frozen=True)
class EspeakNg:
    """espeak-ng: every registered locale; speakers are its voice variants (``el+m3``)."""

    def missing(self) -> str | None:
        return None if shutil.which("espeak-ng") else "espeak-ng is not installed (apt-get install espeak-ng)"

    def voices(self, locale: str, split: str) -> tuple[str, ...]:
        return SPLIT_VARIANTS[split] if locale in LOCALES else ()

    def all_voices(self, locale: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v for s in ("train", "dev", "test") for v in self.voices(locale, s)))

    def speak(self, text: str, spec: LocaleSpec, voice: str, rate: int, pitch: int) -> np.ndarray:
        cmd = ["espeak-ng", "-v", f"{spec.voice}+{voice}", "-s", str(rate), "-p", str(pitch), "--stdout", "--stdin"]
        out = _run(cmd, text.encode("utf-8"))
        if not out:
            raise RuntimeError(f"espeak-ng produced no audio for voice {spec.voice}+{voice}")
        wav, sr = sf.read(io.BytesIO(out), dtype="float32")
        if sr != ESPEAK_RATE:
            raise RuntimeError(f"espeak-ng produced {sr} Hz audio, expected {ESPEAK_RATE}")
        # 22050 -> 16000 Hz is exactly 320/441; polyphase resampling is deterministic and fast.
        return resample_poly(wav, 320, 441).astype(np.float32)


# espeak-ng's named variants (espeak-ng-data/voices/!v) that sound like a person speaking,
# with names free of spaces (they go into Kaldi speaker ids). Left out: the numbered
# m1-m8/f1-f5 (the ``espeak-ng`` engine's train and held-out voices), whispered voices (no
# voicing at all) and the deliberately robotic or distorted effects.
NAMED_VARIANTS = (
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "Denis", "Diogo", "Gene", "Gene2",
    "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen",
    "Storm", "adam", "anika", "announcer", "antonio", "aunty", "belinda", "benjamin", "boris",
    "caleb", "david", "ed", "edward", "edward2", "fast", "grandma", "grandpa", "gustave", "iven",
    "iven2", "iven3", "iven4", "john", "kaukovalta", "klatt", "klatt2", "klatt3", "klatt4", "klatt5",
    "klatt6", "linda", "marcelo", "max", "michel", "miguel", "norbert", "pablo", "paul", "pedro",
    "quincy", "rob", "robert", "sandro", "shelby", "steph", "steph2", "steph3", "travis", "victor",
)


@dataclass(frozen=True)
class EspeakNgNamed(EspeakNg):
    """espeak-ng with its named variants: train (and unlabelled) voices only, never dev or test,
    so every held-out numbered variant stays unheard."""

    def voices(self, locale: str, split: str) -> tuple[str, ...]:
        if locale not in LOCALES or split not in ("train", "unlabelled"):
            return ()
        return _installed_named_variants()


@functools.cache
def _installed_named_variants() -> tuple[str, ...]:
    """The :data:`NAMED_VARIANTS` this machine's espeak-ng has (its data directory, as the
    program itself reports it: ``Data at: DIR``)."""
    if not shutil.which("espeak-ng"):
        return ()
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    _, sep, tail = out.partition("Data at:")
    if not sep:
        return ()
    variants = Path(tail.strip()) / "voices" / "!v"
    return tuple(v for v in NAMED_VARIANTS if (variants / v).is_file())


@dataclass(frozen=True)
class TableEngine:
    """An engine whose voices per locale and split are a fixed table (shared by flite and festival)."""

    table: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)

    def voices(self, locale: str, split: str) -> tuple[str, ...]:
        return self.table.get(locale, {}).get(split, ())

    def all_voices(self, locale: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v for s in ("train", "dev", "test") for v in self.voices(locale, s)))


@dataclass(frozen=True)
class Flite(TableEngine):
    """CMU Flite's built-in American English voices."""

    table: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=lambda: {
        "en-US": _split_table(("kal", "awb"), ("rms",), ("slt",)),
    })

    def missing(self) -> str | None:
        return None if shutil.which("flite") else "flite is not installed (apt-get install flite)"

    def speak(self, text: str, spec: LocaleSpec, voice: str, rate: int, pitch: int) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="flite-") as tmp:
            path = Path(tmp) / "out.wav"
            _run(["flite", "-voice", voice, "--setf", f"duration_stretch={NEUTRAL_RATE / rate:.4f}",
                  "-t", text, "-o", str(path)])
            wav, sr = sf.read(path, dtype="float32")
        return shift_pitch(to_16k(wav, sr), pitch)


@dataclass(frozen=True)
class FestivalVoice:
    """One festival voice: the scheme function that selects it and the text encoding it reads."""

    scheme: str = field(metadata={"help": "festival function selecting the voice, e.g. voice_czech_dita"})
    encoding: str = field(metadata={"help": "byte encoding of its lexicon (festival is not Unicode-aware)"})


FESTIVAL_VOICES: dict[str, FestivalVoice] = {
    "kal": FestivalVoice("voice_kal_diphone", "ascii"),
    "slt": FestivalVoice("voice_cmu_us_slt_arctic_hts", "ascii"),
    "lp": FestivalVoice("voice_lp_diphone", "iso-8859-1"),
    "pc": FestivalVoice("voice_pc_diphone", "iso-8859-1"),
    "dita": FestivalVoice("voice_czech_dita", "iso-8859-2"),
    "machac": FestivalVoice("voice_czech_machac", "iso-8859-2"),
    "msu": FestivalVoice("voice_msu_ru_nsh_clunits", "utf-8"),
}


@dataclass(frozen=True)
class Festival(TableEngine):
    """The Festival Speech Synthesis System with Debian's festvox voices.

    flite's kal and slt are the same two speakers as festival's, so both engines hold out
    slt (and flite's rms) from train: held-out speakers stay held out across engines.
    """

    table: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=lambda: {
        "en-US": _split_table(("kal",), (), ("slt",)),
        "it-IT": _split_table(("pc",), ("lp",), ("lp",)),
        "cs-CZ": _split_table(("machac",), ("dita",), ("dita",)),
        "ru-RU": _split_table(("msu",), (), ()),
    })

    def missing(self) -> str | None:
        return None if shutil.which("text2wave") else "festival is not installed (apt-get install festival festvox-...)"

    def installed(self, voice: str) -> bool:
        """Whether the voice's festvox package is installed (its scheme file is on disk)."""
        name = FESTIVAL_VOICES[voice].scheme.removeprefix("voice_")
        return any(Path("/usr/share/festival/voices").glob(f"*/{name}/festvox/{name}.scm"))

    def voices(self, locale: str, split: str) -> tuple[str, ...]:
        return tuple(v for v in super().voices(locale, split) if self.installed(v))

    def speak(self, text: str, spec: LocaleSpec, voice: str, rate: int, pitch: int) -> np.ndarray:
        v = FESTIVAL_VOICES[voice]
        try:
            data = text.encode(v.encoding)
        except UnicodeEncodeError as e:
            raise RuntimeError(f"festival voice {voice} reads {v.encoding}; cannot encode {text!r}") from e
        try:
            wav = self._text2wave(v, data, NEUTRAL_RATE / rate)
        except EngineCrashed:
            # Diphone voices segfault on some words at some stretches (Italian "non" at 1.29-1.30):
            # speak at the neutral rate, which does not crash, and change the tempo with sox instead.
            log.debug("festival %s crashed on %r at rate %d; retrying at the neutral rate", voice, text, rate)
            wav = self._text2wave(v, data, 1.0)
            if rate != NEUTRAL_RATE:
                wav = sox_effect(wav, "tempo", "-s", f"{rate / NEUTRAL_RATE:.4f}")
        return shift_pitch(wav, pitch)

    @staticmethod
    def _text2wave(v: FestivalVoice, data: bytes, stretch: float) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="festival-") as tmp:
            path = Path(tmp) / "out.wav"
            _run(["text2wave", "-eval", f"({v.scheme})",
                  "-eval", f"(Parameter.set 'Duration_Stretch {stretch:.4f})", "-o", str(path)], data)
            if not path.is_file() or path.stat().st_size <= 44:
                raise RuntimeError(f"festival voice {v.scheme} produced no audio")
            wav, sr = sf.read(path, dtype="float32")
        return to_16k(wav, sr)


ENGINES.register("espeak-ng", EspeakNg())
ENGINES.register("espeak-ng-named", EspeakNgNamed())
ENGINES.register("flite", Flite())
ENGINES.register("festival", Festival())


def available_engines() -> list[str]:
    """Registered engines that can run on this machine."""
    return [name for name, engine in ENGINES.items() if engine.missing() is None]
