"""Streaming evaluation maths: the LocalAgreement-n commit policy and latency arithmetic.

Pure functions and a small state machine; nothing here runs a model. A streaming decoder
loop feeds :class:`LocalAgreement` the hypothesis of its growing audio buffer after each
new chunk, and records the audio time at which each item was committed; the latency
functions turn those times into delays.

Times are in seconds of audio (stream time), summaries in milliseconds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def common_prefix_len(seqs: Sequence[Sequence[Hashable]]) -> int:
    """Length of the longest common prefix of all ``seqs`` (0 for no sequences)."""
    if not seqs:
        return 0
    n = min(len(s) for s in seqs)
    for i in range(n):
        first = seqs[0][i]
        if any(s[i] != first for s in seqs[1:]):
            return i
    return n


@dataclass(frozen=True)
class Commit:
    """Items committed by one update and the audio time at which that happened."""

    items: tuple
    time: float


class LocalAgreement:
    """LocalAgreement-n commit policy (Macháček et al. 2023, "Turning Whisper into
    Real-Time Transcription System"; Polák et al. 2022).

    After each update the decoder passes the full hypothesis (a token or word list) of
    its current audio buffer. An item is committed once the last ``n`` consecutive
    hypotheses agree on it, i.e. the longest common prefix of the last ``n`` updates is
    committed beyond what is already committed. Committed items are final: a later
    hypothesis that revises them does not retract them (it just commits nothing new
    until agreement is reached again past them).

    Hypotheses are positional: the first :attr:`in_buffer` items of each hypothesis are
    taken to be the committed items still inside the audio buffer (the decoder usually
    forces them as a prefix, see :meth:`buffer_prefix`).

    Buffer trimming: when the decoder drops audio up to the end of some committed items
    (say, a committed sentence end), it calls :meth:`trim` with how many committed items
    it dropped; hypotheses from then on describe the trimmed buffer only, and the
    dropped text can be handed to the decoder as a prompt (:meth:`prompt`).
    """

    def __init__(self, n: int = 2) -> None:
        if n < 1:
            raise ValueError(f"LocalAgreement needs n >= 1, got {n}")
        self.n = n
        self.committed: list = []
        self.commit_times: list[float] = []  # audio time at which committed[i] was committed
        self.in_buffer = 0  # committed items that still lie in the current audio buffer
        self._history: deque[tuple] = deque(maxlen=n)

    def update(self, hypothesis: Sequence[Hashable], time: float) -> Commit:
        """Feed the hypothesis of the current buffer, produced when the stream had reached
        audio time ``time``; returns the newly committed items (possibly none)."""
        self._history.append(tuple(hypothesis))
        if len(self._history) < self.n:
            return Commit((), time)
        agreed = common_prefix_len(list(self._history))
        if agreed <= self.in_buffer:
            return Commit((), time)
        new = self._history[-1][self.in_buffer : agreed]
        self._commit(new, time)
        return Commit(new, time)

    def finish(self, time: float) -> Commit:
        """End of stream: commit the rest of the last hypothesis (nothing more will come)."""
        if not self._history:
            return Commit((), time)
        new = self._history[-1][self.in_buffer :]
        self._commit(new, time)
        return Commit(tuple(new), time)

    def _commit(self, items: Sequence, time: float) -> None:
        self.committed.extend(items)
        self.commit_times.extend([time] * len(items))
        self.in_buffer += len(items)

    def trim(self, n_items: int) -> tuple:
        """The decoder dropped the audio of the first ``n_items`` committed items still in
        the buffer; returns them. Stored hypotheses are shifted so agreement carries on."""
        if not 0 <= n_items <= self.in_buffer:
            raise ValueError(f"can trim 0..{self.in_buffer} committed items, got {n_items}")
        dropped = tuple(self.committed[len(self.committed) - self.in_buffer :][:n_items])
        self.in_buffer -= n_items
        self._history = deque((h[n_items:] for h in self._history), maxlen=self.n)
        return dropped

    def buffer_prefix(self) -> tuple:
        """Committed items inside the current buffer: a forced decoder prefix."""
        return tuple(self.committed[len(self.committed) - self.in_buffer :]) if self.in_buffer else ()

    def prompt(self, max_items: int = 200) -> tuple:
        """Committed items before the buffer (dropped by :meth:`trim`), the last
        ``max_items`` of them: context to prompt the decoder with after a trim."""
        end = len(self.committed) - self.in_buffer
        return tuple(self.committed[max(0, end - max_items) : end])

    def text(self, sep: str = " ") -> str:
        """Committed text; ``sep=""`` for character or subword items."""
        return sep.join(str(x) for x in self.committed)

    @property
    def pending(self) -> tuple:
        """Items of the last hypothesis not committed yet (shown greyed out by a UI)."""
        return self._history[-1][self.in_buffer :] if self._history else ()


# --- latency ------------------------------------------------------------------------------


def emission_delays(emit_times: Sequence[float], avail_times: Sequence[float]) -> np.ndarray:
    """Per-token emission delay (s): ``emit_times[i] - avail_times[i]``.

    ``emit_times[i]``: audio time at which the decoder emitted/committed token i (how far
    the stream had got, not wall-clock). ``avail_times[i]``: when token i's audio was fully
    available: the end time of its word in the audio, or (for chunked input) the end time
    of the chunk that completed it. A delay of 0 means emitted the moment it could be.
    Negative delays (emitted before its audio ended: the model guessed) are kept as is.
    """
    e = np.asarray(emit_times, dtype=np.float64)
    a = np.asarray(avail_times, dtype=np.float64)
    if e.shape != a.shape:
        raise ValueError(f"{len(e)} emission times but {len(a)} availability times")
    return e - a


def first_token_latency(emit_times: Sequence[float], speech_onset: float = 0.0) -> float | None:
    """Time (s) from the start of speech to the first emitted token: what a user waits
    before any text appears. ``None`` when nothing was emitted."""
    return float(min(emit_times)) - speech_onset if len(emit_times) else None


def real_time_factor(processing_s: float, audio_s: float) -> float:
    """RTF = processing time / audio duration (< 1: faster than real time)."""
    if audio_s <= 0:
        raise ValueError(f"audio duration must be > 0, got {audio_s}")
    return processing_s / audio_s


def pair_correct_tokens(
    hyp: Sequence[str], emit_times: Sequence[float], ref: Sequence[str], avail_times: Sequence[float]
) -> tuple[list[float], list[float]]:
    """Pair emission and availability times of correctly recognised tokens.

    Delays are only defined where a hypothesis token matches a reference token, so the two
    sequences are aligned (Levenshtein, as for WER) and only hits are kept.
    """
    import jiwer

    if not hyp or not ref:
        return [], []
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    e, a = [], []
    for ch in out.alignments[0]:
        if ch.type == "equal":
            for k in range(ch.ref_end_idx - ch.ref_start_idx):
                a.append(float(avail_times[ch.ref_start_idx + k]))
                e.append(float(emit_times[ch.hyp_start_idx + k]))
    return e, a


@dataclass(frozen=True)
class UttLatency:
    """Latency facts of one utterance (seconds)."""

    utt_id: str
    locale: str
    delays: tuple[float, ...]
    first_token: float | None
    processing_s: float | None = None
    audio_s: float | None = None


def utt_latency(utt_id: str, locale: str, emit_times: Sequence[float], avail_times: Sequence[float], *,
                speech_onset: float = 0.0, processing_s: float | None = None,
                audio_s: float | None = None) -> UttLatency:
    """Bundle :func:`emission_delays` and :func:`first_token_latency` for one utterance."""
    return UttLatency(utt_id, locale, tuple(emission_delays(emit_times, avail_times).tolist()),
                      first_token_latency(emit_times, speech_onset), processing_s, audio_s)


def _percentiles_ms(values: Sequence[float]) -> dict[str, float | None]:
    if not len(values):
        return {"p50_ms": None, "p90_ms": None, "mean_ms": None}
    v = 1000.0 * np.asarray(values, dtype=np.float64)
    p50, p90 = np.percentile(v, [50, 90])  # numpy's default linear interpolation
    return {"p50_ms": float(p50), "p90_ms": float(p90), "mean_ms": float(v.mean())}


def summarise_latency(utts: Sequence[UttLatency]) -> dict[str, dict]:
    """Per locale and ``"all"``: token delay p50/p90/mean (over all tokens), first-token
    latency p50/p90/mean (over utterances), and RTF = total processing / total audio
    (utterances lacking either are left out of the RTF)."""
    groups: dict[str, list[UttLatency]] = {}
    for u in utts:
        groups.setdefault(u.locale, []).append(u)
    groups_all: Mapping[str, list[UttLatency]] = {**dict(sorted(groups.items())), "all": list(utts)}
    out = {}
    for loc, us in groups_all.items():
        delays = [d for u in us for d in u.delays]
        firsts = [u.first_token for u in us if u.first_token is not None]
        timed = [u for u in us if u.processing_s is not None and u.audio_s]
        rtf = (real_time_factor(sum(u.processing_s for u in timed), sum(u.audio_s for u in timed))
               if timed else None)
        out[loc] = {"n_utt": len(us), "n_tokens": len(delays),
                    "delay": _percentiles_ms(delays), "first_token": _percentiles_ms(firsts), "rtf": rtf}
    return out
