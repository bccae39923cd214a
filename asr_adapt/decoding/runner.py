"""The resumable batch decode job behind ``asr-adapt decode`` and pseudo-labelling.

:func:`decode_utterances` decodes a list of :class:`~asr_adapt.data.types.Utterance` into
``OUT/hyp.jsonl`` (one line per utterance, fsynced as it is produced). A re-run skips the
utterances already there, so ``kill -9`` + re-run leaves exactly one line per utterance.
Audio is read in a background thread one batch ahead of the model; unreadable audio goes
to ``OUT/failed.tsv`` and the job carries on. Batches are formed from utterances sorted by
duration (longest first, so memory problems show at once) to minimise padding.
"""

from __future__ import annotations

import concurrent.futures as futures
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asr_adapt.data.audio import AudioError, audio_duration, is_pipe
from asr_adapt.data.types import Utterance
from asr_adapt.decoding.writers import parse_formats, write_outputs
from asr_adapt.fileio import JsonlAppender, atomic_write, dir_lock, read_jsonl

log = logging.getLogger(__name__)

HYP_FILE = "hyp.jsonl"
FAILED_FILE = "failed.tsv"


@dataclass
class DecodeSummary:
    """What a run did. ``rtf``: decode wall time / audio seconds decoded in this run."""

    total: int = 0
    decoded: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    audio_s: float = 0.0
    wall_s: float = 0.0

    @property
    def rtf(self) -> float:
        return self.wall_s / self.audio_s if self.audio_s else 0.0


def output_stems(utterances: Sequence[Utterance], input_root: str | Path | None) -> dict[str, str]:
    """Relative output name (no extension) per utterance id.

    Audio under ``input_root`` keeps its relative path (``spk1/a.wav`` -> ``spk1/a``;
    if two files share a stem, e.g. ``a.wav`` and ``a.flac``, both keep their extension);
    anything else is named by its utterance id.
    """
    root = Path(input_root).resolve() if input_root is not None else None
    stems: dict[str, str] = {}
    for u in utterances:
        rel = None
        if root is not None and not u.segment and not is_pipe(u.audio):
            try:
                rel = Path(u.audio).resolve().relative_to(root).as_posix()
            except ValueError:
                rel = None
        stems[u.utt_id] = rel.rsplit(".", 1)[0] if rel else u.utt_id.replace("..", "_").lstrip("/")
    counts: dict[str, int] = {}
    for s in stems.values():
        counts[s] = counts.get(s, 0) + 1
    for u in utterances:
        if counts[stems[u.utt_id]] > 1:
            rel = Path(u.audio).resolve().relative_to(root).as_posix() if root else u.utt_id
            stems[u.utt_id] = rel
    return stems


def decode_utterances(
    transcriber,
    utterances: Sequence[Utterance],
    out_dir: str | Path,
    *,
    batch_size: int = 8,
    formats: str | Sequence[str] = ("jsonl",),
    lang: str | None = None,
    input_root: str | Path | None = None,
    progress: bool = True,
) -> DecodeSummary:
    """Decode ``utterances`` into ``out_dir`` (resumable; one run per directory at a time).

    Args:
        transcriber: the :class:`~asr_adapt.decoding.service.Transcriber` (model, adapters and
            every per-row policy: identification, adapter fallback, per-row options).
        lang: locale for every utterance (overrides theirs); ``None`` or ``"auto"``: each
            utterance's own locale, else identification.
        input_root: folder the audio came from, for mirrored per-file outputs.
    Returns:
        a :class:`DecodeSummary`; ``summary.failed`` lists (path, reason).
    """
    out = Path(out_dir)
    fmts = parse_formats(formats)
    lang = None if lang in (None, "", "auto") else lang
    ids = [u.utt_id for u in utterances]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"duplicate utterance ids in the input: {dup}")
    stems = output_stems(utterances, input_root)
    summary = DecodeSummary(total=len(utterances))
    with dir_lock(out, "asr-adapt decode"):
        done = {r["utt_id"] for r in read_jsonl(out / HYP_FILE) if "utt_id" in r}
        todo = [u for u in utterances if u.utt_id not in done]
        summary.skipped = len(utterances) - len(todo)
        if summary.skipped:
            log.info("resuming: %d of %d utterances already decoded in %s", summary.skipped, len(utterances), out)
        sized = _with_durations(todo, summary.failed)
        sized.sort(key=lambda ud: -ud[1])
        batches = [sized[i : i + batch_size] for i in range(0, len(sized), batch_size)]
        bar = _progress(len(sized), progress)
        t0 = time.perf_counter()
        with JsonlAppender(out / HYP_FILE) as sink:
            for batch in _prefetch(batches, summary.failed):
                if not batch:
                    continue
                utts, wavs = zip(*batch)
                locales = [lang or u.lang for u in utts]
                decoded = transcriber.transcribe(list(wavs), locales)
                for u, wav, d in zip(utts, wavs, decoded):
                    sink.write(_record(u, wav, d, stems[u.utt_id]))
                summary.decoded += len(utts)
                summary.audio_s += sum(len(w) for w in wavs) / 16000
                summary.wall_s = time.perf_counter() - t0
                bar.update(len(utts))
                bar.set_postfix(utt_s=f"{summary.decoded / summary.wall_s:.2f}", rtf=f"{summary.rtf:.3f}")
            bar.update(len(sized) - bar.n)  # unreadable files count as processed
        bar.close()
        wanted = set(ids)
        records = [r for r in read_jsonl(out / HYP_FILE) if r.get("utt_id") in wanted]
        write_outputs(records, out, fmts)
        rows = ["path\treason"] + [f"{p}\t{r}".replace("\n", " ") for p, r in summary.failed]
        if summary.failed or (out / FAILED_FILE).exists():
            atomic_write(out / FAILED_FILE, "\n".join(rows) + "\n")
    return summary


def _record(u: Utterance, wav: np.ndarray, d, stem: str) -> dict:
    h = d.hyp
    rec = {
        "utt_id": u.utt_id,
        "audio": u.audio,
        "text": h.text,
        "lang": d.locale,
        "adapter": d.adapter,
        "duration": round(len(wav) / 16000, 3),
        "avg_logprob": None if h.avg_logprob is None else round(h.avg_logprob, 4),
        "compression_ratio": None if h.compression_ratio is None else round(h.compression_ratio, 3),
        "out": stem,
    }
    if u.segment:
        rec["offset"] = u.offset
    if u.text is not None:
        rec["ref"] = u.text
    for key in ("fallback", "looped", "truncated"):
        if getattr(h, key, False):
            rec[key] = True
    segs = getattr(h, "segments", None)
    if segs:
        rec["segments"] = [[round(s, 3), round(e, 3), t] for s, e, t in segs]
    return rec


def _with_durations(utts: Sequence[Utterance], failed: list) -> list[tuple[Utterance, float]]:
    """(utterance, seconds) for sorting; headers only, so this is quick. Pipes sort as 0 s."""
    out = []
    for u in utts:
        if u.duration is not None or is_pipe(u.audio):
            out.append((u, u.duration or 0.0))
            continue
        try:
            out.append((u, audio_duration(u.audio)))
        except AudioError as e:
            failed.append((u.audio, e.reason))
    return out


def _load(batch: Sequence[tuple[Utterance, float]]) -> tuple[list, list]:
    ok, bad = [], []
    for u, _ in batch:
        try:
            ok.append((u, u.load()))
        except AudioError as e:
            bad.append((u.audio, e.reason))
    return ok, bad


def _prefetch(batches: list, failed: list) -> Iterator[list[tuple[Utterance, np.ndarray]]]:
    """Yield loaded batches while the next one is read in a background thread."""
    if not batches:
        return
    with futures.ThreadPoolExecutor(1, thread_name_prefix="audio") as pool:
        pending = pool.submit(_load, batches[0])
        for i in range(len(batches)):
            ok, bad = pending.result()
            if i + 1 < len(batches):
                pending = pool.submit(_load, batches[i + 1])
            for path, reason in bad:
                log.warning("skipping %s: %s", path, reason)
            failed.extend(bad)
            yield ok


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="utt", disable=not enabled, dynamic_ncols=True)
