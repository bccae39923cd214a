"""JSONL manifests: one JSON object per utterance, the NeMo/lhotse-style exchange format.

Fields::

    {"audio_filepath": "wavs/a.wav",   # path or Kaldi pipe "cmd |"; relative paths are
                                       # resolved against the manifest's folder
     "duration": 3.25,                 # seconds (of the segment when offset is given)
     "text": "καλημέρα",               # null or absent for unlabelled audio
     "lang": "el-GR",                  # BCP-47 locale
     "offset": 1.5,                    # optional: the utterance is [offset, offset+duration)
     "speaker": "spk1",                # optional
     "utt_id": "spk1-0001"}            # optional: derived from the audio path if absent

Writing is atomic; records keep the order given (Kaldi dirs sort, manifests need not).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

from asr_adapt.data.audio import is_pipe
from asr_adapt.data.kaldi import read_data_dir, sanitize_id, write_data_dir
from asr_adapt.data.types import Utterance
from asr_adapt.fileio import atomic_write

REQUIRED = ("audio_filepath",)


def utterance_to_record(u: Utterance, base_dir: Path | None = None) -> dict:
    """Manifest record of an utterance; optional fields are written only when known.

    With ``base_dir`` (the manifest's folder) a relative audio path, which is relative to
    the working directory like Kaldi's, is rewritten relative to ``base_dir``; absolute
    paths and pipes are kept as they are.
    """
    audio = u.audio
    if base_dir is not None and not is_pipe(audio) and not os.path.isabs(audio):
        audio = os.path.relpath(os.path.abspath(audio), os.path.abspath(base_dir))
    rec: dict = {"audio_filepath": audio, "duration": u.duration, "text": u.text, "lang": u.lang}
    if u.segment or u.offset:
        rec["offset"] = u.offset
    if u.speaker is not None:
        rec["speaker"] = u.speaker
    rec["utt_id"] = u.utt_id
    return rec


def record_to_utterance(rec: dict, base_dir: Path | None = None, lineno: int = 0) -> Utterance:
    """Utterance of a manifest record; ``base_dir`` resolves relative audio paths."""
    for key in REQUIRED:
        if key not in rec:
            raise ValueError(f"manifest line {lineno}: missing {key!r}")
    audio = str(rec["audio_filepath"])
    if base_dir is not None and not is_pipe(audio) and not os.path.isabs(audio):
        audio = os.path.normpath(base_dir / audio)
    derived = Path(str(rec["audio_filepath"])).with_suffix("").as_posix().strip("./").replace("/", "-")
    utt_id = rec.get("utt_id") or sanitize_id(derived)
    offset = rec.get("offset")
    dur = rec.get("duration")
    return Utterance(
        utt_id=str(utt_id),
        audio=audio,
        text=rec.get("text"),
        lang=rec.get("lang"),
        speaker=rec.get("speaker"),
        duration=None if dur is None else float(dur),
        offset=float(offset or 0.0),
        segment=offset is not None and dur is not None,
    )


def read_manifest(path: str | os.PathLike) -> list[Utterance]:
    """Utterances of a JSONL manifest (blank lines skipped, CRLF tolerated).

    Raises:
        ValueError: a line that is not a JSON object, a record without ``audio_filepath``,
            or two records with the same ``utt_id`` (ids derived from paths are made unique
            by appending the line number).
    """
    path = Path(path)
    out: list[Utterance] = []
    seen: set[str] = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object")
        u = record_to_utterance(rec, path.parent, lineno)
        if u.utt_id in seen:
            if rec.get("utt_id"):
                raise ValueError(f"{path}:{lineno}: duplicate utt_id {u.utt_id!r}")
            u = dataclasses.replace(u, utt_id=f"{u.utt_id}-{lineno}")
        seen.add(u.utt_id)
        out.append(u)
    return out


def write_manifest(path: str | os.PathLike, utterances: Sequence[Utterance]) -> None:
    """Write utterances as JSONL atomically (UTF-8, non-ASCII kept readable)."""
    base = Path(path).parent
    lines = [json.dumps(utterance_to_record(u, base), ensure_ascii=False) + "\n" for u in utterances]
    atomic_write(path, "".join(lines))


def kaldi_to_manifest(data_dir: str | os.PathLike, path: str | os.PathLike) -> int:
    """Convert a Kaldi data dir to a JSONL manifest; returns the number of utterances."""
    utts = read_data_dir(data_dir)
    write_manifest(path, utts)
    return len(utts)


def manifest_to_kaldi(path: str | os.PathLike, data_dir: str | os.PathLike) -> int:
    """Convert a JSONL manifest to a Kaldi data dir; returns the number of utterances."""
    utts = read_manifest(path)
    write_data_dir(data_dir, utts)
    return len(utts)
