"""Output formats of a decode job, rebuilt from ``hyp.jsonl`` at the end of every run.

``hyp.jsonl`` is the source of truth (append-only, resumable); the files here are views of
it, written atomically, so a resumed run produces the same files as an uninterrupted one.
Per-utterance formats go to ``OUT/<record["out"]>.<ext>``, where ``out`` mirrors the
input's relative path, so equal basenames in different folders do not collide.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from asr_adapt.fileio import atomic_write, write_lines
from asr_adapt.registry import Registry

Writer = Callable[[Sequence[dict], Path], None]
WRITERS: Registry[Writer] = Registry("output format")
"""format name -> ``fn(records, out_dir)``."""


def _per_file(records: Sequence[dict], out_dir: Path, ext: str, render: Callable[[dict], str]) -> None:
    for rec in records:
        atomic_write(out_dir / f"{rec['out']}.{ext}", render(rec))


def _segments(rec: dict) -> list[tuple[float, float, str]]:
    segs = rec.get("segments") or [(0.0, rec.get("duration") or 0.0, rec["text"])]
    return [(float(s), float(e), t) for s, e, t in segs if t]


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _srt(rec: dict) -> str:
    cues = [f"{i}\n{_stamp(s, ',')} --> {_stamp(e, ',')}\n{t}\n" for i, (s, e, t) in enumerate(_segments(rec), 1)]
    return "\n".join(cues)


def _vtt(rec: dict) -> str:
    cues = [f"{_stamp(s, '.')} --> {_stamp(e, '.')}\n{t}\n" for s, e, t in _segments(rec)]
    return "WEBVTT\n\n" + "\n".join(cues)


WRITERS.register("txt", lambda records, out: _per_file(records, out, "txt", lambda r: r["text"] + "\n"))
WRITERS.register("srt", lambda records, out: _per_file(records, out, "srt", _srt))
WRITERS.register("vtt", lambda records, out: _per_file(records, out, "vtt", _vtt))
# hyp.jsonl itself is always written by the job; naming it is allowed and a no-op.
WRITERS.register("jsonl", lambda records, out: None)
WRITERS.register(
    "kaldi",
    lambda records, out: write_lines(
        out / "text", sorted((f"{r['utt_id']} {r['text']}".rstrip() for r in records), key=lambda s: s.split(" ", 1)[0].encode())
    ),
)


def _tsv(records: Sequence[dict], out: Path) -> None:
    def clean(s) -> str:
        return str("" if s is None else s).replace("\t", " ").replace("\n", " ")

    rows = ["utt_id\taudio\tlang\tduration\ttext"]
    for r in sorted(records, key=lambda r: r["utt_id"]):
        rows.append("\t".join(clean(r.get(k)) for k in ("utt_id", "audio", "lang", "duration", "text")))
    write_lines(out / "hyp.tsv", rows)


WRITERS.register("tsv", _tsv)


def parse_formats(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"txt,srt"`` -> ``("txt", "srt")``; unknown names fail with the known ones."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    for n in names:
        WRITERS.get(n)
    return tuple(dict.fromkeys(names))


def write_outputs(records: Sequence[dict], out_dir: str | Path, formats: Sequence[str]) -> None:
    for name in formats:
        WRITERS.get(name)(records, Path(out_dir))
