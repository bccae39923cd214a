"""Synthetic multilingual dictation corpus: Faker text spoken by espeak-ng, as Kaldi data dirs.

Layout written under ``OUT``::

    OUT/synth.json                 the config and per-split, per-locale counts
    OUT/wav/<split>/<locale>/<utt>.wav   16 kHz mono 16-bit PCM
    OUT/<split>/{wav.scp,text,utt2spk,spk2utt,utt2lang,utt2dur,utt2condition}
    OUT/unlabelled/.text_hidden    transcripts of the unlabelled split (no ``text`` file),
                                   for analysing pseudo-labels only

Speakers are espeak-ng voice variants with a rate and a pitch; the speaker id
``<locale>-<variant>-r<rate>-p<pitch>`` prefixes each utterance id (Kaldi convention), and
dev/test variants never occur in train (:data:`~asr_adapt.data.locales.SPLIT_VARIANTS`).
Each utterance gets an acoustic condition from :data:`~asr_adapt.data.augment.CONDITIONS`.

Everything random is seeded per utterance from ``(seed, locale, split, index)``, so output
bytes do not depend on ``jobs`` or on which other locales are generated.
"""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import subprocess
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from asr_adapt.data.audio import SAMPLE_RATE, write_wav
from asr_adapt.data.augment import CONDITIONS, normalise_peak
from asr_adapt.data.kaldi import write_data_dir
from asr_adapt.data.locales import LOCALES, PITCHES, RATES, SPLIT_VARIANTS
from asr_adapt.data.synth_text import TEXT_KINDS, make_text
from asr_adapt.data.tables import write_table
from asr_adapt.data.types import Utterance
from asr_adapt.fileio import atomic_write_json

ESPEAK_RATE = 22050
HIDDEN_TEXT = ".text_hidden"


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
    variant: str
    rate: int
    pitch: int
    seed: int
    wav_path: str
    conditions: tuple[tuple[str, float], ...]
    text_kinds: tuple[tuple[str, float], ...]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any values; stable across processes (unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def plan(config: SynthConfig, out: Path) -> list[UttJob]:
    """All utterances to make, in a fixed order."""
    jobs = []
    for split in config.splits:
        for locale in config.locales:
            n = config.count(locale, split)
            rng = random.Random(derive_seed(config.seed, locale, split, "speakers"))
            combos = [(v, r, p) for v in SPLIT_VARIANTS[split] for r in RATES for p in PITCHES]
            k = config.train_speakers if split == "train" and config.train_speakers else config.speakers_per_split
            speakers = rng.sample(combos, k=min(k, n, len(combos)))
            for i in range(n):
                variant, rate, pitch = speakers[i % len(speakers)]
                spk = f"{locale}-{variant}-r{rate:03d}-p{pitch:02d}"
                utt = f"{spk}-{split}{i:05d}"
                jobs.append(UttJob(
                    utt_id=utt, split=split, locale=locale, speaker=spk, variant=variant, rate=rate, pitch=pitch,
                    seed=derive_seed(config.seed, locale, split, i),
                    wav_path=str(out / "wav" / split / locale / f"{utt}.wav"),
                    conditions=tuple(sorted(config.conditions.items())),
                    text_kinds=tuple(sorted(config.text_kinds.items())),
                ))
    return jobs


def speak(text: str, voice: str, variant: str, rate: int, pitch: int) -> np.ndarray:
    """espeak-ng speech as (N,) float32 at 16 kHz."""
    cmd = ["espeak-ng", "-v", f"{voice}+{variant}", "-s", str(rate), "-p", str(pitch), "--stdout", "--stdin"]
    try:
        proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=60)
    except FileNotFoundError:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)") from None
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"espeak-ng failed for voice {voice}+{variant}: {proc.stderr.decode(errors='replace')}")
    wav, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if sr != ESPEAK_RATE:
        raise RuntimeError(f"espeak-ng produced {sr} Hz audio, expected {ESPEAK_RATE}")
    # 22050 -> 16000 Hz is exactly 320/441; polyphase resampling is deterministic and fast.
    return resample_poly(wav, 320, 441).astype(np.float32)


_FAKERS: dict[str, object] = {}


def _faker(locale: str):
    # Building a Faker loads its providers (~50 ms); reuse one per locale and worker,
    # reseeding it for every utterance.
    if locale not in _FAKERS:
        from faker import Faker

        _FAKERS[locale] = Faker(locale)
    return _FAKERS[locale]


def synthesize_one(job: UttJob) -> dict:
    """Make one utterance's WAV; returns its ``utt_id``, ``text``, ``kind``, ``condition``, ``duration``."""
    spec = LOCALES.get(job.locale)
    fake = _faker(spec.faker)
    fake.seed_instance(job.seed)
    text, kind = make_text(fake, random.Random(job.seed), spec, dict(job.text_kinds))
    wav = speak(text, spec.voice, job.variant, job.rate, job.pitch)
    rng = np.random.default_rng(job.seed)
    names = [n for n, _ in job.conditions]
    weights = np.array([w for _, w in job.conditions], dtype=np.float64)
    condition = names[rng.choice(len(names), p=weights / weights.sum())]
    wav = CONDITIONS.get(condition)(wav, SAMPLE_RATE, rng)
    wav = normalise_peak(wav, float(rng.uniform(0.3, 0.9)))
    write_wav(job.wav_path, wav)
    return {"utt_id": job.utt_id, "text": text, "kind": kind, "condition": condition, "duration": len(wav) / SAMPLE_RATE}


def synthesize(out: str | Path, config: SynthConfig = SynthConfig(), overwrite: bool = False,
               progress: bool = True) -> dict[str, dict[str, int]]:
    """Write the corpus under ``out``; returns ``{split: {locale: utterances}}``.

    Raises:
        FileExistsError: a split dir already exists and ``overwrite`` is False.
    """
    from tqdm import tqdm

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
        if not labelled:
            write_table(d / HIDDEN_TEXT, {j.utt_id: r["text"] for j, r in pairs})
        counts[split] = {loc: sum(1 for j, _ in pairs if j.locale == loc) for loc in config.locales}
    return counts
