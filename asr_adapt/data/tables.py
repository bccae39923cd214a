"""Kaldi-style text tables: one ``KEY VALUE`` entry per line.

Every file in a Kaldi data dir (``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``,
``utt2lang``, ``utt2dur``, ``segments``) is such a table. Kaldi's tools compare lines
byte-wise (``LC_ALL=C sort``), so we sort by the UTF-8 bytes of the key; for ``str``
that equals code-point order, which Python's ``sorted`` already uses. Keys never contain
whitespace and a space sorts below every printable key byte, so sorting by key also
sorts the whole lines.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from asr_adapt.fileio import atomic_write


@dataclass(frozen=True)
class Entry:
    """One parsed line. ``value`` is everything after the first run of whitespace
    (for ``text`` the transcript, for ``wav.scp`` a path or a ``cmd |`` pipe); ``lineno`` is 1-based."""

    key: str
    value: str
    lineno: int


def byte_key(key: str) -> bytes:
    """Sort key matching ``LC_ALL=C sort``."""
    return key.encode("utf-8", "surrogateescape")


def split_line(line: str) -> tuple[str, str]:
    """``"utt1  hello world"`` -> ``("utt1", "hello world")``; a key alone gives an empty value."""
    parts = line.strip().split(maxsplit=1)
    if not parts:
        return "", ""
    return parts[0], (parts[1].strip() if len(parts) > 1 else "")


def read_entries(path: str | os.PathLike) -> list[Entry]:
    """Parse a table leniently: CRLF line ends, a missing final newline and blank lines
    are accepted (``validate`` reports them; readers should not fail on them)."""
    raw = Path(path).read_bytes().decode("utf-8", "surrogateescape")
    out = []
    for i, line in enumerate(raw.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        key, value = split_line(line)
        out.append(Entry(key, value, i))
    return out


def read_table(path: str | os.PathLike) -> dict[str, str]:
    """``{key: value}``; with duplicate keys the last line wins (validate reports duplicates)."""
    return {e.key: e.value for e in read_entries(path)}


def format_table(items: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """Sorted ``KEY VALUE\\n`` lines. An empty value writes the key alone (no trailing space)."""
    pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
    pairs.sort(key=lambda kv: byte_key(kv[0]))
    lines = []
    for k, v in pairs:
        if not k or any(c.isspace() for c in k):
            raise ValueError(f"invalid Kaldi key {k!r}: keys must be non-empty and contain no whitespace")
        if "\n" in v or "\r" in v:
            raise ValueError(f"value for key {k!r} contains a line break")
        lines.append(f"{k} {v}\n" if v else f"{k}\n")
    return "".join(lines)


def write_table(path: str | os.PathLike, items: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
    """Write a table atomically, byte-wise sorted by key."""
    atomic_write(path, format_table(items).encode("utf-8", "surrogateescape"))


def spk2utt_from_utt2spk(utt2spk: Mapping[str, str]) -> dict[str, str]:
    """``{spk: "utt1 utt2 ..."}`` with utterances in byte order (what ``utt2spk_to_spk2utt.pl`` gives)."""
    groups: dict[str, list[str]] = {}
    for utt in sorted(utt2spk, key=byte_key):
        groups.setdefault(utt2spk[utt], []).append(utt)
    return {spk: " ".join(utts) for spk, utts in groups.items()}


def format_seconds(x: float) -> str:
    """Durations/times with 3 decimals (ms), as Kaldi's ``get_utt2dur.sh`` writes them."""
    return f"{x:.3f}"
