"""Transducer search: batched greedy, beam search, modified beam search, and streaming greedy.

:func:`transcribe` is the transducer entry of :data:`asr_adapt.decoding.decoders.DECODERS`. Decode
*modes* (``full``: whole utterance, second pass when the model has one; ``streaming``:
first pass chunk by chunk) and search *methods* (``greedy``, ``beam``, ``modified_beam``) are
registries, so a new one is one registered function.

Every method reports per-token emission times: the start (s) of the encoder frame that
emitted the token (40 or 80 ms encoder frames). ``avg_logprob`` is the mean log-probability of all
decisions taken (blanks included), comparable across methods for the same utterance.

Adapters sit on the encoder blocks and, optionally, on the prediction network and the
joiner's output (LDA's ``output`` group, for a script the foundation never emitted). Every
mode and method takes the utterances' :class:`~asr_adapt.routing.Route`. Greedy search
keeps one row per utterance, so the route applies as is; beam search routes each
prediction/joiner call over one utterance's hypotheses to that utterance's adapter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from asr_adapt import routing
from asr_adapt.decoding import token_lm
from asr_adapt.models.base import Hypothesis
from asr_adapt.registry import Registry

MIN_FRAME_MS = 40  # the finest encoder frame (4x subsampling); chunk sizes are multiples of it


def chunk_frames(chunk_ms: int, frame_ms: int) -> int:
    """``chunk_ms`` in encoder frames; a clear error when it is not a whole number of them."""
    if chunk_ms <= 0 or chunk_ms % frame_ms:
        raise ValueError(f"chunk_ms={chunk_ms} is not a positive multiple of this model's {frame_ms} ms "
                         f"encoder frame; use e.g. {frame_ms * max(1, round(chunk_ms / frame_ms))}")
    return chunk_ms // frame_ms


@dataclass(frozen=True)
class TransducerDecodingOptions:
    """How :func:`transcribe` decodes; make variants with ``dataclasses.replace``."""

    mode: str = field(default="full", metadata={
        "help": "'full': whole utterance, second-pass encoder if present; 'streaming': first pass chunk by chunk"})
    method: str = field(default="greedy", metadata={
        "help": "'greedy', 'beam' (up to max_symbols_per_frame per frame) or 'modified_beam' (one symbol per "
                "frame, icefall's); streaming supports greedy"})
    beam_size: int = field(default=4, metadata={"help": "hypotheses kept by beam search"})
    chunk_ms: int = field(default=320, metadata={
        "help": "first-pass attention chunk in ms (a multiple of the model's frame: 40 or 80 ms); "
                "0: full attention (full mode only)"})
    left_context_chunks: int = field(default=-1, metadata={
        "help": "chunks of left context the first pass attends to; -1: unlimited"})
    max_symbols_per_frame: int = field(default=3, metadata={
        "help": "greedy and beam: cap on tokens emitted at one frame (guards against a stuck non-blank loop)"})
    lm: str | None = field(default=None, metadata={
        "help": "directory of per-locale token n-gram LMs (LOCALE.json, `asr-adapt lm train`) fused into beam "
                "search (shallow fusion); rows whose locale has no LM decode without one"})
    # Both chosen on the synthetic head locales' dev set with a 6-gram character LM
    # (egs/synth_tail/asr2/RESULTS.md section 3k); without a bonus the LM deletes characters.
    lm_weight: float = field(default=0.5, metadata={"help": "shallow fusion: weight of the LM's log-probability"})
    lm_bonus: float = field(default=1.0, metadata={
        "help": "shallow fusion: added per emitted token (offsets the LM's preference for short outputs)"})

    def __post_init__(self) -> None:
        DECODE_MODES.get(self.mode)  # raises with the list of known names
        SEARCH_METHODS.get(self.method)
        if self.mode == "streaming" and self.method != "greedy":
            raise ValueError("streaming decoding supports method='greedy' only")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.chunk_ms < 0 or self.chunk_ms % MIN_FRAME_MS:
            raise ValueError(f"chunk_ms must be 0 or a positive multiple of {MIN_FRAME_MS}, got {self.chunk_ms}")
        if self.mode == "streaming" and self.chunk_ms == 0:
            raise ValueError("streaming needs chunk_ms > 0")
        if self.left_context_chunks < -1:
            raise ValueError("left_context_chunks must be -1 (unlimited) or >= 0")
        if self.max_symbols_per_frame < 1:
            raise ValueError("max_symbols_per_frame must be >= 1")
        if self.lm is not None and self.method == "greedy":
            raise ValueError("LM fusion needs beam search: set method='beam' (--beam-size > 1)")
        if self.lm is not None and not Path(self.lm).is_dir():
            raise ValueError(f"lm: {self.lm} is not a directory of LMs (build one with `asr-adapt lm train`)")
        if self.lm_weight < 0:
            raise ValueError(f"lm_weight must be >= 0, got {self.lm_weight}")

    def chunk_frames(self, frame_ms: int) -> int:
        """Chunk size in encoder frames of ``frame_ms`` each; -1 for full attention."""
        return chunk_frames(self.chunk_ms, frame_ms) if self.chunk_ms else -1


@dataclass
class SearchResult:
    """One utterance's best path: token ids, emission times (s), summed acoustic (transducer)
    log-prob, decisions; ``lm_score``: what shallow fusion added to rank it (LM and bonus)."""

    tokens: list[int]
    times: list[float]
    logprob: float
    decisions: int
    lm_score: float = 0.0


# method(model, enc_p (B, T, J), lengths (B,), options, route (B,)) -> list[SearchResult]
SEARCH_METHODS: Registry[Callable] = Registry("transducer search method")
# mode(model, feats (B, T_f, F), lengths (B,), route (B,), options) -> list[SearchResult]
DECODE_MODES: Registry[Callable] = Registry("transducer decode mode")


def _decoder_proj(model, context: torch.Tensor) -> torch.Tensor:
    """(N, context_size) token history -> (N, J) projected prediction-network output."""
    return model.joiner.project_decoder(model.predictor(context, need_pad=False))[:, -1]


# ---------------------------------------------------------------------------- greedy
@dataclass
class GreedyState:
    """Batched greedy search state, carried across streaming chunks.

    context: (B, c) last tokens per row; dec_p: (B, J) their projected prediction;
    logprob: (B,) float64 summed log-probs; decisions: (B,) decision counts;
    frame: encoder frames consumed (absolute index of the next frame); a list of one per
    row when streams at different points share a batch (:meth:`stack`).
    """

    context: torch.Tensor
    dec_p: torch.Tensor
    tokens: list[list[int]]
    times: list[list[float]]
    logprob: torch.Tensor
    decisions: torch.Tensor
    frame: int | list[int] = 0

    @classmethod
    def stack(cls, states: list[GreedyState]) -> GreedyState:
        """One batch from single-row states; the token and time lists are shared, not copied."""
        return cls(torch.cat([s.context for s in states]), torch.cat([s.dec_p for s in states]),
                   [s.tokens[0] for s in states], [s.times[0] for s in states],
                   torch.cat([s.logprob for s in states]), torch.cat([s.decisions for s in states]),
                   [int(s.frame) for s in states])

    def unstack(self) -> list[GreedyState]:
        return [GreedyState(self.context[i : i + 1], self.dec_p[i : i + 1], [self.tokens[i]], [self.times[i]],
                            self.logprob[i : i + 1], self.decisions[i : i + 1], self.frame[i])
                for i in range(len(self.tokens))]

    @classmethod
    def start(cls, model, batch: int, device=None) -> GreedyState:
        ctx = model.predictor.start_context(batch, device)
        return cls(ctx, _decoder_proj(model, ctx), [[] for _ in range(batch)], [[] for _ in range(batch)],
                   torch.zeros(batch, dtype=torch.float64), torch.zeros(batch, dtype=torch.long))

    def results(self) -> list[SearchResult]:
        return [SearchResult(t, s, float(lp), int(n))
                for t, s, lp, n in zip(self.tokens, self.times, self.logprob, self.decisions)]


def greedy_step(model, enc_p: torch.Tensor, lengths: torch.Tensor, st: GreedyState, max_symbols: int) -> GreedyState:
    """Advance greedy search over (B, T, J) projected encoder frames; rows stop at ``lengths``."""
    blank = model.predictor.blank_id
    lengths = lengths.to(enc_p.device)
    for t in range(enc_p.shape[1]):
        active = t < lengths  # (B,)
        if not bool(active.any()):
            break
        frame = enc_p[:, t]  # (B, J)
        for _ in range(max_symbols):
            logp = model.joiner(frame, st.dec_p).float().log_softmax(-1)  # (B, V)
            best, tok = logp.max(-1)
            st.logprob += torch.where(active, best, torch.zeros_like(best)).double().cpu()
            st.decisions += active.long().cpu()
            emit = active & (tok != blank)
            if not bool(emit.any()):
                break
            for b in emit.nonzero().flatten().tolist():
                st.tokens[b].append(int(tok[b]))
                start = st.frame if isinstance(st.frame, int) else st.frame[b]
                st.times[b].append(round((start + t) * model.config.frame_s, 3))
            shifted = torch.cat([st.context[:, 1:], tok[:, None]], dim=1)
            st.context = torch.where(emit[:, None], shifted, st.context)
            st.dec_p = torch.where(emit[:, None], _decoder_proj(model, st.context), st.dec_p)
            active = emit  # only rows that emitted may emit again at this frame
    n = enc_p.shape[1]
    st.frame = st.frame + n if isinstance(st.frame, int) else [f + n for f in st.frame]
    return st


@SEARCH_METHODS.decorator("greedy")
def greedy_search(model, enc_p, lengths, options, route: routing.Route) -> list[SearchResult]:
    with routing.use(route):  # one row per utterance throughout: the route applies as is
        st = GreedyState.start(model, enc_p.shape[0], enc_p.device)
        return greedy_step(model, enc_p, lengths, st, options.max_symbols_per_frame).results()


# ---------------------------------------------------------------------------- beam
@dataclass
class _Beam:
    """A hypothesis: ``score`` ranks it (acoustic + fused LM), ``am`` is the acoustic part alone."""

    score: float
    times: list[float]
    am: float


@dataclass(frozen=True)
class Fusion:
    """Shallow fusion of one utterance's search with its locale's token LM.

    An emitted token ``w`` after hypothesis ``h`` scores ``log p_am + weight * log p_lm(w | h)
    + bonus``; blank costs nothing extra, and a finished hypothesis adds ``weight * log
    p_lm(</s> | h)``, so the LM judges whole sentences rather than rewarding early stops.
    """

    lm: token_lm.TokenNgramLM
    weight: float
    bonus: float

    def extensions(self, keys: list[tuple[int, ...]]) -> torch.Tensor:
        """(H, V) float64 score added to each hypothesis' extension by each token (column 0 = blank: 0)."""
        add = np.stack([self.lm.logprobs(k) for k in keys]) * self.weight + self.bonus
        add[:, 0] = 0.0
        return torch.from_numpy(add)

    def end(self, key: tuple[int, ...]) -> float:
        return self.weight * float(self.lm.logprobs(key)[token_lm.END])


def _fusions(options, lms: Sequence[token_lm.TokenNgramLM | None] | None, batch: int) -> list[Fusion | None]:
    if lms is None:
        return [None] * batch
    return [None if lm is None else Fusion(lm, options.lm_weight, options.lm_bonus) for lm in lms]


def _final(hyps: dict[tuple[int, ...], _Beam], fusion: Fusion | None) -> tuple[tuple[int, ...], _Beam, float]:
    """The final hypothesis (the best score, with the LM's end-of-sentence term when fusing) and
    what fusion added to its score; results report the acoustic log-prob apart from that share,
    since confidence filters read it."""
    end = fusion.end if fusion is not None else (lambda key: 0.0)
    key, best = max(hyps.items(), key=lambda kv: kv[1].score + end(kv[0]))
    return key, best, best.score + end(key) - best.am


@SEARCH_METHODS.decorator("modified_beam")
def modified_beam_search(model, enc_p, lengths, options, route: routing.Route, lms=None) -> list[SearchResult]:
    """Beam search with at most one symbol per frame (icefall's "modified beam search").

    Each frame, every hypothesis either emits blank or one token; the best ``beam_size``
    of all (hypothesis, token) extensions survive and hypotheses with equal token
    sequences are merged (log-sum-exp of their scores). With ``beam_size=1`` this is
    greedy search with ``max_symbols_per_frame=1``. ``lms``: each row's token LM (or ``None``)
    for shallow fusion (:class:`Fusion`).
    """
    blank = model.predictor.blank_id
    out = []
    for b, fusion in enumerate(_fusions(options, lms, enc_p.shape[0])):
        hyps: dict[tuple[int, ...], _Beam] = {(): _Beam(0.0, [], 0.0)}
        n = int(lengths[b])
        for t in range(n):
            new: dict[tuple[int, ...], _Beam] = {}
            for score, am, key, v in _top_extensions(model, enc_p[b, t], hyps, route[b], options.beam_size, fusion):
                if v != blank:
                    _merge(new, key + (v,), _Beam(score, hyps[key].times + [round(t * model.config.frame_s, 3)], am))
                else:
                    _merge(new, key, _Beam(score, hyps[key].times, am))
            hyps = new
        key, best, fused = _final(hyps, fusion)
        out.append(SearchResult(list(key), best.times, best.am, n, fused))
    return out


def _top_extensions(model, frame: torch.Tensor, hyps: dict[tuple[int, ...], _Beam], key: str | None,
                    beam_size: int, fusion: Fusion | None = None) -> list[tuple[float, float, tuple[int, ...], int]]:
    """The best ``beam_size`` one-token extensions ``(score, acoustic score, hypothesis, token)``
    of ``hyps`` at one projected encoder frame (J,), best first (token = blank: the hypothesis
    waits); ranked by the score, which includes the fused LM when ``fusion`` is given.

    Output-side adapters route by row; the rows of this joiner call are one utterance's
    hypotheses, so every row is routed to that utterance's adapter ``key``.
    """
    c, blank = model.predictor.context_size, model.predictor.blank_id
    keys = list(hyps)
    ctx = torch.tensor([([blank] * c + list(k))[-c:] for k in keys], dtype=torch.long, device=frame.device)
    with routing.use([key] * len(keys)):
        logp = model.joiner(frame[None], _decoder_proj(model, ctx)).float().log_softmax(-1).double().cpu()  # (H, V)
    am = torch.tensor([hyps[k].am for k in keys], dtype=torch.float64)[:, None] + logp
    scores = torch.tensor([hyps[k].score for k in keys], dtype=torch.float64)[:, None] + logp
    if fusion is not None:
        scores += fusion.extensions(keys)
    vocab = scores.shape[1]
    top = scores.flatten().topk(min(beam_size, scores.numel()))
    flat_am = am.flatten()
    return [(score, float(flat_am[idx]), keys[idx // vocab], idx % vocab)
            for score, idx in zip(top.values.tolist(), top.indices.tolist())]


def _lse(a: float, b: float) -> float:
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def _merge(into: dict[tuple[int, ...], _Beam], key: tuple[int, ...], path: _Beam) -> None:
    """Add a path to ``into``; equal token sequences merge (log-sum-exp), keeping the better one's
    times. The fused LM terms depend only on the tokens, so both sums stay consistent."""
    if key in into:
        old = into[key]
        if path.score > old.score:
            old.times = path.times
        old.score, old.am = _lse(old.score, path.score), _lse(old.am, path.am)
    else:
        into[key] = path


def _top(hyps: dict[tuple[int, ...], _Beam], k: int) -> dict[tuple[int, ...], _Beam]:
    return dict(sorted(hyps.items(), key=lambda kv: -kv[1].score)[:k])


@SEARCH_METHODS.decorator("beam")
def beam_search(model, enc_p, lengths, options, route: routing.Route, lms=None) -> list[SearchResult]:
    """Beam search with up to ``max_symbols_per_frame`` symbols per frame.

    Within a frame, hypotheses that emitted a token may emit again (as greedy search does),
    those that emitted blank wait for the next frame; the best ``beam_size`` of all
    extensions survive each expansion, and a hypothesis still expanding is dropped as soon
    as it cannot reach the ``beam_size``-th finished one: extensions only lower a score, except
    by the fused LM's per-token bonus, which each further symbol of the frame may add once.
    Equal token sequences merge (log-sum-exp). One symbol per frame (icefall's modified beam
    search) is too few at 80 ms frames and characters, where ~1.1 characters fall in a frame
    on average. With ``beam_size=1`` this is greedy search with the same symbol cap.
    ``lms``: each row's token LM (or ``None``) for shallow fusion (:class:`Fusion`).
    """
    blank, cap = model.predictor.blank_id, options.max_symbols_per_frame
    out = []
    for b, fusion in enumerate(_fusions(options, lms, enc_p.shape[0])):
        bonus = max(0.0, fusion.bonus) if fusion is not None else 0.0
        hyps: dict[tuple[int, ...], _Beam] = {(): _Beam(0.0, [], 0.0)}
        n = int(lengths[b])
        for t in range(n):
            expanding, finished = hyps, {}
            for sym in range(cap):
                nxt: dict[tuple[int, ...], _Beam] = {}
                for score, am, key, v in _top_extensions(model, enc_p[b, t], expanding, route[b], options.beam_size,
                                                         fusion):
                    if v == blank:
                        _merge(finished, key, _Beam(score, expanding[key].times, am))
                    else:
                        # At the symbol cap the path moves on to the next frame, as greedy does.
                        target = nxt if sym + 1 < cap else finished
                        _merge(target, key + (v,),
                               _Beam(score, expanding[key].times + [round(t * model.config.frame_s, 3)], am))
                finished = _top(finished, options.beam_size)
                floor = (min(x.score for x in finished.values()) - bonus * (cap - sym - 1)
                         if len(finished) >= options.beam_size else -math.inf)
                expanding = {k: x for k, x in _top(nxt, options.beam_size).items() if x.score > floor}
                if not expanding:
                    break
            hyps = finished
        key, best, fused = _final(hyps, fusion)
        out.append(SearchResult(list(key), best.times, best.am, n + len(key), fused))
    return out


# ---------------------------------------------------------------------------- modes
@DECODE_MODES.decorator("full")
def decode_full(model, feats, lengths, route: routing.Route, options, lms=None) -> list[SearchResult]:
    """Whole utterances: first pass under ``chunk_ms`` (as deployed), then the second pass.
    ``lms``: each row's token LM for beam search's shallow fusion (``None``: no fusion)."""
    with routing.use(route):
        out = model.encode(feats, lengths, options.chunk_frames(model.config.frame_ms), options.left_context_chunks)
        enc, name = (out.second, "second_pass") if out.second is not None else (out.first, "first_pass")
        enc_p = model.joiner.project_encoder(enc, name)
    search = SEARCH_METHODS.get(options.method)
    if lms is None:
        return search(model, enc_p, out.lengths, options, route)
    return search(model, enc_p, out.lengths, options, route, lms=lms)


@DECODE_MODES.decorator("streaming")
def decode_streaming(model, feats, lengths, route: routing.Route, options) -> list[SearchResult]:
    """First pass chunk by chunk (``chunk_ms`` of features per call), greedy as frames arrive."""
    b, t_total, _ = feats.shape
    c = options.chunk_frames(model.config.frame_ms)
    step = model.config.subsampling * c
    state = model.init_streaming_state(b, c, options.left_context_chunks)
    with routing.use(route):  # one row per utterance throughout; the start state too (predictor adapters)
        search = GreedyState.start(model, b, feats.device)
        for s in range(0, max(t_total, 1), step):
            x = feats[:, s : s + step]
            x_lens = (lengths - s).clamp(0, x.shape[1])
            y, y_lens, state = model.streaming_forward(x, x_lens, state, final=s + step >= t_total)
            if y.shape[1]:
                enc_p = model.joiner.project_encoder(y, "first_pass")
                greedy_step(model, enc_p, y_lens, search, options.max_symbols_per_frame)
    return search.results()


@torch.no_grad()
def transcribe(model, wavs: Sequence[np.ndarray], langs: Sequence[str | None] | None,
               options: TransducerDecodingOptions, route: routing.Route) -> list[Hypothesis]:
    """Decode (N_i,) 16 kHz waveforms; ``langs``: each row's locale (reported back),
    ``route``: each row's adapter key (``None``: the base model)."""
    langs = list(langs) if langs is not None else [None] * len(wavs)
    if not len(wavs) == len(langs) == len(route):
        raise ValueError(f"{len(wavs)} clips, {len(langs)} locales and {len(route)} routes: one of each per clip")
    feats, lengths = model.features(wavs)
    mode = DECODE_MODES.get(options.mode)
    if options.lm is None:
        results = mode(model, feats, lengths, route, options)
    else:  # options forbid an LM with greedy search, hence with streaming
        lms = token_lm.load_locale_lms(options.lm, langs, model.tokenizer.pieces())
        results = mode(model, feats, lengths, route, options, lms=lms)
    return [
        Hypothesis(text=model.tokenizer.decode(r.tokens), tokens=r.tokens, times=r.times,
                   avg_logprob=r.logprob / max(1, r.decisions), lang=lang)
        for r, lang in zip(results, langs)
    ]
