"""Synthetic multilingual dictation corpus: Faker text spoken by TTS engines, as Kaldi data dirs.

Layout written under ``OUT``::

    OUT/synth.json                 the config and per-split, per-locale counts
    OUT/wav/<split>/<locale>/<utt>.wav   16 kHz mono 16-bit PCM
    OUT/<split>/{wav.scp,text,utt2spk,spk2utt,utt2lang,utt2dur,utt2condition,utt2engine}
    OUT/<split>/utt2variety        what the variety stages did (only with a variety preset)
    OUT/unlabelled/.text_hidden    transcripts of the unlabelled split (no ``text`` file),
                                   for analysing pseudo-labels only

Speakers are a synthesis engine's voice with a rate and a pitch
(:mod:`~asr_adapt.data.tts_engines`); the speaker id ``<locale>-<voice>-r<rate>-p<pitch>``
(espeak-ng voices are its variants, ``m3``; others are ``<engine>_<voice>``) prefixes each
utterance id (Kaldi convention), and dev/test voices never occur in train. With several
engines each split's speakers alternate between them; ``holdout_engine`` keeps one engine
out of train and unlabelled and makes it the only one in dev and test, for every locale it
speaks. Each utterance gets an acoustic condition from
:data:`~asr_adapt.data.augment.CONDITIONS`, then, with a variety preset
(:mod:`~asr_adapt.data.variety`), pauses, a room, noise and a channel.

Everything random is seeded per utterance from ``(seed, locale, split, index)``, so output
bytes do not depend on ``jobs`` or on which other locales are generated. The variety stages
draw from their own generator, so with the defaults (espeak-ng alone, variety ``none``) the
bytes are those of corpora made before engines and variety existed.
"""

from __future__ import annotations

import hashlib
import logging
import random
import shutil
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import zip_longest
from pathlib import Path

import numpy as np

from asr_adapt.data.audio import SAMPLE_RATE, write_wav
from asr_adapt.data.augment import CONDITIONS, normalise_peak
from asr_adapt.data.degrade import available_channels, reverberate, synthetic_rir
from asr_adapt.data.kaldi import write_data_dir
from asr_adapt.data.locales import LOCALES, PITCHES, RATES, SPLIT_VARIANTS
from asr_adapt.data.synth_text import TEXT_KINDS, make_text
from asr_adapt.data.tables import write_table
from asr_adapt.data.tts_engines import ENGINES
from asr_adapt.data.types import Utterance
from asr_adapt.data.variety import VARIETY, add_noise_and_channel, describe, make_babble, speak_with_pauses
from asr_adapt.fileio import atomic_write_json

log = logging.getLogger(__name__)

HIDDEN_TEXT = ".text_hidden"
EVAL_SPLITS = ("dev", "test")
BABBLE_ENGINE = "espeak-ng"  # always installed, fast, and babble voices come from its train variants


@dataclass(frozen=True)
class SynthConfig:
    """What corpus :func:`synthesize` makes."""

    locales: tuple[str, ...] = field(
        default_factory=lambda: tuple(LOCALES.names()), metadata={"help": "BCP-47 tags from the locale registry"}
    )
    utts_per_locale: int = field(default=20, metadata={"help": "utterances per locale in each split (head locales)"})
    tail_fraction: float = field(
        default=0.25, metadata={"help": "tail locales get this fraction of the head's train utterances (min 1)"}
    )
    train_utts_per_locale: int | None = field(
        default=None, metadata={"help": "head locales' train size (None: utts_per_locale); tail gets tail_fraction of it"}
    )
    splits: tuple[str, ...] = field(
        default=("train", "dev", "test", "unlabelled"), metadata={"help": "splits to write"}
    )
    seed: int = field(default=0, metadata={"help": "corpus seed: same seed, same text and audio bytes"})
    jobs: int = field(default=2, metadata={"help": "worker processes"})
    speakers_per_split: int = field(default=4, metadata={"help": "speakers per locale and split"})
    train_speakers: int | None = field(
        default=None, metadata={"help": "speakers per locale in train (None: speakers_per_split); dev/test/unlabelled "
                                        "keep speakers_per_split, so a larger train set leaves them byte-identical"})
    conditions: Mapping[str, float] = field(
        default_factory=lambda: {"clean": 0.5, "noise": 0.3, "telephone": 0.2},
        metadata={"help": "acoustic condition -> relative weight"},
    )
    text_kinds: Mapping[str, float] = field(
        default_factory=lambda: {"sentence": 0.6, "name": 0.2, "address": 0.2},
        metadata={"help": "text kind -> relative weight"},
    )
    engines: tuple[str, ...] = field(
        default=("espeak-ng",), metadata={"help": "synthesis engines (tts_engines.ENGINES); speakers alternate"}
    )
    holdout_engine: str | None = field(
        default=None, metadata={"help": "engine kept out of train/unlabelled and alone in dev/test (one of engines)"}
    )
    variety: str = field(default="none", metadata={"help": "variety preset (variety.VARIETY): none or wide"})

    def __post_init__(self) -> None:
        for tag in self.locales:
            LOCALES.get(tag)  # raises with the known tags
        for s in self.splits:
            if s not in SPLIT_VARIANTS:
                raise ValueError(f"unknown split {s!r}; known: {', '.join(SPLIT_VARIANTS)}")
        for name in self.conditions:
            CONDITIONS.get(name)
        for name in self.text_kinds:
            TEXT_KINDS.get(name)
        for name in self.engines:
            ENGINES.get(name)
        VARIETY.get(self.variety)
        if not self.engines or len(set(self.engines)) != len(self.engines):
            raise ValueError("engines must be non-empty and unique")
        if self.holdout_engine is not None and (self.holdout_engine not in self.engines or len(self.engines) < 2):
            raise ValueError(f"holdout_engine {self.holdout_engine!r} must be one of at least two engines "
                             f"(engines: {', '.join(self.engines)})")
        if self.train_utts_per_locale is not None and self.train_utts_per_locale < 1:
            raise ValueError("train_utts_per_locale must be >= 1")
        if self.utts_per_locale < 1 or self.jobs < 1 or self.speakers_per_split < 1 or (self.train_speakers or 1) < 1:
            raise ValueError("utts_per_locale, jobs, speakers_per_split and train_speakers must be >= 1")
        if not 0 < self.tail_fraction <= 1:
            raise ValueError(f"tail_fraction must be in (0, 1], got {self.tail_fraction}")
        if not self.locales or len(set(self.locales)) != len(self.locales):
            raise ValueError("locales must be non-empty and unique")

    def count(self, locale: str, split: str) -> int:
        """Utterances of ``locale`` in ``split``: the head/tail imbalance applies to train only."""
        if split != "train":
            return self.utts_per_locale
        n = self.train_utts_per_locale or self.utts_per_locale
        if LOCALES.get(locale).role == "tail":
            return max(1, round(n * self.tail_fraction))
        return n


@dataclass(frozen=True)
class UttJob:
    """Everything one worker needs to make one utterance (picklable, self-contained)."""

    utt_id: str
    split: str
    locale: str
    speaker: str
    engine: str
    variant: str
    rate: int
    pitch: int
    seed: int
    wav_path: str
    conditions: tuple[tuple[str, float], ...]
    text_kinds: tuple[tuple[str, float], ...]
    variety: str = "none"


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any values; stable across processes (unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def split_engines(config: SynthConfig, split: str) -> tuple[str, ...]:
    """Engines that may voice ``split``: all of them, or with a held-out engine, that engine
    alone in dev/test and every other one elsewhere."""
    if config.holdout_engine is None:
        return config.engines
    if split in EVAL_SPLITS:
        return (config.holdout_engine,)
    return tuple(e for e in config.engines if e != config.holdout_engine)


def _engine_voices(config: SynthConfig, locale: str, split: str) -> dict[str, tuple[str, ...]]:
    voices = {}
    for name in split_engines(config, split):
        engine = ENGINES.get(name)
        v = engine.voices(locale, split)
        if not v and name == config.holdout_engine:
            v = engine.all_voices(locale)  # no voice of a held-out engine is ever heard in train
        if v:
            voices[name] = v
    if not voices and split in EVAL_SPLITS and config.holdout_engine is not None:
        # The held-out engine does not speak this locale: its dev/test keep the other engines'
        # held-out voices (utt2engine says which engine each utterance came from).
        log.warning("%s: holdout engine %s does not speak it; %s uses the other engines",
                    locale, config.holdout_engine, split)
        voices = {e: ENGINES.get(e).voices(locale, split) for e in config.engines if e != config.holdout_engine}
        voices = {e: v for e, v in voices.items() if v}
    if not voices:
        raise ValueError(f"no engine of {', '.join(config.engines)} has {split} voices for {locale}")
    return voices


def _speaker_id(locale: str, engine: str, voice: str, rate: int, pitch: int) -> str:
    # espeak-ng keeps its historical ids (``el-GR-m3-r155-p45``); other voices name their engine.
    name = voice if engine == "espeak-ng" else f"{engine}_{voice}"
    return f"{locale}-{name}-r{rate:03d}-p{pitch:02d}"


def plan(config: SynthConfig, out: Path) -> list[UttJob]:
    """All utterances to make, in a fixed order."""
    preset = VARIETY.get(config.variety)
    jobs = []
    for split in config.splits:
        for locale in config.locales:
            n = config.count(locale, split)
            rng = random.Random(derive_seed(config.seed, locale, split, "speakers"))
            k = config.train_speakers if split == "train" and config.train_speakers else config.speakers_per_split
            # Each engine's speakers are sampled on their own and then interleaved, so engines
            # with few voices still get their share; with one engine this is the original draw.
            per_engine = []
            for engine, voices in _engine_voices(config, locale, split).items():
                combos = [(engine, v, r, p) for v in voices for r in preset.rates for p in preset.pitches]
                per_engine.append(rng.sample(combos, k=min(k, n, len(combos))))
            speakers = [s for group in zip_longest(*per_engine) for s in group if s is not None][: min(k, n)]
            for i in range(n):
                engine, variant, rate, pitch = speakers[i % len(speakers)]
                spk = _speaker_id(locale, engine, variant, rate, pitch)
                utt = f"{spk}-{split}{i:05d}"
                jobs.append(UttJob(
                    utt_id=utt, split=split, locale=locale, speaker=spk, engine=engine, variant=variant,
                    rate=rate, pitch=pitch, seed=derive_seed(config.seed, locale, split, i),
                    wav_path=str(out / "wav" / split / locale / f"{utt}.wav"),
                    conditions=tuple(sorted(config.conditions.items())),
                    text_kinds=tuple(sorted(config.text_kinds.items())),
                    variety=config.variety,
                ))
    return jobs


_FAKERS: dict[str, object] = {}


def _faker(locale: str):
    # Building a Faker loads its providers (~50 ms); reuse one per locale and worker,
    # reseeding it for every utterance.
    if locale not in _FAKERS:
        from faker import Faker

        _FAKERS[locale] = Faker(locale)
    return _FAKERS[locale]


def _text(locale: str, seed: int, kinds: dict[str, float]) -> tuple[str, str]:
    spec = LOCALES.get(locale)
    fake = _faker(spec.faker)
    fake.seed_instance(seed)
    return make_text(fake, random.Random(seed), spec, kinds)


def _babble(job: UttJob, n_samples: int, talkers: int, rng: np.random.Generator) -> np.ndarray:
    """Babble of other sentences in the utterance's language, spoken by espeak-ng train voices
    (never a held-out voice, whichever split the babble lands in)."""
    spec = LOCALES.get(job.locale)

    def talk(t: int) -> np.ndarray:
        seed = derive_seed(job.seed, "babble", t)
        text, _ = _text(job.locale, seed, {"sentence": 1.0})
        r = random.Random(seed)
        voice = r.choice(SPLIT_VARIANTS["train"])
        return ENGINES.get(BABBLE_ENGINE).speak(text, spec, voice, r.choice(RATES), r.choice(PITCHES))

    return make_babble(talk, n_samples, talkers, rng)


def synthesize_one(job: UttJob) -> dict:
    """Make one utterance's WAV; returns its ``utt_id``, ``text``, ``kind``, ``condition``,
    ``variety`` (the utt2variety line), ``duration``."""
    spec = LOCALES.get(job.locale)
    text, kind = _text(job.locale, job.seed, dict(job.text_kinds))
    # The variety stages have their own generator: the legacy stream below stays as it was.
    vrng = np.random.default_rng(derive_seed(job.seed, "variety"))
    draw = VARIETY.get(job.variety).draw(len(text.split()), vrng)
    engine = ENGINES.get(job.engine)
    wav = speak_with_pauses(lambda t: engine.speak(t, spec, job.variant, job.rate, job.pitch), text, draw.pauses)
    if draw.rt60 is not None:
        wav = reverberate(wav, synthetic_rir(draw.rt60, SAMPLE_RATE, vrng, draw.drr_db))
    rng = np.random.default_rng(job.seed)
    names = [n for n, _ in job.conditions]
    weights = np.array([w for _, w in job.conditions], dtype=np.float64)
    condition = names[rng.choice(len(names), p=weights / weights.sum())]
    wav = CONDITIONS.get(condition)(wav, SAMPLE_RATE, rng)
    wav, channel = add_noise_and_channel(wav, draw, vrng, lambda n, t: _babble(job, n, t, vrng))
    wav = normalise_peak(wav, float(rng.uniform(0.3, 0.9)))
    write_wav(job.wav_path, wav)
    return {"utt_id": job.utt_id, "text": text, "kind": kind, "condition": condition,
            "variety": describe(draw, channel), "duration": len(wav) / SAMPLE_RATE}


def synthesize(out: str | Path, config: SynthConfig = SynthConfig(), overwrite: bool = False,
               progress: bool = True) -> dict[str, dict[str, int]]:
    """Write the corpus under ``out``; returns ``{split: {locale: utterances}}``.

    Raises:
        FileExistsError: a split dir already exists and ``overwrite`` is False.
        RuntimeError: a requested engine cannot run here.
    """
    from tqdm import tqdm

    missing = [m for m in (ENGINES.get(e).missing() for e in config.engines) if m]
    if missing:
        raise RuntimeError("; ".join(missing))
    out = Path(out).resolve()
    existing = [s for s in config.splits if (out / s).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out}: splits {', '.join(existing)} exist; pass overwrite=True (--overwrite) to replace them")
    for s in config.splits:  # only what this generator made before
        shutil.rmtree(out / s, ignore_errors=True)
        shutil.rmtree(out / "wav" / s, ignore_errors=True)
    jobs = plan(config, out)
    bar = tqdm(total=len(jobs), desc="synth", unit="utt", disable=not progress)
    results = []
    if config.jobs == 1:
        for job in jobs:
            results.append(synthesize_one(job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=config.jobs) as pool:
            for r in pool.map(synthesize_one, jobs, chunksize=max(1, min(16, len(jobs) // (4 * config.jobs)))):
                results.append(r)
                bar.update()
    bar.close()
    counts = _write_splits(out, config, jobs, results)
    meta = asdict(config) | {"counts": counts, "sample_rate": SAMPLE_RATE}
    if config.variety != "none":
        meta["channels_available"] = list(available_channels())  # a codec missing here changes the corpus
    atomic_write_json(out / "synth.json", meta)
    return counts


def _write_splits(out: Path, config: SynthConfig, jobs: list[UttJob], results: list[dict]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for split in config.splits:
        pairs = [(j, r) for j, r in zip(jobs, results) if j.split == split]
        labelled = split != "unlabelled"
        utts = [
            Utterance(j.utt_id, j.wav_path, text=r["text"] if labelled else None, lang=j.locale,
                      speaker=j.speaker, duration=r["duration"])
            for j, r in pairs
        ]
        d = out / split
        write_data_dir(d, utts)
        write_table(d / "utt2condition", {j.utt_id: r["condition"] for j, r in pairs})
        write_table(d / "utt2engine", {j.utt_id: j.engine for j in jobs if j.split == split})
        if config.variety != "none":
            write_table(d / "utt2variety", {j.utt_id: r["variety"] for j, r in pairs})
        if not labelled:
            write_table(d / HIDDEN_TEXT, {j.utt_id: r["text"] for j, r in pairs})
        counts[split] = {loc: sum(1 for j, _ in pairs if j.locale == loc) for loc in config.locales}
    return counts
