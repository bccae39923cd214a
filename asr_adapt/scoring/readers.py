"""Readers for the files that scoring consumes.

- Kaldi ``text``: ``utt_id<space>transcript`` per line (a bare ``utt_id`` is an empty text).
- Kaldi data dir: ``text`` plus optional ``utt2lang`` (``utt_id locale``).
- Decode JSONL: records with ``utt_id``, ``text`` and optional ``lang``, as written by
  ``asr-adapt decode`` (a decode output dir holds it as ``hyp.jsonl``).

Every reader returns ``(texts, langs)``: ``utt_id -> text`` and ``utt_id -> locale`` (the
latter empty when the source carries no locale). Duplicate ids are errors: silently keeping
one of two transcripts would change the score.
"""

from __future__ import annotations

import json
from pathlib import Path


class ScoringError(ValueError):
    """Bad scoring input (unreadable file, duplicate or empty reference, ...)."""


TextMap = dict[str, str]
LangMap = dict[str, str]


def _read_two_column(path: Path, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ScoringError(f"cannot read {what} {path}: {e}") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        key = parts[0]
        if key in out:
            raise ScoringError(f"{path}:{lineno}: duplicate utterance id {key!r}")
        out[key] = parts[1] if len(parts) > 1 else ""
    return out


def read_kaldi_text(path: str | Path) -> tuple[TextMap, LangMap]:
    """Read a Kaldi ``text`` file; no locales."""
    return _read_two_column(Path(path), "Kaldi text"), {}


def read_kaldi_dir(path: str | Path) -> tuple[TextMap, LangMap]:
    """Read ``DIR/text`` and, when present, ``DIR/utt2lang``."""
    path = Path(path)
    if not (path / "text").is_file():
        raise ScoringError(f"{path} is not a Kaldi data dir: no 'text' file")
    texts, _ = read_kaldi_text(path / "text")
    langs = _read_two_column(path / "utt2lang", "utt2lang") if (path / "utt2lang").is_file() else {}
    return texts, {k: v.strip() for k, v in langs.items()}


def read_decode_jsonl(path: str | Path) -> tuple[TextMap, LangMap]:
    """Read decode JSONL records (``utt_id``, ``text``, optional ``lang``)."""
    path = Path(path)
    texts: TextMap = {}
    langs: LangMap = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ScoringError(f"cannot read decode output {path}: {e}") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ScoringError(f"{path}:{lineno}: not JSON ({e.msg})") from None
        if not isinstance(rec, dict) or "utt_id" not in rec:
            raise ScoringError(f"{path}:{lineno}: record has no 'utt_id'")
        uid = str(rec["utt_id"])
        if uid in texts:
            raise ScoringError(f"{path}:{lineno}: duplicate utterance id {uid!r}")
        texts[uid] = rec.get("text") or ""
        if rec.get("lang"):
            langs[uid] = str(rec["lang"])
    return texts, langs


def read_transcripts(path: str | Path) -> tuple[TextMap, LangMap]:
    """Read references or hypotheses from any supported source, chosen by its shape.

    A directory is a Kaldi data dir (has ``text``) or a decode output dir (has
    ``hyp.jsonl``); a file ending in ``.jsonl``/``.json`` is decode JSONL; any other file
    is a Kaldi ``text`` file.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "hyp.jsonl").is_file():
            return read_decode_jsonl(path / "hyp.jsonl")
        return read_kaldi_dir(path)
    if not path.exists():
        raise ScoringError(f"{path} does not exist")
    if path.suffix in (".jsonl", ".json"):
        return read_decode_jsonl(path)
    return read_kaldi_text(path)
