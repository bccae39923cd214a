"""Streaming Whisper: per-stream commit policies over a growing audio buffer.

Whisper is not a streaming model; it is streamed by re-decoding a growing buffer every
``step_ms`` of new audio and committing only the text a policy trusts. Two policies,
selectable per stream (:data:`WHISPER_POLICIES`):

* ``local-agreement`` (Macháček et al. 2023, "whisper_streaming"): decode the whole buffer
  each update and commit the words on which the last ``agreement`` hypotheses agree
  (:class:`~asr_adapt.scoring.streaming.LocalAgreement`).
* ``alignatt`` (Papi et al. 2023, "Attention as a Guide for Simultaneous Speech
  Translation", as used for Whisper by SimulStreaming): decode after the committed words
  and stop at the first token whose cross-attention (the model's alignment heads) peaks
  in the last ``guard_ms`` of the buffer, i.e. a token the model is guessing from audio
  that has not fully arrived; commit the complete words before it. One partial decode per
  update and no second hypothesis to wait for.

A policy is a model-free state machine (:class:`WhisperStream`). Audio is pushed as it
arrives; :meth:`WhisperStream.next_step` says which model call the stream needs next (a
:class:`WhisperStep`: buffer, prompt, forced prefix, AlignAtt guard) and
:meth:`WhisperStream.apply` folds the model's answer (:class:`StepOutput`) in and returns
the words it committed. Who runs the model is not the policy's business: ``stream-eval``
runs one stream's steps one at a time (:func:`run_stream`); the server runs every ready
stream's step in one batch (:func:`asr_adapt.decoding.whisper_stream_step.decode_steps`).
Steps depend only on the audio, never on when it arrived: a step is taken as soon as a
whole ``step_ms`` of new audio is buffered, and at the end of the stream one more for the
rest. So the server commits exactly what ``stream-eval`` commits for the same audio.

Buffer trimming, without word timestamps (the decoder runs ``<|notimestamps|>``). Once
the buffer is longer than ``max_buffer_s``, the audio before the *last committed* word's
end is cut and the committed words move from the forced prefix to the decoder prompt
(``<|startofprev|>`` + committed text). Where that end lies is policy-specific:
LocalAgreement takes the update time at which the word first appeared in a hypothesis
(its audio had been heard by then), and postpones the cut while an uncommitted word was
already visible at that time (its audio may straddle the cut); AlignAtt takes the end of
the encoder frame the word's last token attended to. If the buffer reaches the 30 s window
anyway, the pending text is committed as is and the buffer restarts at the current time
(a forced flush, counted in ``forced_flushes``).

Units are whitespace-separated words (characters for scripts written without spaces).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from asr_adapt.decoding.stream_audio import PushedAudio
from asr_adapt.langtags import is_no_space
from asr_adapt.registry import Registry
from asr_adapt.scoring.streaming import LocalAgreement

SAMPLE_RATE = 16000
WINDOW_S = 30.0  # Whisper's encoder window: a buffer can never be longer
ENCODER_FRAME_S = 0.02  # one Whisper encoder frame (two 10 ms mel frames)


@dataclass(frozen=True)
class WhisperStreamingConfig:
    """How one stream is re-decoded and committed; ``policy`` names a :data:`WHISPER_POLICIES` entry."""

    step_ms: int = field(default=1000, metadata={"help": "new audio (ms) between two decodes of the buffer"})
    policy: str = field(default="local-agreement", metadata={
        "help": "commit policy: 'local-agreement' (words n hypotheses agree on) or 'alignatt' (attention-guided)"})
    agreement: int = field(default=2, metadata={"help": "local-agreement: commit what the last n hypotheses share"})
    guard_ms: int = field(default=400, metadata={
        "help": "alignatt: a token whose attention peaks in the last this-many ms of the buffer is not committed"})
    max_buffer_s: float = field(default=10.0, metadata={
        "help": "trim committed audio from the buffer once it is longer than this (s)"})
    prompt_words: int = field(default=50, metadata={
        "help": "committed words before the buffer given to the decoder as a prompt after a trim (0: none)"})

    def __post_init__(self) -> None:
        if self.step_ms < 40:
            raise ValueError(f"step_ms must be >= 40, got {self.step_ms}")
        if self.policy not in WHISPER_POLICIES:
            raise ValueError(f"unknown streaming policy {self.policy!r}; known: {', '.join(WHISPER_POLICIES.names())}")
        if self.agreement < 1:
            raise ValueError(f"agreement must be >= 1, got {self.agreement}")
        if self.guard_ms < 0:
            raise ValueError(f"guard_ms must be >= 0, got {self.guard_ms}")
        if not self.step_ms / 1000 < self.max_buffer_s <= WINDOW_S:
            raise ValueError(f"max_buffer_s must be in (step, {WINDOW_S}], got {self.max_buffer_s}")
        if self.prompt_words < 0:
            raise ValueError("prompt_words must be >= 0")

    @property
    def label(self) -> str:
        """Operating-point name, e.g. ``step1000-la2`` or ``step1000-alignatt400``."""
        tail = f"la{self.agreement}" if self.policy == "local-agreement" else f"{self.policy}{self.guard_ms}"
        return f"step{self.step_ms}-{tail}"


@dataclass(frozen=True)
class WhisperStep:
    """One model call a stream needs: decode ``audio`` (N,) after ``prompt`` and ``prefix``.

    prompt: committed words before the buffer; prefix: committed words inside it (forced,
    so hypotheses stay positionally comparable); start/end: the buffer's samples in the
    stream; guard_frames: AlignAtt: stop before a token whose attention peaks in the last
    this-many encoder frames of the audio (``None``: decode to the end of text).
    """

    audio: np.ndarray
    prompt: tuple[str, ...]
    prefix: tuple[str, ...]
    start: int
    end: int
    final: bool
    guard_frames: int | None = None

    @property
    def end_s(self) -> float:
        return self.end / SAMPLE_RATE


@dataclass
class StepOutput:
    """The model's answer to a :class:`WhisperStep`.

    words: units of the buffer's hypothesis, starting with the step's prefix;
    frames: (len(words) - len(prefix),) encoder frame (from the buffer start) that each new
    unit's last token attended to most, when the decoder measured it (AlignAtt), else None;
    complete: False when decoding stopped at the guard inside a word (the last unit may
    continue in audio that has not arrived).
    """

    words: list[str]
    frames: list[int] | None = None
    complete: bool = True


@dataclass
class StreamResult:
    """Committed words of one stream and when they were committed.

    emit_times[i]: audio time (s) at which ``words[i]`` was committed; first_seen[i]: when
    the model had the word's audio (LocalAgreement: the first update whose hypothesis held
    it at its position; AlignAtt: the end of the encoder frame its last token attended to);
    processing_s: wall time of all model calls (filled by whoever runs them).
    """

    words: list[str]
    emit_times: list[float]
    first_seen: list[float]
    updates: int = 0
    trims: list[float] = field(default_factory=list)  # stream times of the buffer cuts
    forced_flushes: int = 0
    processing_s: float = 0.0


@dataclass(frozen=True)
class CommittedWord:
    """A word as a stream commits it: ``emit`` = audio time of the commit, ``avail`` = when
    the model had its audio (see :class:`StreamResult`), ``start`` = the previous word's
    ``avail`` (or the buffer start): the span the word's audio lies in."""

    word: str
    start: float
    avail: float
    emit: float


class WhisperStream(PushedAudio):
    """Step scheduling shared by the policies (see the module doc).

    Subclasses implement :meth:`_apply` (fold a step's output in, commit words) and may
    override :meth:`_finish` (end of stream with no audio left to decode).
    """

    #: Whether the end of the stream needs one more decode even without new audio.
    final_decode_always = False

    def __init__(self, config: WhisperStreamingConfig) -> None:
        self.config = config
        self._step = max(1, round(config.step_ms * SAMPLE_RATE / 1000))
        self._init_audio()
        self.start = 0  # first sample of the buffer
        self.done = False
        self.result = StreamResult([], [], [])
        self.pending: tuple[str, ...] = ()  # tentative units after the committed ones (partial text)
        self._reported = 0  # committed words already handed out by :meth:`take_committed`

    # ------------------------------------------------------------------ steps
    def next_step(self) -> WhisperStep | None:
        """The next model call, or ``None`` (waiting for audio, or done). Idempotent until
        :meth:`apply`; at the end of a closed stream with nothing left to decode it
        finishes the stream instead (:attr:`done` becomes True)."""
        if self.done:
            return None
        if self.received - self.decoded >= self._step:
            return self._make_step(self.decoded + self._step, final=False)
        if not self.closed:
            return None
        if self.received > self.decoded or (self.final_decode_always and self.decoded > 0):
            return self._make_step(self.received, final=True)
        self._finish(self.received / SAMPLE_RATE)
        self.done = True
        return None

    def _make_step(self, end: int, final: bool) -> WhisperStep:
        audio = self._samples(self.start, end)
        return WhisperStep(audio, self._prompt(), self._prefix(), self.start, end, final, self._guard(final))

    def apply(self, step: WhisperStep, out: StepOutput) -> list[CommittedWord]:
        """Fold ``out`` (the answer to ``step``) in; returns the words committed by it."""
        if step.end < self.decoded or (step.end == self.decoded and not step.final):
            raise RuntimeError(f"step ending at sample {step.end} was already applied (stream at {self.decoded})")
        before = len(self.result.words)
        self.decoded = step.end
        self.result.updates += 1
        self._apply(step, out)
        if step.final:
            self.done = True
            self.pending = ()
        self._release(self.start)  # audio before the buffer is never decoded again
        return self.committed_since(before)

    def take_committed(self) -> list[CommittedWord]:
        """Words committed since the last call (by steps or by a finish without a decode)."""
        words = self.committed_since(self._reported)
        self._reported = len(self.result.words)
        return words

    def committed_since(self, index: int) -> list[CommittedWord]:
        r = self.result
        out = []
        for i in range(index, len(r.words)):
            start = r.first_seen[i - 1] if i else 0.0
            out.append(CommittedWord(r.words[i], min(start, r.first_seen[i]), r.first_seen[i], r.emit_times[i]))
        return out

    # ------------------------------------------------------------------ policy hooks
    def _prompt(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _prefix(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _guard(self, final: bool) -> int | None:
        return None

    def _apply(self, step: WhisperStep, out: StepOutput) -> None:
        raise NotImplementedError

    def _finish(self, now: float) -> None:
        """End of a closed stream with nothing left to decode."""

    def _commit(self, words: Sequence[str], now: float, avail: Sequence[float]) -> None:
        r = self.result
        r.words += list(words)
        r.emit_times += [now] * len(words)
        r.first_seen += list(avail)

    def _must_flush(self, step: WhisperStep) -> bool:
        """The next update would not fit Whisper's 30 s window."""
        return (step.end - self.start) / SAMPLE_RATE + self.config.step_ms / 1000 > WINDOW_S


WHISPER_POLICIES: Registry[type[WhisperStream]] = Registry("whisper streaming policy")


@WHISPER_POLICIES.decorator("local-agreement")
class LocalAgreementStream(WhisperStream):
    """LocalAgreement-n over whole-buffer hypotheses, with buffer trimming (module doc)."""

    def __init__(self, config: WhisperStreamingConfig) -> None:
        super().__init__(config)
        self.la = LocalAgreement(config.agreement)
        self._seen: dict[tuple[int, str], float] = {}  # (absolute word position, word) -> first time shown

    def _prompt(self):
        return self.la.prompt(self.config.prompt_words) if self.config.prompt_words else ()

    def _prefix(self):
        return self.la.buffer_prefix()

    def _apply(self, step: WhisperStep, out: StepOutput) -> None:
        la, now, hyp = self.la, step.end_s, out.words
        base = len(la.committed) - la.in_buffer
        for i, w in enumerate(hyp):
            self._seen.setdefault((base + i, w), now)
        la.update(hyp, now)
        if step.final:
            la.finish(now)
        elif self._must_flush(step):
            la.finish(now)
            la.trim(la.in_buffer)
            self.start = step.end
            self.result.forced_flushes += 1
            self.result.trims.append(now)
        elif (step.end - self.start) / SAMPLE_RATE > self.config.max_buffer_s and la.in_buffer:
            cut = self._trim_point(hyp)
            if cut is not None and cut > self.start / SAMPLE_RATE:
                la.trim(la.in_buffer)
                self.start = round(cut * SAMPLE_RATE)
                self.result.trims.append(cut)
        self._sync(now)

    def _finish(self, now: float) -> None:
        self.la.finish(now)
        self._sync(now)

    def _sync(self, now: float) -> None:
        """Mirror the agreement's new commits into the result; the rest is the partial text."""
        la, r = self.la, self.result
        for i in range(len(r.words), len(la.committed)):
            self._commit([la.committed[i]], la.commit_times[i], [self._seen.get((i, la.committed[i]), now)])
        self.pending = tuple(la.pending)

    def _trim_point(self, hyp: Sequence[str]) -> float | None:
        """Stream time to cut the buffer at, or None to keep it for now (see module doc)."""
        la = self.la
        last = len(la.committed) - 1
        cut = self._seen[(last, la.committed[last])]
        base = len(la.committed) - la.in_buffer
        pending = [(base + i, w) for i, w in enumerate(hyp) if i >= la.in_buffer]
        if any(self._seen.get(p, float("inf")) <= cut for p in pending):
            return None
        return cut


@WHISPER_POLICIES.decorator("alignatt")
class AlignAttStream(WhisperStream):
    """AlignAtt: commit the complete words decoded before the attention reaches the guard."""

    final_decode_always = True  # the last guarded decode stopped early; decode the rest unguarded

    def __init__(self, config: WhisperStreamingConfig) -> None:
        super().__init__(config)
        self.in_buffer = 0  # committed words inside the buffer (the forced prefix)
        self._ends: list[float] = []  # per committed word in the buffer: end of its attended frame (stream s)

    def _prompt(self):
        if not self.config.prompt_words:
            return ()
        before = len(self.result.words) - self.in_buffer
        return tuple(self.result.words[max(0, before - self.config.prompt_words) : before])

    def _prefix(self):
        return tuple(self.result.words[len(self.result.words) - self.in_buffer :]) if self.in_buffer else ()

    def _guard(self, final: bool) -> int | None:
        return None if final else round(self.config.guard_ms / 1000 / ENCODER_FRAME_S)

    def _apply(self, step: WhisperStep, out: StepOutput) -> None:
        now = step.end_s
        new = list(out.words[len(step.prefix) :])
        ends = [step.start / SAMPLE_RATE + (f + 1) * ENCODER_FRAME_S for f in out.frames] if out.frames else [now] * len(new)
        ends = [min(e, now) for e in ends]
        flush = not step.final and self._must_flush(step)
        keep = len(new) if (step.final or flush or out.complete) else max(0, len(new) - 1)
        self._commit(new[:keep], now, ends[:keep])
        self.in_buffer += keep
        self._ends += ends[:keep]
        self.pending = tuple(new[keep:])
        if flush:
            self._cut(step.end)
            self.result.forced_flushes += 1
            self.result.trims.append(now)
        elif not step.final and (step.end - self.start) / SAMPLE_RATE > self.config.max_buffer_s and self.in_buffer:
            cut = round(self._ends[-1] * SAMPLE_RATE)
            if self.start < cut < step.end:
                self._cut(cut)
                self.result.trims.append(cut / SAMPLE_RATE)

    def _cut(self, sample: int) -> None:
        self.start = sample
        self.in_buffer = 0
        self._ends = []


# --------------------------------------------------------------------------- drivers
StepFn = Callable[[WhisperStep], StepOutput]


def new_stream(config: WhisperStreamingConfig) -> WhisperStream:
    """A fresh stream of the config's policy."""
    return WHISPER_POLICIES.get(config.policy)(config)


def run_stream(stream: WhisperStream, wav: np.ndarray, step_fn: StepFn) -> StreamResult:
    """Push all of ``wav`` (N,), close, and run every step through ``step_fn`` one at a time
    (the offline simulation of a live stream: the same steps the server would batch)."""
    stream.push(wav)
    stream.close()
    t0 = time.perf_counter()
    while (step := stream.next_step()) is not None:
        stream.apply(step, step_fn(step))
    stream.result.processing_s = time.perf_counter() - t0
    return stream.result


# decode(audio (N,) float32, prompt: committed words before the buffer, prefix: committed
# words inside the buffer) -> words of the whole buffer, starting with ``prefix``.
DecodeFn = Callable[[np.ndarray, tuple[str, ...], tuple[str, ...]], list[str]]


def simulate_local_agreement(wav: np.ndarray, decode: DecodeFn, config: WhisperStreamingConfig,
                             sample_rate: int = SAMPLE_RATE) -> StreamResult:
    """Stream ``wav`` (N,) through a plain ``decode`` function with LocalAgreement-n commits."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"streams are {SAMPLE_RATE} Hz, got {sample_rate}")
    return run_stream(LocalAgreementStream(config), wav, lambda s: StepOutput(decode(s.audio, s.prompt, s.prefix)))


def split_units(text: str, lang: str | None) -> list[str]:
    """Commit units of a decoded text: words, or characters for scripts without spaces."""
    if is_no_space(lang):
        return [c for c in text if not c.isspace()]
    return text.split()


def join_units(units: Sequence[str], lang: str | None) -> str:
    return ("" if is_no_space(lang) else " ").join(units)
