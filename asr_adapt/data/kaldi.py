"""Kaldi data dirs <-> :class:`~asr_adapt.data.types.Utterance` lists.

A data dir holds byte-wise sorted tables (see :mod:`asr_adapt.data.tables`):

=========== =========================================== ==================================
file        line                                        notes
=========== =========================================== ==================================
wav.scp     ``REC path`` or ``REC cmd args |``          REC = utterance id without segments
segments    ``UTT REC START END`` (seconds)             optional; cuts recordings
text        ``UTT transcript``                          absent for unlabelled audio
utt2spk     ``UTT SPK``                                 required; SPK = UTT when unknown
spk2utt     ``SPK UTT1 UTT2 ...``                       inverse of utt2spk
utt2lang    ``UTT el-GR``                               BCP-47 locale
utt2dur     ``UTT 3.250``                               seconds
=========== =========================================== ==================================

Reading is lenient (CRLF, missing final newline); :func:`validate` says what Kaldi would
reject and :func:`fix` repairs it. Writing is atomic and sorted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from asr_adapt.data.audio import AudioError, audio_duration, find_audio_files
from asr_adapt.data.kaldi_check import Problem, fix, validate  # noqa: F401  (public API)
from asr_adapt.data.tables import byte_key, format_seconds, read_table, spk2utt_from_utt2spk, write_table
from asr_adapt.data.types import Utterance

log = logging.getLogger(__name__)

# Tables written by write_data_dir; a stale one from an earlier write is removed.
_OPTIONAL_TABLES = ("segments", "text", "utt2lang", "utt2dur")


def read_data_dir(data_dir: str | os.PathLike) -> list[Utterance]:
    """Utterances of a Kaldi data dir, sorted by utterance id.

    With ``segments`` each utterance is a segment (``segment=True``, ``offset`` = start,
    ``duration`` = end - start) of its recording; otherwise each ``wav.scp`` entry is one
    utterance and ``duration`` comes from ``utt2dur`` when present. ``text`` is ``None``
    for every utterance when the dir has no ``text`` file.

    Raises:
        FileNotFoundError: no ``wav.scp``.
        ValueError: a segment names a recording missing from ``wav.scp`` or is malformed.
    """
    d = Path(data_dir)
    if not (d / "wav.scp").is_file():
        raise FileNotFoundError(f"{d}: not a Kaldi data dir (no wav.scp)")
    wav = read_table(d / "wav.scp")
    tables = {n: read_table(d / n) if (d / n).is_file() else None for n in ("text", "utt2spk", "utt2lang", "utt2dur")}

    def get(name: str, utt: str) -> str | None:
        t = tables[name]
        return None if t is None else t.get(utt)

    out = []
    if (d / "segments").is_file():
        for utt, value in read_table(d / "segments").items():
            parts = value.split()
            if len(parts) != 3 or parts[0] not in wav:
                raise ValueError(f"{d}/segments: bad entry {utt} {value!r}; run `asr-adapt data validate {d}`")
            rec, start, end = parts[0], float(parts[1]), float(parts[2])
            out.append(_utt(utt, wav[rec], get, offset=start, duration=end - start, segment=True, recording=rec))
    else:
        for utt, spec in wav.items():
            dur = get("utt2dur", utt)
            out.append(_utt(utt, spec, get, duration=float(dur) if dur else None, recording=utt))
    return sorted(out, key=lambda u: byte_key(u.utt_id))


def _utt(utt: str, spec: str, get, **kw) -> Utterance:
    return Utterance(utt, spec, text=get("text", utt), lang=get("utt2lang", utt), speaker=get("utt2spk", utt), **kw)


def write_data_dir(data_dir: str | os.PathLike, utterances: Sequence[Utterance]) -> None:
    """Write utterances as a Kaldi data dir (atomic, sorted files), replacing its tables.

    * ``segments`` is written when any utterance is a segment or has an offset; recordings
      then get their ``Utterance.recording`` id or one derived from the audio path.
    * ``text`` when the utterances have transcripts (all or none may have one),
      ``utt2lang`` when they have locales (all or none), ``utt2dur`` always, reading the
      audio header for unknown durations (left out, with a warning, if a header is unreadable).
    * ``utt2spk`` uses the utterance id as speaker when unknown; ``spk2utt`` is derived.

    Raises:
        ValueError: duplicate utterance ids, or text/locale known for only some utterances.
    """
    d = Path(data_dir)
    utts = list(utterances)
    ids = [u.utt_id for u in utts]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"duplicate utterance id {dup!r}")
    d.mkdir(parents=True, exist_ok=True)
    tables: dict[str, dict[str, str]] = {}
    if any(u.segment or u.offset for u in utts):
        tables["wav.scp"], tables["segments"] = _segments(utts)
    else:
        tables["wav.scp"] = {u.utt_id: u.audio for u in utts}
    for name, attr in (("text", "text"), ("utt2lang", "lang")):
        have = [u for u in utts if getattr(u, attr) is not None]
        if have and len(have) != len(utts):
            missing = next(u.utt_id for u in utts if getattr(u, attr) is None)
            raise ValueError(f"{attr} is known for {len(have)} of {len(utts)} utterances (none for {missing!r}); "
                             f"Kaldi's {name} must cover all or none")
        if have:
            tables[name] = {u.utt_id: " ".join(getattr(u, attr).split()) for u in utts}
    durs = _durations(utts)
    if durs is not None:
        tables["utt2dur"] = {k: format_seconds(v) for k, v in durs.items()}
    tables["utt2spk"] = {u.utt_id: u.speaker or u.utt_id for u in utts}
    tables["spk2utt"] = spk2utt_from_utt2spk(tables["utt2spk"])
    for name in _OPTIONAL_TABLES:
        if name not in tables and (d / name).exists():
            (d / name).unlink()
    for name, t in tables.items():
        write_table(d / name, t)


def _durations(utts: Sequence[Utterance]) -> dict[str, float] | None:
    out = {}
    for u in utts:
        dur = u.duration
        if dur is None:
            try:
                dur = audio_duration(u.audio) - u.offset
            except AudioError as e:
                log.warning("not writing utt2dur: %s", e)
                return None
        out[u.utt_id] = dur
    return out


def _segments(utts: Sequence[Utterance]) -> tuple[dict[str, str], dict[str, str]]:
    """(wav.scp, segments) tables for utterances cut from recordings."""
    rec_of_audio: dict[str, str] = {}
    wav: dict[str, str] = {}
    for u in utts:
        if u.recording is not None:
            if wav.get(u.recording, u.audio) != u.audio:
                raise ValueError(f"recording {u.recording!r} points to two audio sources: {wav[u.recording]!r}, {u.audio!r}")
            wav[u.recording] = u.audio
            rec_of_audio.setdefault(u.audio, u.recording)
    for u in utts:
        if u.recording is None and u.audio not in rec_of_audio:
            rec = base = sanitize_id(Path(u.audio.rstrip("| ").split()[-1]).stem or "rec")
            n = 1
            while rec in wav:
                n += 1
                rec = f"{base}-{n}"
            wav[rec] = u.audio
            rec_of_audio[u.audio] = rec
    segs = {}
    for u in utts:
        rec = u.recording or rec_of_audio[u.audio]
        dur = u.duration if u.duration is not None else audio_duration(u.audio) - u.offset
        segs[u.utt_id] = f"{rec} {format_seconds(u.offset)} {format_seconds(u.offset + dur)}"
    return wav, segs


def sanitize_id(s: str) -> str:
    """A Kaldi-safe id: word characters, ``.``, ``+``, ``-``; anything else becomes ``_``."""
    return re.sub(r"[^\w.+-]", "_", s) or "_"


def utterances_from_audio_dir(root: str | os.PathLike, lang: str | None = None) -> list[Utterance]:
    """One utterance per audio file under ``root`` (recursive).

    The utterance id is the relative path without extension, ``/`` -> ``-``
    (``spk1/a.wav`` -> ``spk1-a``), so equal basenames in different folders stay
    distinct; ids that still collide (``a/b.wav`` vs ``a/b.flac``, ``a-b/c`` vs ``a/b-c``)
    get a short hash of their relative path appended. Durations come from the headers;
    an unreadable file keeps ``duration=None`` (loading it later raises ``AudioError``).
    """
    root = Path(root)
    files = find_audio_files(root)
    rels = [f.relative_to(root).as_posix() for f in files]
    ids = [sanitize_id(r.rsplit(".", 1)[0].replace("/", "-")) for r in rels]
    counts: dict[str, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    ids = [i if counts[i] == 1 else f"{i}-{hashlib.sha1(r.encode()).hexdigest()[:8]}" for i, r in zip(ids, rels)]
    out = []
    for utt, f in zip(ids, files):
        try:
            dur: float | None = audio_duration(f)
        except AudioError as e:
            log.warning("%s", e)
            dur = None
        out.append(Utterance(utt, str(f), lang=lang, duration=dur))
    return sorted(out, key=lambda u: byte_key(u.utt_id))


def load_utterances(path: str | os.PathLike, lang: str | None = None) -> list[Utterance]:
    """Utterances from a Kaldi data dir, a JSONL manifest, or a folder of audio files.

    ``lang`` sets the locale of audio-folder utterances (dirs and manifests carry their own).
    """
    from asr_adapt.data.manifest import read_manifest

    p = Path(path)
    if p.is_dir() and (p / "wav.scp").is_file():
        return read_data_dir(p)
    if p.is_file():
        return read_manifest(p)
    if p.is_dir():
        return utterances_from_audio_dir(p, lang=lang)
    raise FileNotFoundError(f"{p}: no such data dir, manifest or audio folder")
