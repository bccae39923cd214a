"""What every corpus preparer shares: the registry entry, locale tags, clip checks, output.

A preparer turns a downloaded release into candidate utterances per split
(:class:`Candidate`: an utterance whose audio has not been checked yet, or a row already
rejected with a reason). :func:`write_split` checks each clip's audio header, writes the
good ones as a Kaldi data dir ``OUT/<split>`` and the rejected ones to
``OUT/<split>/skipped.tsv``, so a release with broken clips still gives a data dir that
validates, and the user sees exactly what was left out and why.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import soundfile as sf

from asr_adapt.data.audio import SAMPLE_RATE, AudioError, load_audio
from asr_adapt.data.kaldi import sanitize_id, write_data_dir
from asr_adapt.data.tables import byte_key
from asr_adapt.data.types import Utterance
from asr_adapt.fileio import atomic_write_json, write_lines
from asr_adapt.registry import Registry

log = logging.getLogger(__name__)

SKIPPED_FILE = "skipped.tsv"
SKIPPED_HEADER = "utt_id\tlocale\treason\tsource\tdetail"

# Reasons a row is left out; skipped.tsv and the printed counts use these words.
REASONS = {
    "missing": "audio file not found",
    "empty": "audio file has 0 bytes",
    "unreadable": "audio header or stream cannot be decoded",
    "no-samples": "audio has no samples",
    "no-text": "empty transcript",
    "malformed": "tsv row has too few fields",
    "duplicate": "utterance id already used in this split",
}

# Formats libsndfile may lack (it reads MP3 only from 1.1): load_audio decodes them through
# librosa instead, so the probe does the same before calling such a clip unreadable.
_FALLBACK_SUFFIXES = (".mp3", ".m4a", ".opus", ".ogg")


@dataclass(frozen=True)
class PrepareConfig:
    """Options every corpus preparer takes."""

    locales: tuple[str, ...] = field(
        default=(), metadata={"help": "locales to prepare: release folder names or BCP-47 tags (default: all)"}
    )
    jobs: int = field(default=4, metadata={"help": "threads reading audio headers"})
    overwrite: bool = field(default=False, metadata={"help": "replace existing split dirs under OUT"})

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")


@dataclass(frozen=True)
class Corpus:
    """A registered corpus: its config class and ``prepare(src, out, config) -> PrepareReport``."""

    name: str
    config_cls: type
    prepare: Callable[..., PrepareReport]
    help: str


CORPORA: Registry[Corpus] = Registry("corpus")


@dataclass(frozen=True)
class Candidate:
    """A release row on its way to becoming an utterance.

    ``utt`` carries id, audio path, text, locale and speaker (``duration`` unset); a row
    rejected while parsing has ``reason`` set and is only reported.
    """

    utt: Utterance
    reason: str | None = None
    detail: str = ""


@dataclass
class SplitReport:
    """Per-locale kept counts and per-(locale, reason) skipped counts of one split."""

    split: str
    kept: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)  # (locale, reason) -> n
    hours: float = 0.0

    def to_json(self) -> dict:
        skipped: dict[str, dict[str, int]] = {}
        for (loc, reason), n in sorted(self.skipped.items()):
            skipped.setdefault(loc, {})[reason] = n
        return {"kept": dict(sorted(self.kept.items())), "skipped": skipped, "hours": round(self.hours, 4)}


@dataclass
class PrepareReport:
    """What a preparer wrote: one :class:`SplitReport` per split dir."""

    corpus: str
    out: str
    splits: dict[str, SplitReport] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"corpus": self.corpus, "out": self.out, "splits": {k: v.to_json() for k, v in self.splits.items()}}

    def lines(self) -> list[str]:
        """Human-readable table: split, locale, kept, skipped with reasons."""
        out = [f"{'split':<11} {'locale':<12} {'kept':>7} {'skipped':>8}  reasons"]
        for name, rep in self.splits.items():
            locales = sorted(set(rep.kept) | {loc for loc, _ in rep.skipped})
            for loc in locales:
                reasons = {r: n for (lc, r), n in sorted(rep.skipped.items()) if lc == loc}
                why = ", ".join(f"{r}={n}" for r, n in reasons.items())
                out.append(f"{name:<11} {loc:<12} {rep.kept[loc]:>7} {sum(reasons.values()):>8}  {why}")
        return out


def bcp47(tag: str) -> str:
    """Canonical case of a locale tag; ``_`` becomes ``-``.

    Language lower case, a 4-letter script in title case, a 2-letter or 3-digit region in
    upper case, anything else lower case: ``el_gr`` -> ``el-GR``, ``cmn_hans_cn`` ->
    ``cmn-Hans-CN``, ``pt-BR`` and ``rm-sursilv`` unchanged. Both Common Voice folder
    names and FLEURS codes become the tags the rest of the toolkit keys adapters by.
    """
    parts = [p for p in tag.replace("_", "-").split("-") if p]
    if not parts:
        raise ValueError(f"empty locale tag {tag!r}")
    out = [parts[0].lower()]
    for p in parts[1:]:
        if len(p) == 4 and p.isalpha():
            out.append(p.title())
        elif (len(p) == 2 and p.isalpha()) or (len(p) == 3 and p.isdigit()):
            out.append(p.upper())
        else:
            out.append(p.lower())
    return "-".join(out)


def select_locale_dirs(root: Path, wanted: Sequence[str], is_locale_dir: Callable[[Path], bool]) -> list[Path]:
    """Locale folders of a release, filtered by ``wanted`` (folder names or tags, any case).

    Raises:
        FileNotFoundError: ``root`` holds no locale folder.
        ValueError: a wanted locale is not in the release (the message lists what is).
    """
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such release folder")
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and is_locale_dir(d))
    if not dirs:
        raise FileNotFoundError(f"{root}: no locale folders found (see the preparer's docstring for the layout)")
    if not wanted:
        return dirs
    by_tag = {bcp47(d.name): d for d in dirs}
    missing = [w for w in wanted if bcp47(w) not in by_tag]
    if missing:
        raise ValueError(f"{root}: locale(s) {', '.join(missing)} not in the release; "
                         f"found: {', '.join(d.name for d in dirs)}")
    return [by_tag[t] for t in sorted({bcp47(w) for w in wanted})]


def read_tsv(path: Path, header: bool) -> tuple[list[str], Iterable[tuple[int, list[str]]]]:
    """``(column names, (line number, fields) rows)`` of an unquoted tab-separated file.

    Release tsvs are not quoted: a transcript may start with ``"`` and contain tabs never,
    so ``QUOTE_NONE`` keeps quotes as text. Column names are stripped and lower-cased.
    With ``header=False`` the names list is empty and every line is a row.
    """
    f = open(path, encoding="utf-8-sig", newline="")
    reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    names = [c.strip().lower() for c in next(reader, [])] if header else []

    def rows() -> Iterable[tuple[int, list[str]]]:
        with f:
            for fields in reader:
                if fields and any(x.strip() for x in fields):
                    yield reader.line_num, fields

    return names, rows()


def find_column(names: list[str], aliases: Sequence[str], path: Path, required: bool = True) -> int | None:
    """Index of the first alias present in ``names``; ``None`` or ValueError when absent."""
    for a in aliases:
        if a in names:
            return names.index(a)
    if required:
        raise ValueError(f"{path}: no column named {' or '.join(aliases)}; columns: {', '.join(names)}")
    return None


def speaker_id(locale: str, client: str | None, utt_stem: str) -> str:
    """``<locale>-<10 hex>`` from an anonymous client id (or the clip when there is none).

    Hashing keeps ids short and Kaldi-safe (Common Voice client ids are 128-hex strings);
    the fixed length means no speaker id is a prefix of another, so utterance ids that
    start with it sort exactly as their speakers do.
    """
    key = client if client else f"utt:{utt_stem}"
    return f"{locale}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def utt_id(*parts: str) -> str:
    return "-".join(sanitize_id(p) for p in parts)


def probe(path: str) -> tuple[float | None, str | None, str]:
    """``(duration, None, "")`` for a usable clip, else ``(None, reason, detail)``.

    Reads the header only (fast on a whole release); formats libsndfile cannot open are
    decoded the way :func:`~asr_adapt.data.audio.load_audio` would, so a clip kept here
    is one the loader reads.
    """
    p = Path(path)
    if not p.is_file():
        return None, "missing", "file not found"
    if p.stat().st_size == 0:
        return None, "empty", "0 bytes"
    try:
        info = sf.info(path)
        frames, sr = info.frames, info.samplerate
    except Exception as e:
        if p.suffix.lower() not in _FALLBACK_SUFFIXES:
            return None, "unreadable", _one_line(e)
        try:
            frames, sr = len(load_audio(path)), SAMPLE_RATE
        except AudioError as e2:
            return None, "unreadable", _one_line(e2.reason)
    if frames <= 0 or sr <= 0:
        return None, "no-samples", f"{frames} frames"
    return frames / sr, None, ""


def _one_line(e: object) -> str:
    return " ".join(str(e).split())[:200]


def write_split(out: Path, split: str, candidates: Sequence[Candidate], jobs: int) -> SplitReport:
    """Probe each candidate's audio; write the good ones as Kaldi dir ``out`` plus ``skipped.tsv``.

    Nothing is written when no utterance survives (an empty Kaldi dir does not validate);
    the report still counts what was skipped.
    """
    rep = SplitReport(split)
    skipped: list[tuple[Utterance, str, str]] = []
    seen: set[str] = set()
    todo: list[Candidate] = []
    for c in candidates:
        if c.reason is None and c.utt.utt_id in seen:
            c = Candidate(c.utt, "duplicate", f"another row of this split has id {c.utt.utt_id}")
        if c.reason is not None:
            skipped.append((c.utt, c.reason, c.detail))
        else:
            seen.add(c.utt.utt_id)
            todo.append(c)
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # libsndfile releases the GIL
        probes = list(pool.map(lambda c: probe(c.utt.audio), todo))
    kept: list[Utterance] = []
    for c, (dur, reason, detail) in zip(todo, probes):
        if reason is not None:
            skipped.append((c.utt, reason, detail))
            continue
        kept.append(Utterance(c.utt.utt_id, c.utt.audio, text=c.utt.text, lang=c.utt.lang,
                              speaker=c.utt.speaker, duration=dur))
        rep.kept[c.utt.lang] += 1
        rep.hours += dur / 3600
    for u, reason, _ in skipped:
        rep.skipped[(u.lang, reason)] += 1
    if kept:
        write_data_dir(out, kept)
        skipped.sort(key=lambda s: byte_key(s[0].utt_id))
        write_lines(out / SKIPPED_FILE, [SKIPPED_HEADER] + [
            "\t".join((u.utt_id, u.lang or "", reason, u.audio, detail.replace("\t", " ")))
            for u, reason, detail in skipped])
    for loc in sorted({u.lang for u, _, _ in skipped}):
        n = sum(1 for u, _, _ in skipped if u.lang == loc)
        log.info("%s %s: skipped %d clip(s), see %s", split, loc, n, out / SKIPPED_FILE)
    return rep


def prepare_outdir(out: Path, splits: Iterable[str], overwrite: bool) -> None:
    """Refuse to replace finished split dirs unless ``overwrite``; then clear them.

    Clearing matters: a split that comes out empty this time must not leave last run's
    data dir behind looking current.
    """
    existing = [out / s for s in splits if (out / s / "wav.scp").exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(map(str, existing))} already exist(s); "
                              "overwrite (--overwrite) replaces them")
    for d in existing:
        shutil.rmtree(d)
    out.mkdir(parents=True, exist_ok=True)


def finish(report: PrepareReport, config: object) -> PrepareReport:
    """Write ``OUT/prepare.json`` (settings + counts), so a data dir says how it was made."""
    atomic_write_json(Path(report.out) / "prepare.json", {"config": asdict(config), **report.to_json()})
    return report


def abs_audio_path(p: Path) -> str:
    """Absolute audio path for wav.scp, so the data dir works from any working directory."""
    return os.path.abspath(p)
