"""True chunk-by-chunk streaming of the Conformer-transducer, with emission times.

Audio is fed the way a live stream delivers it: waveform pieces, features computed on
the samples received so far (the front end is frame-local, see
:mod:`asr_adapt.models.transducer.frontend`), then
:meth:`~asr_adapt.models.transducer.TransducerBackbone.streaming_forward` and the
transducer module's own streaming greedy search
(:func:`~asr_adapt.decoding.transducer_search.greedy_step`). Every token records:

* ``emit_time``: the audio time when it was emitted = the end of the audio piece that
  completed the encoder chunk that produced it (no wall clock involved);
* ``frame_time``: the start of its encoder frame (what the search reports);
* ``avail_time``: when that frame's audio was complete: frame start + one encoder frame
  (40 ms, or 80 ms at 8x) + 15 ms analysis-window overhang (a feature frame spans 25 ms,
  hop 10 ms).

Piece grid: encoder chunk ``k`` (``C`` encoder frames) depends on samples up to
``(k + 1) * chunk + 15 ms``, so the first piece is one chunk plus that 15 ms overhang and
every later piece is one chunk: each piece then completes exactly one encoder chunk, and
a token's emission delay is the chunking delay, not an artefact of the piece grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from asr_adapt import routing
from asr_adapt.decoding.transducer_search import MIN_FRAME_MS, GreedyState, chunk_frames, greedy_step


@dataclass(frozen=True)
class TransducerStreamingConfig:
    """One streaming operating point of the transducer."""

    chunk_ms: int = field(default=320, metadata={
        "help": "encoder chunk = audio piece size (ms, a multiple of the model's 40 or 80 ms frame)"})
    left_context_chunks: int = field(default=-1, metadata={
        "help": "chunks of left context the first pass attends to; -1: unlimited"})
    max_symbols_per_frame: int = field(default=3, metadata={"help": "greedy: cap on tokens per encoder frame"})

    def __post_init__(self) -> None:
        if self.chunk_ms < MIN_FRAME_MS or self.chunk_ms % MIN_FRAME_MS:
            raise ValueError(f"chunk_ms must be a positive multiple of {MIN_FRAME_MS}, got {self.chunk_ms}")
        if self.left_context_chunks < -1:
            raise ValueError("left_context_chunks must be -1 (unlimited) or >= 0")

    def chunk_frames(self, frame_ms: int) -> int:
        """Chunk size in encoder frames of ``frame_ms`` each."""
        return chunk_frames(self.chunk_ms, frame_ms)


@dataclass
class TokenStream:
    """One utterance's streamed tokens. All lists are (U,), times in seconds of audio."""

    tokens: list[int]
    emit_times: list[float]
    frame_times: list[float]
    avail_times: list[float]
    pieces: int = 0
    processing_s: float = 0.0


def _overhang_samples(fbank) -> int:
    """Samples a feature frame reaches beyond its hop grid (400 - 160 = 240 at 16 kHz)."""
    return fbank.win - fbank.hop


@torch.no_grad()
def stream_transducer(model, wav: np.ndarray, adapter: str | None, config: TransducerStreamingConfig) -> TokenStream:
    """Stream one (N,) 16 kHz waveform through ``model`` piece by piece (batch of one).

    ``adapter``: the stream's adapter key (``None``: the base model). Tokens equal those of
    ``transcribe_batch(model, [wav], [lang], options(mode="streaming", ...), route=[adapter])``.
    """
    fb = model.fbank
    hop, win = fb.hop, fb.win
    chunk = round(config.chunk_ms * model.config.sample_rate / 1000)
    first = chunk + _overhang_samples(fb)
    wav = np.asarray(wav, dtype=np.float32)
    n = len(wav)
    state = model.init_streaming_state(1, config.chunk_frames(model.config.frame_ms), config.left_context_chunks)
    out = TokenStream([], [], [], [])
    received, feats_done = 0, 0  # samples received, feature frames computed so far
    t0 = time.perf_counter()
    with routing.use([adapter]):
        search = GreedyState.start(model, 1, model.cmvn.mean.device)  # routed: the predictor may carry adapters
        while True:
            received = min(n, first if received == 0 else received + chunk)
            final = received >= n
            # Feature frames whose whole 25 ms window has arrived, from the first new one.
            total = max(0, (received - win) // hop + 1)
            lo = feats_done * hop
            piece = wav[lo : (total - 1) * hop + win] if total > feats_done else wav[:0]
            feats, _ = model.features([piece]) if total > feats_done else (None, None)
            x = feats[:, : total - feats_done] if feats is not None else torch.zeros(1, 0, model.config.n_mels)
            feats_done = total
            y, y_lens, state = model.streaming_forward(x, torch.tensor([x.shape[1]]), state, final=final)
            out.pieces += 1
            if y.shape[1]:
                before = len(search.tokens[0])
                enc_p = model.joiner.project_encoder(y, "first_pass")
                greedy_step(model, enc_p, y_lens, search, config.max_symbols_per_frame)
                now = round(received / model.config.sample_rate, 4)
                out.emit_times += [now] * (len(search.tokens[0]) - before)
            if final:
                break
    out.processing_s = time.perf_counter() - t0
    out.tokens = list(search.tokens[0])
    out.frame_times = list(search.times[0])
    reach = model.config.frame_s + _overhang_samples(fb) / model.config.sample_rate
    out.avail_times = [round(t + reach, 4) for t in out.frame_times]
    return out


def token_words(tokenizer, tokens: list[int], times: list[list[float]]) -> tuple[list[str], list[list[float]]]:
    """Words of a token sequence, each with the times of the token that completed it.

    ``times``: parallel (U,) time lists (e.g. emission and availability). A word's time is
    that of its last token (later tokens of the same word change it, so the word is only
    complete then). Works for any tokenizer with ``decode``: the text of each token
    prefix is compared with the previous one.
    """
    words: list[str] = []
    stamps: list[tuple[float, ...]] = []  # per word: its times, one per list in ``times``
    for k in range(len(tokens)):
        cur = tokenizer.decode(tokens[: k + 1]).split()
        now = tuple(src[k] for src in times)
        stamps = [stamps[j] if j < len(words) and words[j] == w else now for j, w in enumerate(cur)]
        words = cur
    return words, [[st[i] for st in stamps] for i in range(len(times))]
