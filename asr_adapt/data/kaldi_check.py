"""Validate and repair Kaldi data dirs with the rules of Kaldi's ``utils/validate_data_dir.sh``.

Rules applied to every table present (``wav.scp``, ``segments``, ``text``, ``utt2spk``,
``spk2utt``, ``utt2lang``, ``utt2dur`` and any other ``utt2*`` file):

* UTF-8, LF line ends (no CRLF), a final newline, no blank lines;
* byte-wise sorted (``LC_ALL=C``) with unique keys;
* the utterance list of every per-utterance table equals that of ``segments`` (if present)
  or ``wav.scp``; ``spk2utt`` is exactly the inverse of ``utt2spk``;
* utterance ids sort in the same order as their speakers (Kaldi needs this for
  ``spk2utt``-driven tools; prefix utterance ids with the speaker id);
* non-empty transcripts, positive finite durations, ``segments`` with
  ``0 <= start < end`` and a recording id present in ``wav.scp``.

A problem that repeats on many lines of one file (CRLF, unsorted, ...) is reported once at
its first line with a count, so a broken 100k-line file gives a readable report.
"""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from asr_adapt.data.tables import Entry, byte_key, read_entries, spk2utt_from_utt2spk, write_table

# Tables keyed by utterance id besides the ``utt2*`` family.
_UTT_TABLES = ("text",)


@dataclass(frozen=True)
class Problem:
    """One violation. ``line`` is 1-based, 0 for a problem with the file as a whole."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class _Report:
    """Collects problems; repeated kinds per file collapse to the first line plus a count."""

    def __init__(self) -> None:
        self._first: dict[tuple[str, str], Problem] = {}
        self._count: dict[tuple[str, str], int] = {}

    def add(self, file: str, line: int, message: str, kind: str | None = None) -> None:
        key = (file, kind or f"{line}:{message}")
        if key not in self._first:
            self._first[key] = Problem(file, line, message)
        self._count[key] = self._count.get(key, 0) + 1

    def problems(self) -> list[Problem]:
        out = []
        for key, p in self._first.items():
            n = self._count[key]
            out.append(p if n == 1 else Problem(p.file, p.line, f"{p.message} (and {n - 1} more lines like it)"))
        return sorted(out, key=lambda p: (p.file, p.line, p.message))


def utt_tables(d: Path) -> list[str]:
    """Names of the per-utterance tables present in ``d``."""
    names = [n for n in _UTT_TABLES if (d / n).is_file()]
    names += sorted(p.name for p in d.glob("utt2*") if p.is_file())
    return names


def _check_format(d: Path, name: str, rep: _Report) -> list[Entry]:
    """Byte-level checks, then the parsed entries (lenient, so later checks still run)."""
    raw = (d / name).read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        rep.add(name, line, "not valid UTF-8", "utf8")
    lines = raw.split(b"\n")
    if raw and not raw.endswith(b"\n"):
        rep.add(name, len(lines), "no newline at end of file")
    for i, line in enumerate(lines[:-1] if raw.endswith(b"\n") else lines, start=1):
        if line.endswith(b"\r"):
            rep.add(name, i, "CRLF line ending (Windows); Kaldi needs LF", "crlf")
        elif not line.strip():
            rep.add(name, i, "blank line", "blank")
    entries = read_entries(d / name)
    if not entries:
        rep.add(name, 0, "file is empty")
    prev: str | None = None
    seen: dict[str, int] = {}
    for e in entries:
        if prev is not None and byte_key(e.key) < byte_key(prev):
            rep.add(name, e.lineno, f"not sorted: {e.key!r} after {prev!r} (sort with LC_ALL=C)", "unsorted")
        if e.key in seen:
            rep.add(name, e.lineno, f"duplicate key {e.key!r} (first on line {seen[e.key]})", "dup")
        else:
            seen[e.key] = e.lineno
        prev = e.key
    return entries


# BCP-47 shape: a 2-3 letter language, then subtags (script, region, variant): el, el-GR, zh-Hans-CN.
_LOCALE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")


def locale_error(v: str) -> str | None:
    """Why ``v`` is not a usable locale tag (``el_GR``, ``english``, two tokens), or None."""
    if not v or len(v.split()) != 1:
        return f"locale {v!r} must be one token"
    if not _LOCALE.fullmatch(v):
        return f"locale {v!r} is not a BCP-47 tag (like el-GR or el)"
    return None


def _value_checks() -> dict[str, Callable[[str], str | None]]:
    """Per-table value checks: value -> error message or None."""

    def positive_float(v: str) -> str | None:
        try:
            x = float(v)
        except ValueError:
            return f"duration {v!r} is not a number"
        return None if math.isfinite(x) and x > 0 else f"duration {v!r} must be positive"

    return {
        "text": lambda v: None if v.strip() else "empty transcript",
        "utt2dur": positive_float,
        "utt2spk": lambda v: None if v and len(v.split()) == 1 else f"speaker id {v!r} must be one token",
        "utt2lang": locale_error,
        "wav.scp": lambda v: None if v.strip() else "empty audio path",
    }


def segment_error(value: str, recordings: set[str] | None) -> str | None:
    """Why a ``segments`` value ``"REC START END"`` is invalid, or None."""
    parts = value.split()
    if len(parts) != 3:
        return f"expected 'utt recording start end', got {len(parts) + 1} fields"
    rec, start_s, end_s = parts
    try:
        start, end = float(start_s), float(end_s)
    except ValueError:
        return f"start/end {start_s!r} {end_s!r} are not numbers"
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
        return f"start {start_s} must be a finite, non-negative time"
    if end <= start:
        return f"end {end_s} must be greater than start {start_s}"
    if recordings is not None and rec not in recordings:
        return f"recording {rec!r} is not in wav.scp"
    return None


def validate(data_dir: str | Path) -> list[Problem]:
    """All problems in a Kaldi data dir; an empty list means Kaldi's tools will accept it."""
    d = Path(data_dir)
    rep = _Report()
    if not d.is_dir():
        return [Problem(str(d), 0, "not a directory")]
    if not (d / "wav.scp").is_file():
        rep.add("wav.scp", 0, "missing (every data dir needs wav.scp)")
        return rep.problems()
    tables = {n: _check_format(d, n, rep) for n in ["wav.scp", "segments", "spk2utt", *utt_tables(d)] if (d / n).is_file()}
    checks = _value_checks()
    for name, entries in tables.items():
        check = checks.get(name)
        for e in entries if check else ():
            if msg := check(e.value):
                rep.add(name, e.lineno, f"{e.key}: {msg}", f"value:{msg.split()[0]}")
    recordings = {e.key for e in tables["wav.scp"]}
    base = "segments" if "segments" in tables else "wav.scp"
    if base == "segments":
        for e in tables["segments"]:
            if msg := segment_error(e.value, recordings):
                rep.add("segments", e.lineno, f"{e.key}: {msg}", f"seg:{msg.split()[0]}")
    utts = {e.key for e in tables[base]}
    if "utt2spk" not in tables:
        rep.add("utt2spk", 0, "missing (Kaldi needs utt2spk; use the utterance id as speaker if unknown)")
    for name in utt_tables(d):
        keys = set()
        for e in tables[name]:
            keys.add(e.key)
            if e.key not in utts:
                rep.add(name, e.lineno, f"utterance {e.key!r} is not in {base}", "extra")
        missing = sorted(utts - keys, key=byte_key)
        if missing:
            rep.add(name, 0, f"{len(missing)} utterances of {base} are missing here (first: {missing[0]!r})")
    if "utt2spk" in tables:
        _check_speakers(tables, rep)
    return rep.problems()


def _check_speakers(tables: dict[str, list[Entry]], rep: _Report) -> None:
    utt2spk = {e.key: e.value for e in tables["utt2spk"]}
    # Kaldi: sorting utt2spk by speaker must not change the order of utterances.
    by_utt = sorted(utt2spk, key=byte_key)
    by_spk = sorted(utt2spk, key=lambda u: (byte_key(utt2spk[u]), byte_key(u)))
    if by_utt != by_spk:
        first = next(u for u, v in zip(by_utt, by_spk) if u != v)
        rep.add("utt2spk", 0, f"utterance order differs from speaker order near {first!r}: "
                "make every utterance id start with its speaker id")
    if "spk2utt" not in tables:
        rep.add("spk2utt", 0, "missing (regenerate it from utt2spk, e.g. `asr-adapt data fix`)")
        return
    listed: set[str] = set()
    for e in tables["spk2utt"]:
        for u in e.value.split():
            if u in listed:
                rep.add("spk2utt", e.lineno, f"utterance {u!r} is listed twice", "spk2utt-dup")
            listed.add(u)
            if utt2spk.get(u) != e.key:
                where = "is not in utt2spk" if u not in utt2spk else f"belongs to {utt2spk[u]!r} in utt2spk"
                rep.add("spk2utt", e.lineno, f"speaker {e.key!r} lists {u!r}, which {where}", "spk2utt-mismatch")
    missing = sorted(set(utt2spk) - listed, key=byte_key)
    if missing:
        rep.add("spk2utt", 0, f"{len(missing)} utterances of utt2spk are missing here (first: {missing[0]!r})")


def fix(data_dir: str | Path) -> tuple[int, int]:
    """Repair a data dir in place: sort, drop inconsistent utterances, regenerate ``spk2utt``.

    An utterance is kept only when it is in ``segments``/``wav.scp`` (with a valid segment),
    appears in every per-utterance table present, with one unambiguous value per table
    (exact duplicate lines are merged), a non-empty transcript and a positive duration.
    The original files are copied to ``DIR/.backup/<timestamp>/`` first. A missing
    ``utt2spk`` is created with each utterance as its own speaker (Kaldi's convention).
    Utterance ids that do not start with their speaker id cannot be fixed by sorting; that
    problem stays for :func:`validate` to report.

    Returns:
        (kept, total): utterances kept, utterances in ``segments``/``wav.scp`` before.
    """
    d = Path(data_dir)
    if not (d / "wav.scp").is_file():
        raise FileNotFoundError(f"{d}/wav.scp: missing; nothing to fix")
    names = ["wav.scp", "segments", "spk2utt", *utt_tables(d)]
    present = [n for n in names if (d / n).is_file()]
    _backup(d, present)

    def unique(name: str) -> dict[str, str]:
        values: dict[str, set[str]] = {}
        for e in read_entries(d / name):
            values.setdefault(e.key, set()).add(e.value)
        return {k: next(iter(v)) for k, v in values.items() if len(v) == 1}

    wav = {k: v for k, v in unique("wav.scp").items() if v}
    has_segments = (d / "segments").is_file()
    if has_segments:
        all_segs = read_entries(d / "segments")
        total = len({e.key for e in all_segs})
        base = {k: v for k, v in unique("segments").items() if segment_error(v, set(wav)) is None}
    else:
        total = len({e.key for e in read_entries(d / "wav.scp")})
        base = wav
    keep = set(base)
    checks = _value_checks()
    tables = {}
    for name in utt_tables(d):
        t = unique(name)
        check = checks.get(name)
        keep &= {k for k, v in t.items() if check is None or check(v) is None}
        tables[name] = t
    if "utt2spk" not in tables:
        tables["utt2spk"] = {u: u for u in keep}
    for name, t in tables.items():
        write_table(d / name, {k: v for k, v in t.items() if k in keep})
    if has_segments:
        segs = {k: v for k, v in base.items() if k in keep}
        write_table(d / "segments", segs)
        used = {v.split()[0] for v in segs.values()}
        write_table(d / "wav.scp", {k: v for k, v in wav.items() if k in used})
    else:
        write_table(d / "wav.scp", {k: v for k, v in wav.items() if k in keep})
    write_table(d / "spk2utt", spk2utt_from_utt2spk({k: v for k, v in tables["utt2spk"].items() if k in keep}))
    return len(keep), total


def _backup(d: Path, names: list[str]) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = d / ".backup" / stamp
    n = 1
    while dest.exists():  # two fixes within one second keep both backups
        dest = d / ".backup" / f"{stamp}.{n}"
        n += 1
    dest.mkdir(parents=True)
    for name in names:
        shutil.copy2(d / name, dest / name)
    return dest
