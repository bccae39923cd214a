"""Google FLEURS releases -> Kaldi data dirs, all languages of a split merged.

Release layout (the dataset's ``data/`` folder with the audio archives unpacked)::

    <root>/<code>/audio/{train,dev,test}/*.wav
    <root>/<code>/{train,dev,test}.tsv

``<code>`` is FLEURS' language code (``el_gr``, ``pt_br``, ``cmn_hans_cn``); it becomes the
BCP-47 tag ``el-GR``, ``pt-BR``, ``cmn-Hans-CN`` in ``utt2lang``. The tsvs have no header
and no quoting; the columns are: sentence id, audio file name, raw transcription,
normalised transcription, characters (space-separated), number of samples, gender.

FLEURS has several readings of each sentence (the id repeats) and, in some releases, rows
sharing an audio file name, so utterance ids are ``<tag>-<id>-<file stem>``. There are no
speaker ids: each utterance is its own speaker (Kaldi's convention when speakers are
unknown). ``text`` holds the raw transcription (cased, punctuated) unless
``text="normalized"``.
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
    finish,
    prepare_outdir,
    read_tsv,
    select_locale_dirs,
    utt_id,
    write_split,
)
from asr_adapt.data.types import Utterance

log = logging.getLogger(__name__)

# Column positions of the headerless FLEURS tsv.
ID, FILE, RAW, NORMALIZED = 0, 1, 2, 3
TEXT_COLUMNS = {"raw": RAW, "normalized": NORMALIZED}


@dataclass(frozen=True)
class FleursConfig(PrepareConfig):
    """Options of :func:`prepare_fleurs`."""

    splits: tuple[str, ...] = field(
        default=("train", "dev", "test"), metadata={"help": "release tsvs to turn into split dirs"}
    )
    text: str = field(
        default="raw",
        metadata={"help": "transcript column: raw (cased, punctuated) or normalized (lower case, no punctuation)",
                  "choices": tuple(TEXT_COLUMNS)},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.text not in TEXT_COLUMNS:
            raise ValueError(f"text must be one of {', '.join(TEXT_COLUMNS)}, got {self.text!r}")


def _is_locale_dir(d: Path) -> bool:
    return (d / "audio").is_dir() or any((d / f"{s}.tsv").is_file() for s in ("train", "dev", "test"))


def _rows(tsv: Path, audio_dir: Path, locale: str, text_col: int) -> Iterator[Candidate]:
    _, rows = read_tsv(tsv, header=False)
    needed = max(ID, FILE, text_col) + 1
    for lineno, fields in rows:
        if len(fields) < needed:
            u = Utterance(utt_id(locale, tsv.stem, f"line{lineno}"), f"{tsv}:{lineno}", lang=locale)
            yield Candidate(u, "malformed", f"{len(fields)} fields, need {needed}")
            continue
        name = fields[FILE].strip()
        uid = utt_id(locale, fields[ID].strip(), Path(name).stem)
        text = fields[text_col].strip()
        u = Utterance(uid, abs_audio_path(audio_dir / name), text=text, lang=locale, speaker=uid)
        yield Candidate(u) if text else Candidate(u, "no-text", "empty transcription")


def prepare_fleurs(src: str | Path, out: str | Path, config: FleursConfig = FleursConfig()) -> PrepareReport:
    """Write Kaldi dirs ``OUT/<split>`` from a FLEURS release.

    Missing, empty or undecodable clips are left out and listed with their reason in
    ``OUT/<split>/skipped.tsv``; counts per locale are in the returned report and in
    ``OUT/prepare.json``.

    Raises:
        FileNotFoundError: ``src`` is not a release (no language folders).
        FileExistsError: split dirs exist and ``config.overwrite`` is false.
        ValueError: a requested locale is absent.
    """
    root, out = Path(src), Path(out)
    dirs = select_locale_dirs(root, config.locales, _is_locale_dir)
    prepare_outdir(out, config.splits, config.overwrite)
    report = PrepareReport("fleurs", str(out))
    for split in config.splits:
        candidates: list[Candidate] = []
        for d in dirs:
            tsv = d / f"{split}.tsv"
            if not tsv.is_file():
                log.warning("%s: no %s.tsv; %s has no %s data", d, split, bcp47(d.name), split)
                continue
            candidates += _rows(tsv, d / "audio" / split, bcp47(d.name), TEXT_COLUMNS[config.text])
        report.splits[split] = write_split(out / split, split, candidates, config.jobs)
    return finish(report, config)


CORPORA.register("fleurs", Corpus(
    "fleurs", FleursConfig, prepare_fleurs,
    "Google FLEURS release: <root>/<code>/audio/{train,dev,test}/*.wav + {train,dev,test}.tsv"))
