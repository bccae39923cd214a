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
from asr_adapt.decoding.stream_audio import PushedAudio
from asr_adapt.decoding.transducer_search import MIN_FRAME_MS, GreedyState, chunk_frames, greedy_step
from asr_adapt.models.transducer.cascade import StreamingState


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


@dataclass(frozen=True)
class Piece:
    """One piece of a stream's audio: samples [lo, hi) of the stream; ``final``: its last."""

    lo: int
    hi: int
    final: bool


class TransducerStream(PushedAudio):
    """One live stream through a transducer: audio pushed as it arrives, one encoder chunk
    per piece (see the module doc for the piece grid), the model's encoder and search
    state kept between pieces. Pieces depend only on the audio, not on when it arrived (a
    piece runs as soon as its samples are buffered; at the end, the rest runs as the final
    piece), so a live stream emits exactly what :func:`stream_transducer` emits offline.

    ``adapter``: the stream's adapter key (``None``: the base model).
    """

    def __init__(self, model, adapter: str | None, config: TransducerStreamingConfig) -> None:
        self.model, self.adapter, self.config = model, adapter, config
        fb = model.fbank
        self._hop, self._win = fb.hop, fb.win
        self._chunk = round(config.chunk_ms * model.config.sample_rate / 1000)
        self._first = self._chunk + _overhang_samples(fb)
        self.sample_rate = model.config.sample_rate
        self._init_audio()  # ``decoded``: samples covered by the pieces run so far
        self._feats_done = 0  # feature frames computed so far
        self.done = False
        self.state = model.init_streaming_state(1, config.chunk_frames(model.config.frame_ms),
                                                config.left_context_chunks)
        with routing.use([adapter]):  # the predictor may carry adapters
            self.search = GreedyState.start(model, 1, model.cmvn.mean.device)
        self.out = TokenStream([], [], [], [])

    def next_piece(self) -> Piece | None:
        """The next piece to run, or ``None`` (waiting for audio, or done)."""
        if self.done:
            return None
        want = self._first if self.decoded == 0 else self.decoded + self._chunk
        if self.received >= want:
            return Piece(self.decoded, want, False)
        if self.closed:
            return Piece(self.decoded, self.received, True)
        return None

    def run(self, piece: Piece) -> int:
        """Run ``piece`` through the encoder and the greedy search; returns tokens emitted."""
        return run_pieces(self.model, [(self, piece)])[0]

    def _features(self, piece: Piece) -> torch.Tensor:
        """(1, T, F) the feature frames whose whole 25 ms window has arrived, from the first new one."""
        hop, win = self._hop, self._win
        total = max(0, (piece.hi - win) // hop + 1)
        if total > self._feats_done:
            feats, _ = self.model.features([self._samples(self._feats_done * hop, (total - 1) * hop + win)])
            x = feats[:, : total - self._feats_done]
        else:
            x = torch.zeros(1, 0, self.model.config.n_mels)
        self._feats_done = total
        return x

    def _done_piece(self, piece: Piece, emitted: int, seconds: float) -> None:
        self.out.pieces += 1
        now = round(piece.hi / self.model.config.sample_rate, 4)
        self.out.emit_times += [now] * emitted
        self.decoded = piece.hi
        self._release(self._feats_done * self._hop)  # before the next feature frame's window: never read again
        if piece.final:
            self.done = True
        self.out.processing_s += seconds
        self._sync()

    def _sync(self) -> None:
        self.out.tokens = list(self.search.tokens[0])
        self.out.frame_times = list(self.search.times[0])
        reach = self.model.config.frame_s + _overhang_samples(self.model.fbank) / self.model.config.sample_rate
        self.out.avail_times = [round(t + reach, 4) for t in self.out.frame_times]


@torch.no_grad()
def run_pieces(model, work: list[tuple[TransducerStream, Piece]]) -> list[int]:
    """Run one piece of each stream; returns the tokens each emitted.

    Streams whose states have one shape (same chunk grid and buffered frames, e.g. every
    stream past its first piece) run as one batch, each row routed to its own adapter, with
    key/value caches of different lengths left-padded and masked and positions per row; a
    final piece, or a stream alone in its shape, runs by itself. Either way a stream emits
    what it would emit alone.
    """
    if not work:
        return []
    t0 = time.perf_counter()
    xs = [s._features(p) for s, p in work]
    groups: dict[tuple, list[int]] = {}
    for i, ((s, p), x) in enumerate(zip(work, xs)):
        key = ("final", i) if p.final else (x.shape[1], s.state.shape_key(), s.config)
        groups.setdefault(key, []).append(i)
    emitted = [0] * len(work)
    for idx in groups.values():
        streams = [work[i][0] for i in idx]
        x = torch.cat([xs[i] for i in idx])
        route = [s.adapter for s in streams]
        final = work[idx[0]][1].final
        if len(idx) == 1:
            state, search = streams[0].state, streams[0].search
        else:
            state = StreamingState.stack([s.state for s in streams])
            search = GreedyState.stack([s.search for s in streams])
            cached = [s.state.encoder.valid.shape[1] for s in streams]
        before = [len(t) for t in search.tokens]
        with routing.use(route):
            y, y_lens, state = model.streaming_forward(x, torch.full((len(idx),), x.shape[1]), state, final=final)
            if y.shape[1]:
                enc_p = model.joiner.project_encoder(y, "first_pass")
                greedy_step(model, enc_p, y_lens, search, streams[0].config.max_symbols_per_frame)
        if len(idx) == 1:
            streams[0].state = state
        else:
            # Each row's cache grew by the encoder frames of this call, then was cut to ``keep``.
            keep = state.encoder.keep
            lengths = [n + y.shape[1] if keep < 0 else min(keep, n + y.shape[1]) for n in cached]
            for s, st, gs in zip(streams, state.unstack(lengths), search.unstack()):
                s.state, s.search = st, gs
        for k, i in enumerate(idx):
            emitted[i] = len(search.tokens[k]) - before[k]
    share = (time.perf_counter() - t0) / len(work)
    for (s, p), n in zip(work, emitted):
        s._done_piece(p, n, share)
    return emitted


def stream_transducer(model, wav: np.ndarray, adapter: str | None, config: TransducerStreamingConfig) -> TokenStream:
    """Stream one (N,) 16 kHz waveform through ``model`` piece by piece (batch of one).

    ``adapter``: the stream's adapter key (``None``: the base model). Tokens equal those of
    ``transcribe_batch(model, [wav], [lang], options(mode="streaming", ...), route=[adapter])``.
    """
    stream = TransducerStream(model, adapter, config)
    stream.push(wav)
    stream.close()
    while (piece := stream.next_piece()) is not None:
        stream.run(piece)
    return stream.out


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
