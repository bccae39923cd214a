"""Live streaming for many clients at once: sessions and the scheduler that batches them.

A :class:`LiveSession` is one client's stream: its locale and adapter, the policy's stream
state (:class:`~asr_adapt.decoding.streaming_whisper.WhisperStream` or
:class:`~asr_adapt.decoding.streaming_transducer.TransducerStream`, the very classes
``stream-eval`` drives) and an outbox of events for the client. The
:class:`StreamScheduler` owns the model in one worker thread. Each tick it gathers every
session whose next step is ready (a whole ``step_ms`` or chunk of new audio, or the end),
oldest waiting first, and runs one step per session:

* Whisper: the steps of all sessions in one batched call
  (:func:`~asr_adapt.decoding.whisper_stream_step.decode_steps`): rows of different
  locales routed to their adapters, buffers of different lengths grouped by encoder window;
* transducer: the next chunk of every session in one batch
  (:func:`~asr_adapt.decoding.streaming_transducer.run_pieces`): each session keeps its own
  encoder and search state; states are stacked for the step (caches of different lengths
  left-padded and masked, positions per row) and split again after it.

Because a stream's steps depend only on its audio (not on arrival times or on which
sessions share a batch), a session commits exactly what ``stream-eval`` commits for the
same audio and settings. A session whose client sends slower than real time simply has no
ready step; nothing waits for it. One that sends faster than the model decodes is held
back by flow control (:meth:`LiveSession.room`) rather than buffering without bound.

Sessions opened with locale ``auto`` buffer ``lid_s`` of audio, are language-identified
(batched with other sessions waiting for identification) and then stream in that locale.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from asr_adapt.decoding.streaming_transducer import (
    TransducerStream,
    TransducerStreamingConfig,
    run_pieces,
    token_words,
)
from asr_adapt.decoding.streaming_whisper import WhisperStreamingConfig, join_units, new_stream
from asr_adapt.decoding.whisper_stream_step import StepRow, decode_steps
from asr_adapt.registry import Registry

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000


class SessionRefused(RuntimeError):
    """A session cannot be opened; ``code`` is the WebSocket close code to answer with."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SessionSettings:
    """What a client asked for (validated by the endpoint against the server's limits)."""

    locale: str | None  # None: identify the language from the first ``lid_s`` of audio
    policy: str = "local-agreement"
    step_ms: int = 1000
    guard_ms: int = 400
    chunk_ms: int = 320
    max_buffer_s: float = 10.0


Event = dict  # a JSON-able protocol event: {"type": "partial" | "final" | "language" | "error" | "end", ...}


class LiveSession:
    """One client's stream (see the module doc). Thread-safe through the scheduler's lock."""

    def __init__(self, sid: str, settings: SessionSettings, family: str, emit: Callable[[Event], None]) -> None:
        self.id = sid
        self.settings = settings
        self.family = family
        self.emit = emit
        self.locale = settings.locale
        self.adapter: str | None = None
        self.stream = None  # created once the locale is known; touched by the worker thread only
        self._inbox: list[np.ndarray] = []  # audio pushed by the client, not yet moved to the stream
        self._inbox_n = 0
        self._pre: list[np.ndarray] = []  # audio received before the locale is known
        self._pre_n = 0
        self.closed = False  # the client sent its end message
        self.done = False
        self.steps = 0  # model steps run for this session
        self.ready_since: float | None = None  # when its pending step became ready
        self._last_partial: str | None = None
        self._words: list[str] = []  # committed units
        self._tokens_reported = 0  # transducer: tokens seen by the last report
        self._pending_token = 0  # transducer: first token of the first word not final yet
        self._last_end = 0.0  # transducer: end time of the last final word

    # ------------------------------------------------------------------ audio in
    @property
    def received_s(self) -> float:
        inside = self._pre_n if self.stream is None else self.stream.received
        return (inside + self._inbox_n) / SAMPLE_RATE

    @property
    def backlog_s(self) -> float:
        """Audio received but not decoded yet (s)."""
        inside = self._pre_n / SAMPLE_RATE if self.stream is None else self.stream.buffered_s
        return inside + self._inbox_n / SAMPLE_RATE

    def push(self, samples: np.ndarray) -> None:
        """Client side (under the scheduler's lock): queue audio for the worker."""
        self._inbox.append(samples)
        self._inbox_n += len(samples)

    def close(self) -> None:
        self.closed = True

    def feed(self) -> None:
        """Worker side: move queued audio (and the end) into the stream."""
        if self._inbox:
            audio = np.concatenate(self._inbox)
            self._inbox, self._inbox_n = [], 0
            if self.stream is None:
                self._pre.append(audio)
                self._pre_n += len(audio)
            else:
                self.stream.push(audio)
        if self.closed and self.stream is not None and not self.stream.closed:
            self.stream.close()

    def start_stream(self, locale: str | None, adapter: str | None, model) -> None:
        """Fix the locale and create the policy's stream; audio received so far goes in first."""
        s = self.settings
        self.locale, self.adapter = locale, adapter
        self.stream = STREAM_FAMILIES.get(self.family).new(model, adapter, s)
        if self._pre:
            self.stream.push(np.concatenate(self._pre))
        self._pre, self._pre_n = [], 0
        self.feed()

    # ------------------------------------------------------------------ events out
    def report(self) -> None:
        """Turn what the stream committed since the last report into events."""
        STREAM_FAMILIES.get(self.family).report(self)
        if self.stream.done and not self.done:
            self.done = True
            self.emit({"type": "end", "text": self.text, "audio_s": round(self.received_s, 3),
                       "words": len(self._words), "steps": self.steps})

    @property
    def text(self) -> str:
        return STREAM_FAMILIES.get(self.family).join(self._words, self.locale)

    def _final(self, words: list[dict], now: float) -> None:
        units = [w["word"] for w in words]
        self._words += units
        text = STREAM_FAMILIES.get(self.family).join(units, self.locale)
        self.emit({"type": "final", "words": words, "text": text, "audio_s": round(now, 3)})

    def _partial(self, text: str, now: float) -> None:
        if text != self._last_partial:
            self._last_partial = text
            self.emit({"type": "partial", "text": text, "audio_s": round(now, 3)})


# --------------------------------------------------------------------------- families
@dataclass(frozen=True)
class StreamFamily:
    """How the scheduler streams one backbone family.

    new(model, adapter, settings) -> stream; ready(stream) -> its next step or None;
    run(transcriber, [(session, step)]) runs one step per session in one batch;
    report(session) turns new commits into events; join(units, locale) -> text.
    """

    new: Callable
    ready: Callable
    run: Callable
    report: Callable
    join: Callable
    can_identify: bool


STREAM_FAMILIES: Registry[StreamFamily] = Registry("live streaming family")


def _whisper_run(transcriber, work) -> None:
    rows = [StepRow(step, s.locale, s.adapter, transcriber.options_for(s.adapter)) for s, step in work]
    for (s, step), out in zip(work, decode_steps(transcriber.backbone, rows)):
        s.stream.apply(step, out)


def _whisper_report(s: LiveSession) -> None:
    new = s.stream.take_committed()
    now = s.stream.decoded / SAMPLE_RATE
    if new:
        s._final([{"word": w.word, "start": round(w.start, 3), "end": round(w.avail, 3)} for w in new], now)
    s._partial(join_units(list(s.stream.pending), s.locale), now)


STREAM_FAMILIES.register("whisper", StreamFamily(
    new=lambda model, adapter, st: new_stream(WhisperStreamingConfig(
        step_ms=st.step_ms, policy=st.policy, guard_ms=st.guard_ms, max_buffer_s=st.max_buffer_s)),
    ready=lambda stream: stream.next_step(),
    run=_whisper_run,
    report=_whisper_report,
    join=join_units,
    can_identify=True,
))


def _transducer_run(transcriber, work) -> None:
    run_pieces(transcriber.backbone, [(s.stream, piece) for s, piece in work])


def _transducer_report(s: LiveSession) -> None:
    out = s.stream.out
    tok = s.stream.model.tokenizer
    now = s.stream.decoded / SAMPLE_RATE
    if len(out.tokens) == s._tokens_reported and not s.stream.done:
        return
    s._tokens_reported = len(out.tokens)
    # Only the tokens from the first word not yet final are looked at (a long stream stays cheap).
    base = s._pending_token
    tokens, avail = out.tokens[base:], out.avail_times[base:]
    words, (ends,) = token_words(tok, tokens, [avail])
    # The last word may still grow (its next token can come with the next chunk), so a word
    # is final once a later word has started, or at the end of the stream.
    n_final = len(words) if s.stream.done else max(0, len(words) - 1)
    if n_final:
        prev = s._last_end
        final = []
        for w, e in zip(words[:n_final], ends[:n_final]):
            final.append({"word": w, "start": round(min(prev, e), 3), "end": round(e, 3)})
            prev = e
        s._last_end = prev
        s._final(final, now)
        # The next pending word starts at the first token after which the text has n_final + 1 words.
        s._pending_token = base + next((k for k in range(len(tokens))
                                        if len(tok.decode(tokens[: k + 1]).split()) > n_final), len(tokens))
    s._partial(" ".join(words[n_final:]), now)


STREAM_FAMILIES.register("transducer", StreamFamily(
    new=lambda model, adapter, st: TransducerStream(model, adapter, TransducerStreamingConfig(chunk_ms=st.chunk_ms)),
    ready=lambda stream: stream.next_piece(),
    run=_transducer_run,
    report=_transducer_report,
    join=lambda words, locale: " ".join(words),  # words as the tokenizer's text splits them
    can_identify=False,
))


# --------------------------------------------------------------------------- scheduler
@dataclass
class SchedulerStats:
    opened: int = 0
    refused: int = 0
    finished: int = 0
    dropped: int = 0  # client went away before the end
    errors: int = 0
    ticks: int = 0
    busy_s: float = 0.0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    tick_ms: deque = field(default_factory=lambda: deque(maxlen=10000))  # the latest ticks


class StreamScheduler:
    """Owns the model for live sessions: one worker thread, one batched step per tick.

    ``transcriber``: the server's :class:`~asr_adapt.decoding.service.Transcriber` (model,
    adapters, routing rule, per-adapter options, language identification).
    """

    def __init__(self, transcriber, *, max_sessions: int = 32, max_batch: int = 16, lid_s: float = 2.0,
                 name: str = "asr-stream") -> None:
        self.transcriber = transcriber
        self.family = transcriber.backbone.family
        if self.family not in STREAM_FAMILIES:
            raise ValueError(f"no live streaming for the {self.family} backbone; known: "
                             f"{', '.join(STREAM_FAMILIES.names())}")
        self.max_sessions = max_sessions
        self.max_batch = max_batch
        self.lid_s = lid_s
        self.sessions: dict[str, LiveSession] = {}
        self.stats = SchedulerStats()
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> StreamScheduler:
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ sessions (any thread)
    def open(self, settings: SessionSettings, emit: Callable[[Event], None]) -> LiveSession:
        """A new session, or :class:`SessionRefused` (server full: close code 1013)."""
        fam = STREAM_FAMILIES.get(self.family)
        if settings.locale is None and not (fam.can_identify and self.transcriber.can_identify):
            raise SessionRefused(f"the {self.family} backbone cannot identify languages: give a locale", 1008)
        with self._cond:
            if len(self.sessions) >= self.max_sessions:
                self.stats.refused += 1
                raise SessionRefused(f"server full: {self.max_sessions} streaming sessions; retry later", 1013)
            s = LiveSession(uuid.uuid4().hex[:12], settings, self.family, emit)
            if settings.locale is not None:
                s.start_stream(settings.locale, self.transcriber.adapter_for(settings.locale),
                               self.transcriber.backbone)
            self.sessions[s.id] = s
            self.stats.opened += 1
        return s

    def push(self, s: LiveSession, samples: np.ndarray) -> None:
        with self._cond:
            if s.closed:
                raise RuntimeError("audio after the end message")
            s.push(samples)
            self._cond.notify_all()

    def end(self, s: LiveSession) -> None:
        """The client has no more audio: decode the rest, then the session ends."""
        with self._cond:
            s.close()
            self._cond.notify_all()

    def drop(self, s: LiveSession, error: bool = False) -> None:
        """Forget a session (the client went away, or it failed): no further work for it."""
        with self._cond:
            if self.sessions.pop(s.id, None) is not None:
                if s.done:
                    self.stats.finished += 1
                elif error:
                    self.stats.errors += 1
                else:
                    self.stats.dropped += 1

    def backlog_s(self, s: LiveSession) -> float:
        with self._cond:
            return s.backlog_s

    def metrics(self) -> dict:
        with self._cond:
            st = self.stats
            ticks = sorted(st.tick_ms)
            pct = (lambda q: round(ticks[min(len(ticks) - 1, int(q * len(ticks)))], 1)) if ticks else (lambda q: None)
            return {
                "active_sessions": len(self.sessions), "max_sessions": self.max_sessions,
                "opened": st.opened, "refused": st.refused, "finished": st.finished, "dropped": st.dropped,
                "errors": st.errors, "ticks": st.ticks, "busy_s": round(st.busy_s, 3),
                "batch_sizes": {str(k): v for k, v in sorted(st.batch_sizes.items())},
                "tick_ms_p50": pct(0.5), "tick_ms_p90": pct(0.9),
                "backlog_s": {sid: round(s.backlog_s, 3) for sid, s in self.sessions.items()},
            }

    # ------------------------------------------------------------------ worker
    def _gather(self) -> tuple[list[LiveSession], list[tuple[LiveSession, object]]]:
        """Sessions waiting for identification, and one ready step per streaming session
        (oldest ready first, at most ``max_batch``). Called with the lock held."""
        fam = STREAM_FAMILIES.get(self.family)
        now = time.monotonic()
        lid, ready = [], []
        for s in self.sessions.values():
            if s.done:
                continue
            s.feed()
            if s.stream is None:
                if s._pre_n >= self.lid_s * SAMPLE_RATE or (s.closed and s._pre_n):
                    lid.append(s)
                elif s.closed:  # ended before any audio: nothing to transcribe
                    s.start_stream(None, None, self.transcriber.backbone)
                continue
            step = fam.ready(s.stream)
            if step is None:
                s.ready_since = None
                if s.stream.done:
                    s.report()
                continue
            if s.ready_since is None:
                s.ready_since = now
            ready.append((s, step))
        ready.sort(key=lambda w: w[0].ready_since)
        return lid[: self.max_batch], ready[: self.max_batch]

    def _run(self) -> None:
        fam = STREAM_FAMILIES.get(self.family)
        while True:
            with self._cond:
                while True:
                    if self._stop:
                        return
                    lid, work = self._gather()
                    if lid or work:
                        break
                    self._cond.wait(0.5)
            t0 = time.monotonic()
            try:
                if lid:
                    self._identify(lid)
                if work:
                    fam.run(self.transcriber, work)
            except Exception as e:  # noqa: BLE001 - fail these sessions, keep serving the others
                log.exception("streaming step failed")
                with self._cond:
                    for s in lid + [w[0] for w in work]:
                        s.emit({"type": "error", "message": f"decoding failed: {e}"})
                        s.done = True
                continue
            dt = time.monotonic() - t0
            with self._cond:
                for s, _ in work:
                    s.steps += 1
                    s.ready_since = None
                    s.report()
                st = self.stats
                st.ticks += 1
                st.busy_s += dt
                if work:
                    st.batch_sizes[len(work)] = st.batch_sizes.get(len(work), 0) + 1
                st.tick_ms.append(1000 * dt)

    def _identify(self, sessions: list[LiveSession]) -> None:
        with self._cond:
            clips = [np.concatenate(s._pre)[: int(self.lid_s * SAMPLE_RATE)] for s in sessions]
        found = self.transcriber.identify(clips)
        with self._cond:
            for s, loc in zip(sessions, found):
                key = self.transcriber.adapter_for(loc)
                s.start_stream(loc, key, self.transcriber.backbone)
                s.emit({"type": "language", "locale": loc, "adapter": key})
