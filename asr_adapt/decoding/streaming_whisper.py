"""Streaming simulation of Whisper: LocalAgreement-2 on a growing audio buffer.

Whisper is not a streaming model; the usual way to stream it (Macháček et al. 2023,
"whisper_streaming") is to re-decode a growing buffer every ``step_ms`` of new audio and to
commit only the words on which consecutive hypotheses agree
(:class:`~asr_adapt.scoring.streaming.LocalAgreement`). The dynamic-length encoder makes
the early, short buffers cheap.

The loop (:func:`simulate_local_agreement`) is model-free: it calls a ``decode`` function
``decode(audio (N,), prompt words, prefix words) -> hypothesis words`` that must start its
hypothesis with the forced ``prefix`` (the committed words still inside the buffer), so the
hypotheses stay positionally comparable. :func:`whisper_decode_fn` builds that function
for a :class:`~asr_adapt.models.whisper.WhisperBackbone`; tests inject scripted ones.

Buffer trimming, without word timestamps (the lean decoder runs ``<|notimestamps|>``):
once the buffer is longer than ``max_buffer_s``, the audio is cut at the update time at
which the *last committed* word first appeared in a hypothesis (its audio had been heard
by then) and the committed words are moved from the forced prefix to the decoder prompt
(``<|startofprev|>`` + committed text). The cut is postponed while an uncommitted word was
already visible at that time (its audio may straddle the cut). If the buffer reaches the
30 s window anyway, the pending hypothesis is committed as is and the buffer restarts at
the current time (a forced flush, counted in ``forced_flushes``).

Units are whitespace-separated words (characters for scripts written without spaces).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from asr_adapt.langtags import is_no_space
from asr_adapt.scoring.streaming import LocalAgreement

SAMPLE_RATE = 16000
WINDOW_S = 30.0  # Whisper's encoder window: a buffer can never be longer

# decode(audio (N,) float32, prompt: committed words before the buffer, prefix: committed
# words inside the buffer) -> words of the whole buffer, starting with ``prefix``.
DecodeFn = Callable[[np.ndarray, tuple[str, ...], tuple[str, ...]], list[str]]



@dataclass(frozen=True)
class WhisperStreamingConfig:
    """How the growing-buffer simulation runs; one ``step_ms`` is one operating point."""

    step_ms: int = field(default=1000, metadata={"help": "new audio (ms) between two re-decodes of the buffer"})
    agreement: int = field(default=2, metadata={"help": "LocalAgreement-n: commit what the last n hypotheses share"})
    max_buffer_s: float = field(default=10.0, metadata={
        "help": "trim committed audio from the buffer once it is longer than this (s)"})
    prompt_words: int = field(default=50, metadata={
        "help": "committed words before the buffer given to the decoder as a prompt after a trim (0: none)"})

    def __post_init__(self) -> None:
        if self.step_ms < 40:
            raise ValueError(f"step_ms must be >= 40, got {self.step_ms}")
        if self.agreement < 1:
            raise ValueError(f"agreement must be >= 1, got {self.agreement}")
        if not self.step_ms / 1000 < self.max_buffer_s <= WINDOW_S:
            raise ValueError(f"max_buffer_s must be in (step, {WINDOW_S}], got {self.max_buffer_s}")
        if self.prompt_words < 0:
            raise ValueError("prompt_words must be >= 0")


@dataclass
class StreamResult:
    """Committed words of one utterance and when they were committed.

    emit_times[i]: audio time (s) at which ``words[i]`` was committed;
    first_seen[i]: audio time of the first update whose hypothesis had ``words[i]`` at
    its position (the decoder had heard it by then); processing_s: wall time of all updates.
    """

    words: list[str]
    emit_times: list[float]
    first_seen: list[float]
    updates: int = 0
    trims: list[float] = field(default_factory=list)  # stream times of the buffer cuts
    forced_flushes: int = 0
    processing_s: float = 0.0


def simulate_local_agreement(wav: np.ndarray, decode: DecodeFn, config: WhisperStreamingConfig,
                             sample_rate: int = SAMPLE_RATE) -> StreamResult:
    """Stream ``wav`` (N,) through ``decode`` with LocalAgreement-n commits and buffer trimming."""
    n = len(wav)
    step = max(1, round(config.step_ms * sample_rate / 1000))
    la = LocalAgreement(config.agreement)
    seen: dict[tuple[int, str], float] = {}  # (absolute word position, word) -> first time shown
    res = StreamResult([], [], [])
    start = 0  # first sample of the buffer
    end = 0
    t0 = time.perf_counter()
    while end < n:
        end = min(n, end + step)
        now = end / sample_rate
        final = end >= n
        hyp = decode(wav[start:end], la.prompt(config.prompt_words) if config.prompt_words else (),
                     la.buffer_prefix())
        res.updates += 1
        base = len(la.committed) - la.in_buffer
        for i, w in enumerate(hyp):
            seen.setdefault((base + i, w), now)
        la.update(hyp, now)
        if final:
            la.finish(now)
            break
        buffer_s = (end - start) / sample_rate
        if buffer_s + config.step_ms / 1000 > WINDOW_S:  # the next update would not fit the window
            la.finish(now)
            la.trim(la.in_buffer)
            start = end
            res.forced_flushes += 1
            res.trims.append(now)
        elif buffer_s > config.max_buffer_s and la.in_buffer:
            cut = _trim_point(la, seen, hyp)
            if cut is not None and cut > start / sample_rate:
                la.trim(la.in_buffer)
                start = round(cut * sample_rate)
                res.trims.append(cut)
    res.processing_s = time.perf_counter() - t0
    res.words = list(la.committed)
    res.emit_times = list(la.commit_times)
    res.first_seen = [seen.get((i, w), t) for i, (w, t) in enumerate(zip(la.committed, la.commit_times))]
    return res


def _trim_point(la: LocalAgreement, seen: dict, hyp: Sequence[str]) -> float | None:
    """Stream time to cut the buffer at, or None to keep it for now (see module doc)."""
    last = len(la.committed) - 1
    cut = seen[(last, la.committed[last])]
    base = len(la.committed) - la.in_buffer
    pending = [(base + i, w) for i, w in enumerate(hyp) if i >= la.in_buffer]
    if any(seen.get(p, float("inf")) <= cut for p in pending):
        return None
    return cut


# --------------------------------------------------------------------------- Whisper
def split_units(text: str, lang: str | None) -> list[str]:
    """Commit units of a decoded text: words, or characters for scripts without spaces."""
    if is_no_space(lang):
        return [c for c in text if not c.isspace()]
    return text.split()


def join_units(units: Sequence[str], lang: str | None) -> str:
    return ("" if is_no_space(lang) else " ").join(units)


def whisper_decode_fn(backbone, lang: str | None, options, route=None) -> DecodeFn:
    """A :data:`DecodeFn` for a :class:`~asr_adapt.models.whisper.WhisperBackbone`.

    Prompt tokens: ``<|startofprev|>`` + committed text before the buffer (when any) +
    ``<|sot|><|lang|><|transcribe|><|notimestamps|>`` + the forced prefix; the search
    continues after the prefix. ``lang``: the locale; ``None``: the options' language, else
    detected on each update. ``route``: the one-row :class:`~asr_adapt.routing.Route` of the
    stream's adapter (``None``: the base model).
    No loop fallback at 30 s here (that would re-decode every update); the in-search
    repetition guard still cuts loops.
    """
    import dataclasses

    import torch

    from asr_adapt import routing
    from asr_adapt.decoding.whisper_decode import detect_language
    from asr_adapt.decoding.whisper_search import run_search

    route = route if route is not None else routing.Route.base(1)

    tok = backbone.tokenizer
    prev_id = tok.convert_tokens_to_ids("<|startofprev|>")
    max_pos = backbone.config.max_target_positions
    # EOT straight after a forced prefix is a valid answer ("nothing new yet").
    after_prefix = dataclasses.replace(options, suppress_blank=False)

    def decode(audio: np.ndarray, prompt: tuple[str, ...], prefix: tuple[str, ...]) -> list[str]:
        with torch.no_grad():
            feats = backbone.features([audio], options.context, options.min_window_s, options.window_step_s)
            with routing.use(route):
                enc = backbone.encode(feats.to(backbone.device))
            code = lang or options.language or detect_language(backbone, enc, route)[0]
            ids: list[int] = []
            if prompt:
                # Whisper's convention: the previous text takes at most half the context.
                prev = tok.encode(" " + join_units(prompt, code), add_special_tokens=False)
                ids = [prev_id, *prev[-(max_pos // 2 - 1):]]
            ids += backbone.prompt(code, options.task)
            forced = tok.encode(" " + join_units(prefix, code), add_special_tokens=False) if prefix else []
            ids += forced
            cap = options.token_cap(len(audio) / SAMPLE_RATE, len(ids), max_pos)
            prompts = torch.tensor([ids], dtype=torch.long, device=enc.device)
            found = run_search(backbone, enc, prompts, [cap], after_prefix if prefix else options, route)[0]
        text = tok.decode(forced + found.tokens, skip_special_tokens=True)
        words = split_units(text, code)
        # Re-tokenising the committed words can merge them differently from how they were
        # decoded; the forced prefix is what the hypothesis starts with by construction.
        if list(words[: len(prefix)]) != list(prefix):
            words = list(prefix) + split_units(tok.decode(found.tokens, skip_special_tokens=True), code)
        return words

    return decode
