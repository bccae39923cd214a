"""Mozilla Common Voice releases -> Kaldi data dirs, all locales of a split merged.

Release layout (``cv-corpus-<version>/`` as unpacked from the download)::

    <root>/<locale>/clips/*.mp3
    <root>/<locale>/{train,dev,test,validated}.tsv   (other.tsv etc. are ignored)

The tsvs are tab-separated with a header and no quoting. Columns are found by name, so
releases that add, drop or reorder columns (``sentence_id``, ``variant``, ``segment``...)
all work: ``path`` and ``sentence`` are required, ``client_id`` gives the speaker and an
optional ``locale`` column is checked against the folder name.

Output under ``OUT``: one Kaldi dir per split (``train``, ``dev``, ``test``) plus
``unlabelled`` (``validated.tsv`` rows in none of the splits, without ``text``: the audio
noisy-student training pseudo-labels). Speakers are ``<locale>-<hash of client_id>``,
utterance ids ``<speaker>-<clip stem>``; ``utt2lang`` holds the folder name as a BCP-47 tag
(``el``, ``pt-BR``, ``sv-SE``); ``wav.scp`` points at the MP3s, which
:func:`~asr_adapt.data.audio.load_audio` decodes directly (libsndfile >= 1.1, else librosa).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from asr_adapt.data.corpora.common import (
    CORPORA,
    Candidate,
    Corpus,
    PrepareConfig,
    PrepareReport,
    abs_audio_path,
    bcp47,
    find_column,
    finish,
    prepare_outdir,
    read_tsv,
    select_locale_dirs,
    speaker_id,
    utt_id,
    write_split,
)
from asr_adapt.data.types import Utterance

log = logging.getLogger(__name__)

# Column names seen across releases (v1 used `path` without extension; some mirrors rename
# `sentence`). The first alias present wins.
PATH_COLUMNS = ("path", "filename", "file")
TEXT_COLUMNS = ("sentence", "sentence_text", "text", "transcript", "transcription")
CLIENT_COLUMNS = ("client_id", "speaker_id")
LOCALE_COLUMNS = ("locale",)
UNLABELLED = "unlabelled"


@dataclass(frozen=True)
class CommonVoiceConfig(PrepareConfig):
    """Options of :func:`prepare_commonvoice`."""

    splits: tuple[str, ...] = field(
        default=("train", "dev", "test"), metadata={"help": "release tsvs to turn into split dirs"}
    )
    unlabelled: bool = field(
        default=True,
        metadata={"help": "also write OUT/unlabelled from validated.tsv rows that are in none of the splits"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if UNLABELLED in self.splits:
            raise ValueError(f"{UNLABELLED!r} is made from validated.tsv, not a split name")


def _is_locale_dir(d: Path) -> bool:
    return (d / "clips").is_dir() or (d / "validated.tsv").is_file()


def _rows(tsv: Path, locale_dir: Path, locale: str, labelled: bool) -> Iterator[tuple[str, Candidate]]:
    """``(clip name, candidate)`` per row; rows that cannot become utterances carry a reason."""
    names, rows = read_tsv(tsv, header=True)
    pi = find_column(names, PATH_COLUMNS, tsv)
    ti = find_column(names, TEXT_COLUMNS, tsv, required=labelled)
    ci = find_column(names, CLIENT_COLUMNS, tsv, required=False)
    li = find_column(names, LOCALE_COLUMNS, tsv, required=False)
    needed = max(i for i in (pi, ti, ci) if i is not None) + 1
    mismatched = 0
    for lineno, fields in rows:
        if len(fields) < needed:
            where = f"{tsv}:{lineno}"
            u = Utterance(utt_id(locale, tsv.stem, f"line{lineno}"), where, lang=locale)
            yield where, Candidate(u, "malformed", f"{len(fields)} fields, need {needed}")
            continue
        clip = fields[pi].strip()
        audio = locale_dir / "clips" / clip
        if not audio.suffix and not audio.exists():
            audio = audio.with_suffix(".mp3")  # v1 releases list clips without extension
        stem = Path(clip).stem
        client = fields[ci].strip() if ci is not None else None
        spk = speaker_id(locale, client, stem)
        text = fields[ti].strip() if labelled and ti is not None else None
        if li is not None and li < len(fields) and fields[li].strip() and bcp47(fields[li]) != locale:
            mismatched += 1
        u = Utterance(utt_id(spk, stem), abs_audio_path(audio), text=text, lang=locale, speaker=spk)
        if labelled and not text:
            yield clip, Candidate(u, "no-text", "empty sentence")
        else:
            yield clip, Candidate(u)
    if mismatched:
        # The folder decides the tag (it is what --locales selects); say when rows disagree.
        log.warning("%s: %d row(s) have a locale column other than %s; using %s", tsv, mismatched, locale, locale)


def prepare_commonvoice(src: str | Path, out: str | Path, config: CommonVoiceConfig = CommonVoiceConfig()
                        ) -> PrepareReport:
    """Write Kaldi dirs ``OUT/<split>`` (+ ``OUT/unlabelled``) from a Common Voice release.

    Clips that are missing, empty or undecodable are left out and listed with their reason
    in ``OUT/<split>/skipped.tsv``; counts per locale are in the returned report and in
    ``OUT/prepare.json``.

    Raises:
        FileNotFoundError: ``src`` is not a release (no locale folders).
        FileExistsError: split dirs exist and ``config.overwrite`` is false.
        ValueError: a requested locale is absent, or a tsv lacks a required column.
    """
    root, out = Path(src), Path(out)
    dirs = select_locale_dirs(root, config.locales, _is_locale_dir)
    names = list(config.splits) + ([UNLABELLED] if config.unlabelled else [])
    prepare_outdir(out, names, config.overwrite)
    candidates: dict[str, list[Candidate]] = {s: [] for s in names}
    for d in dirs:
        locale = bcp47(d.name)
        in_splits: set[str] = set()
        for split in config.splits:
            tsv = d / f"{split}.tsv"
            if not tsv.is_file():
                log.warning("%s: no %s.tsv; %s has no %s data", d, split, locale, split)
                continue
            for clip, cand in _rows(tsv, d, locale, labelled=True):
                in_splits.add(clip)
                candidates[split].append(cand)
        validated = d / "validated.tsv"
        if config.unlabelled and validated.is_file():
            # Validated clips the release kept out of train/dev/test: same speakers and
            # domain, so good audio for pseudo-labels. Their transcripts are dropped on purpose.
            candidates[UNLABELLED] += [c for clip, c in _rows(validated, d, locale, labelled=False)
                                       if clip not in in_splits]
    report = PrepareReport("commonvoice", str(out))
    for split in names:
        report.splits[split] = write_split(out / split, split, candidates[split], config.jobs)
    return finish(report, config)


CORPORA.register("commonvoice", Corpus(
    "commonvoice", CommonVoiceConfig, prepare_commonvoice,
    "Mozilla Common Voice release: <root>/<locale>/clips/*.mp3 + {train,dev,test,validated}.tsv"))
