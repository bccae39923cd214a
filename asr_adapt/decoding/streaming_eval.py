"""The streaming evaluation job behind ``asr-adapt stream-eval``.

Backbone-agnostic: each backbone family registers a :class:`StreamingFamily` in
:data:`STREAM_SIMULATORS` (how to stream one utterance at one operating point, how to
decode it offline, what the operating points are called). The job streams every
utterance at every operating point, decodes it offline once with the same model, and
writes, resumably (one fsynced JSONL line per utterance, a re-run skips finished ones):

* ``OUT/stream-<family>-<point>.jsonl``: committed words with their times, per utterance;
* ``OUT/offline-<family>.jsonl``: the offline transcript, per utterance.

:mod:`asr_adapt.decoding.streaming_summary` turns those files into the summary tables and
the WER-vs-latency plot. Times are seconds of audio (stream time), never wall clock,
except ``processing_s`` (wall time spent on the utterance, for the real-time factor).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asr_adapt.data.audio import AudioError
from asr_adapt.data.types import Utterance
from asr_adapt.decoding.decoders import transcribe_batch
from asr_adapt.decoding.streaming_transducer import TransducerStreamingConfig, stream_transducer, token_words
from asr_adapt.decoding.streaming_whisper import WhisperStreamingConfig, join_units, new_stream, run_stream
from asr_adapt.decoding.whisper_stream_step import StepRow, decode_steps
from asr_adapt.fileio import JsonlAppender, atomic_write, dir_lock, read_jsonl
from asr_adapt.registry import Registry

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FAILED_FILE = "failed.tsv"


@dataclass(frozen=True)
class StreamEvalConfig:
    """What ``stream-eval`` measures. Operating points: ``chunk_ms`` for chunked
    backbones (transducer), ``step_ms`` for re-decoding ones (Whisper)."""

    chunk_ms: tuple[int, ...] = field(default=(160, 320, 640), metadata={
        "help": "transducer: encoder chunk sizes (ms, multiples of 40), one operating point each"})
    left_context_chunks: int = field(default=-1, metadata={
        "help": "transducer: chunks of left context in the first pass; -1: unlimited"})
    step_ms: tuple[int, ...] = field(default=(500, 1000), metadata={
        "help": "whisper: new audio (ms) between re-decodes of the growing buffer, one operating point each"})
    policies: tuple[str, ...] = field(default=("local-agreement",), metadata={
        "help": "whisper: commit policies, each run at every step_ms ('local-agreement', 'alignatt')"})
    agreement: int = field(default=2, metadata={"help": "whisper: LocalAgreement-n (commit what n updates share)"})
    guard_ms: int = field(default=400, metadata={
        "help": "whisper alignatt: hold back tokens attending to the last this-many ms of the buffer"})
    max_buffer_s: float = field(default=10.0, metadata={"help": "whisper: trim committed audio beyond this buffer length (s)"})
    normaliser: str = field(default="multilingual", metadata={"help": "text normaliser for WER and word matching"})
    max_utts: int | None = field(default=None, metadata={"help": "at most this many utterances per locale (by id)"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunk_ms", tuple(int(c) for c in self.chunk_ms))
        object.__setattr__(self, "step_ms", tuple(int(s) for s in self.step_ms))
        object.__setattr__(self, "policies", tuple(self.policies))
        for c in self.chunk_ms:
            TransducerStreamingConfig(chunk_ms=c, left_context_chunks=self.left_context_chunks)
        self.whisper_points()  # validates every (policy, step) combination

    def whisper_points(self) -> list[WhisperStreamingConfig]:
        """One Whisper streaming setting per (policy, step)."""
        return [WhisperStreamingConfig(step_ms=s, policy=p, agreement=self.agreement, guard_ms=self.guard_ms,
                                       max_buffer_s=self.max_buffer_s) for p in self.policies for s in self.step_ms]
        if self.max_utts is not None and self.max_utts < 1:
            raise ValueError(f"max_utts must be >= 1, got {self.max_utts}")


@dataclass
class StreamedUtt:
    """One utterance streamed at one operating point.

    words, emit_times, model_avail: (W,) committed words; the audio time each was
    emitted; when the model itself had the word's audio (family-specific, see
    :data:`STREAM_SIMULATORS`). extra: JSON-able family details (tokens, updates, trims).
    """

    text: str
    words: list[str]
    emit_times: list[float]
    model_avail: list[float]
    processing_s: float
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StreamingFamily:
    """How one backbone family streams (registered in :data:`STREAM_SIMULATORS`).

    points(config) -> {file-name label: (operating point in ms, the family's setting)};
    stream(transcriber, wav (N,), locale, setting, config) -> :class:`StreamedUtt`;
    offline(backbone, wav (N,), locale, config) -> transcript;
    availability: what ``model_avail`` means, for the report.
    """

    points: Callable[[StreamEvalConfig], dict[str, tuple[int, Any]]]
    stream: Callable[..., StreamedUtt]
    offline: Callable[..., str]
    availability: str


STREAM_SIMULATORS: Registry[StreamingFamily] = Registry("streaming simulator")


# --------------------------------------------------------------------------- transducer
def _transducer_points(config: StreamEvalConfig) -> dict[str, tuple[int, Any]]:
    return {f"chunk{c}-left{config.left_context_chunks}":
            (c, TransducerStreamingConfig(chunk_ms=c, left_context_chunks=config.left_context_chunks))
            for c in config.chunk_ms}


def _transducer_stream(transcriber, wav, lang, cfg: TransducerStreamingConfig, config: StreamEvalConfig) -> StreamedUtt:
    backbone = transcriber.backbone
    s = stream_transducer(backbone, wav, transcriber.adapter_for(lang), cfg)
    words, (emit, avail) = token_words(backbone.tokenizer, s.tokens, [s.emit_times, s.avail_times])
    pieces = [backbone.tokenizer.decode([t]) for t in s.tokens]
    return StreamedUtt(
        backbone.tokenizer.decode(s.tokens), words, emit, avail, s.processing_s,
        {"tokens": [[p, e, f] for p, e, f in zip(pieces, s.emit_times, s.frame_times)], "pieces": s.pieces},
    )


def _transducer_offline(transcriber, wav, lang, config: StreamEvalConfig) -> str:
    # Full attention in the first pass, then the second pass: the model at its best.
    key = transcriber.adapter_for(lang)
    opts = dataclasses.replace(transcriber.options_for(key), mode="full", chunk_ms=0)
    return transcribe_batch(transcriber.backbone, [wav], [lang], opts, route=[key])[0].text


STREAM_SIMULATORS.register("transducer", StreamingFamily(
    points=_transducer_points,
    stream=_transducer_stream,
    offline=_transducer_offline,
    availability="end of the audio of the encoder frame that emitted the word's last token "
                 "(frame start + one encoder frame, 40 or 80 ms + 15 ms analysis-window overhang)",
))


# --------------------------------------------------------------------------- whisper
def _whisper_stream(transcriber, wav, lang, cfg: WhisperStreamingConfig, config: StreamEvalConfig) -> StreamedUtt:
    key = transcriber.adapter_for(lang)
    options = transcriber.options_for(key)
    r = run_stream(new_stream(cfg), wav,
                   lambda step: decode_steps(transcriber.backbone, [StepRow(step, lang, key, options)])[0])
    return StreamedUtt(join_units(r.words, lang), r.words, r.emit_times, r.first_seen, r.processing_s,
                       {"policy": cfg.policy, "updates": r.updates, "trims": r.trims,
                        "forced_flushes": r.forced_flushes})


def _whisper_offline(transcriber, wav, lang, config: StreamEvalConfig) -> str:
    return transcriber.transcribe([wav], [lang])[0].hyp.text


STREAM_SIMULATORS.register("whisper", StreamingFamily(
    points=lambda c: {p.label: (p.step_ms, p) for p in c.whisper_points()},
    stream=_whisper_stream,
    offline=_whisper_offline,
    availability="local-agreement: end of the first update window whose hypothesis already held the word at "
                 "its position; alignatt: end of the encoder frame its last token attended to",
))


# --------------------------------------------------------------------------- helpers
def speech_span(wav: np.ndarray, sample_rate: int = SAMPLE_RATE, rel_db: float = 35.0) -> tuple[float, float]:
    """(onset, offset) in seconds: first and last 10 ms frame within ``rel_db`` of the loudest.

    A crude energy detector, enough for read speech with short lead-in/out silence; the
    whole clip when nothing stands out (e.g. heavy noise).
    """
    hop = sample_rate // 100
    n = len(wav) // hop
    if n == 0:
        return 0.0, len(wav) / sample_rate
    frames = np.asarray(wav[: n * hop], dtype=np.float64).reshape(n, hop)
    db = 10 * np.log10((frames**2).mean(1) + 1e-12)
    active = np.flatnonzero(db >= db.max() - rel_db)
    return round(active[0] * hop / sample_rate, 3), round((active[-1] + 1) * hop / sample_rate, 3)


def select_utterances(utts: Sequence[Utterance], max_per_locale: int | None) -> list[Utterance]:
    """Utterances sorted by id, at most ``max_per_locale`` of each locale."""
    seen: dict[str | None, int] = {}
    out = []
    for u in sorted(utts, key=lambda u: u.utt_id):
        if max_per_locale is None or seen.get(u.lang, 0) < max_per_locale:
            seen[u.lang] = seen.get(u.lang, 0) + 1
            out.append(u)
    return out


def stream_file(family: str, label: str) -> str:
    return f"stream-{family}-{label}.jsonl"


def offline_file(family: str) -> str:
    return f"offline-{family}.jsonl"


def _stream_record(u: Utterance, wav: np.ndarray, s: StreamedUtt, point: int) -> dict:
    dur = len(wav) / SAMPLE_RATE
    return {
        "utt_id": u.utt_id, "lang": u.lang, "ref": u.text, "point": point, "duration": round(dur, 3),
        "speech": list(speech_span(wav)), "text": s.text,
        "words": [[w, round(e, 4), round(a, 4)] for w, e, a in zip(s.words, s.emit_times, s.model_avail)],
        "processing_s": round(s.processing_s, 4), "rtf": round(s.processing_s / dur, 4) if dur else None,
        **s.extra,
    }


# --------------------------------------------------------------------------- the job
@dataclass
class StreamEvalRun:
    """What a run did: files per operating point, utterances done/skipped/failed."""

    family: str
    files: dict[str, Path]  # label -> stream file; "offline" -> offline file
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def run_stream_eval(transcriber, utterances: Sequence[Utterance], out_dir: str | Path,
                    config: StreamEvalConfig = StreamEvalConfig(), *, progress: bool = True) -> StreamEvalRun:
    """Stream + offline-decode ``utterances`` (with references) into ``out_dir`` (resumable).

    ``transcriber`` (:class:`~asr_adapt.decoding.service.Transcriber`) holds the model, its
    adapters and the routing policy: each utterance goes to its locale's adapter by the same
    rule and with the same per-row options as `asr-adapt decode`; its family picks the
    simulator in :data:`STREAM_SIMULATORS`.
    """
    family = transcriber.backbone.family
    sim = STREAM_SIMULATORS.get(family)
    out = Path(out_dir)
    utts = select_utterances(utterances, config.max_utts)
    if not utts:
        raise ValueError("no utterances to evaluate")
    no_ref = [u.utt_id for u in utts if not (u.text or "").strip()]
    if no_ref:
        raise ValueError(f"stream-eval needs reference transcripts; none for {no_ref[:5]}"
                         + (f" and {len(no_ref) - 5} more" if len(no_ref) > 5 else ""))
    jobs = sim.points(config)
    run = StreamEvalRun(family, {lab: out / stream_file(family, lab) for lab in jobs})
    run.files["offline"] = out / offline_file(family)
    with dir_lock(out, "asr-adapt stream-eval"):
        done = {k: {r["utt_id"] for r in read_jsonl(p) if "utt_id" in r} for k, p in run.files.items()}
        todo = [u for u in utts if any(u.utt_id not in d for d in done.values())]
        run.skipped = len(utts) - len(todo)
        if run.skipped:
            log.info("resuming: %d of %d utterances already complete in %s", run.skipped, len(utts), out)
        sinks = {k: JsonlAppender(p) for k, p in run.files.items()}
        bar = _progress(sum(u.utt_id not in d for u in todo for d in done.values()), progress)
        try:
            for u in todo:
                try:
                    wav = u.load()
                except AudioError as e:
                    log.warning("skipping %s: %s", u.audio, e.reason)
                    run.failed.append((u.audio, e.reason))
                    continue
                if u.utt_id not in done["offline"]:
                    t0 = time.perf_counter()
                    text = sim.offline(transcriber, wav, u.lang, config)
                    sinks["offline"].write({"utt_id": u.utt_id, "lang": u.lang, "ref": u.text, "text": text,
                                            "duration": round(len(wav) / SAMPLE_RATE, 3),
                                            "processing_s": round(time.perf_counter() - t0, 4)})
                    bar.update(1)
                for lab, (point, setting) in jobs.items():
                    if u.utt_id in done[lab]:
                        continue
                    bar.set_postfix(point=lab)
                    s = sim.stream(transcriber, wav, u.lang, setting, config)
                    sinks[lab].write(_stream_record(u, wav, s, point))
                    bar.update(1)
                run.done += 1
        finally:
            for s in sinks.values():
                s.close()
            bar.close()
        if run.failed or (out / FAILED_FILE).exists():
            rows = ["path\treason"] + [f"{p}\t{r}".replace("\n", " ") for p, r in run.failed]
            atomic_write(out / FAILED_FILE, "\n".join(rows) + "\n")
    return run


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="decode", disable=not enabled, dynamic_ncols=True)
