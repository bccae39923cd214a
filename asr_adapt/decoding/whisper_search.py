"""Lean batched search over the Whisper decoder: greedy and beam, with a KV cache.

Not ``generate``: one decoder call per step on the rows still running. Rows that finish
are dropped from the batch (cache, encoder states and adapter routing together), so a
batch costs as many steps as its longest row but each step only pays for live rows.

Routing: every search takes the (B,) rows' :class:`~asr_adapt.routing.Route` and reshapes
it with the same index as the encoder states and the cache (``route.select`` /
``route.repeat``), so each live row keeps its adapter by construction; each decoder call
is routed with the route of the rows it runs on (:func:`decoder_logits`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from asr_adapt import routing
from asr_adapt.decoding.options import DecodingOptions
from asr_adapt.decoding.repetition import cut_loop, tail_loop
from asr_adapt.models.whisper_step import reorder_beams, search_cache
from asr_adapt.registry import Registry


@dataclass
class SearchResult:
    """Tokens of one row (prompt and end-of-text excluded) and how the search ended."""

    tokens: list[int]
    sum_logprob: float
    looped: bool = False
    truncated: bool = False

    @property
    def avg_logprob(self) -> float:
        # Whisper's definition: the end-of-text token counts as one more token.
        return self.sum_logprob / (len(self.tokens) + 1)


SearchFn = Callable[..., list[SearchResult]]
SEARCHES: Registry[SearchFn] = Registry("search method")
"""name -> ``fn(backbone, encoder_states (B,T,D), prompts (B,P), caps (B,), options, route) -> [SearchResult]``."""


def decoder_logits(backbone, ids: torch.Tensor, enc: torch.Tensor, cache, route: routing.Route) -> torch.Tensor:
    """Next-token logits (B, V) of the (B,) rows routed by ``route`` (one decoder step)."""
    with routing.use(route):
        return backbone.decoder_logits(ids, enc, cache)


class LogitMask:
    """Additive -inf masks: ``always`` (every step) and ``first`` (first generated token)."""

    def __init__(self, backbone, options: DecodingOptions, vocab: int, device: torch.device) -> None:
        eot = backbone.tokens.eot
        always = torch.zeros(vocab, dtype=torch.bool)
        ids = backbone.suppress_tokens if options.suppress_tokens is None else options.suppress_tokens
        always[[i for i in ids if 0 <= i < vocab]] = True
        if options.suppress_special:
            always[eot + 1 :] = True  # control tokens follow <|endoftext|> in Whisper vocabularies
        first = always.clone()
        if options.suppress_blank:
            blank = backbone.tokenizer(" ", add_special_tokens=False).input_ids
            first[[*blank, eot, *backbone.begin_suppress_tokens]] = True
        self.always = torch.where(always, float("-inf"), 0.0).to(device)
        self.first = torch.where(first, float("-inf"), 0.0).to(device)

    def __call__(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        return logits + (self.first if step == 0 else self.always)


def _loop_len(tokens: list[int], options: DecodingOptions) -> int:
    if not options.repetition_guard:
        return 0
    return tail_loop(tokens, options.repetition_max_ngram, options.repetition_max_repeats, options.repetition_min_span)


# A finished row stays in the batch (its outputs ignored) until at most this fraction of the
# batch is still decoding. Dropping rows copies the cache, whose cross-attention K/V alone hold
# 2 x layers x S x D floats per row, while a finished row riding along adds little to a step
# bound by reading the weights; halving bounds the copies at log2(B) per batch.
COMPACT_AT = 0.5


@SEARCHES.decorator("greedy")
def greedy_search(backbone, enc: torch.Tensor, prompts: torch.Tensor, caps: Sequence[int], options: DecodingOptions,
                  route: routing.Route):
    """Argmax decoding. enc: (B, T, D); prompts: (B, P) ids; caps: (B,) token caps; route: (B,)."""
    eot = backbone.tokens.eot
    n = enc.shape[0]
    results = [SearchResult([], 0.0) for _ in range(n)]
    mask = LogitMask(backbone, options, backbone.proj_out.out_features, enc.device)
    rows = list(range(n))  # original row of each batch position
    live = list(range(n))  # batch positions still decoding
    cache = search_cache(backbone, n, prompts.shape[1] + max(caps))
    logits = decoder_logits(backbone, prompts, enc, cache, route)
    step = 0
    while True:
        # log_softmax then max: one pass each (argmax and logsumexp are slower kernels on CPU)
        best_lp, best = torch.log_softmax(mask(logits, step), dim=-1).max(dim=-1)
        toks, lps = best.tolist(), best_lp.tolist()
        keep: list[int] = []
        for j in live:
            r = results[rows[j]]
            r.sum_logprob += lps[j]
            if toks[j] == eot:
                continue
            r.tokens.append(toks[j])
            if loop := _loop_len(r.tokens, options):
                r.tokens, r.looped = cut_loop(r.tokens, loop), True
            elif len(r.tokens) >= caps[rows[j]]:
                r.truncated = True
            else:
                keep.append(j)
        if not keep:
            return results
        if len(keep) <= COMPACT_AT * len(rows):
            # Finished rows leave the batch: cache, encoder states and route together.
            idx = torch.tensor(keep, device=enc.device)
            cache.batch_select_indices(idx)  # StaticKV and Hugging Face's cache both have it
            enc, route = enc[idx], route.select(keep)
            rows = [rows[j] for j in keep]
            best = best[idx]
            live = list(range(len(keep)))
        else:
            live = keep
        step += 1
        logits = decoder_logits(backbone, best[:, None], enc, cache, route)


@dataclass
class _Beam:
    tokens: list[int]
    score: float


@SEARCHES.decorator("beam")
def beam_search(backbone, enc: torch.Tensor, prompts: torch.Tensor, caps: Sequence[int], options: DecodingOptions,
                route: routing.Route):
    """Beam search with ``options.beam_size`` beams per row.

    A row is done when it has ``K`` finished hypotheses (Whisper's rule) or no live beam;
    the best is chosen by the length-penalised score (:func:`_rank`).
    enc: (B, T, D); prompts: (B, P); caps: (B,); route: (B,).
    """
    k = options.beam_size
    eot = backbone.tokens.eot
    n = enc.shape[0]
    vocab = backbone.proj_out.out_features
    mask = LogitMask(backbone, options, vocab, enc.device)
    finished: list[list[SearchResult]] = [[] for _ in range(n)]
    beams: list[list[_Beam]] = [[_Beam([], 0.0)] + [_Beam([], float("-inf"))] * (k - 1) for _ in range(n)]
    alive = list(range(n))
    cache = search_cache(backbone, n, prompts.shape[1] + max(caps))
    logits = decoder_logits(backbone, prompts, enc, cache, route)
    # One row per beam from here on; the -inf scores make step 0 expand beam 0 only.
    cache.batch_repeat_interleave(k)
    enc, route = enc.repeat_interleave(k, dim=0), route.repeat(k)
    logits = logits.repeat_interleave(k, dim=0)
    step = 0
    while True:
        logp = torch.log_softmax(mask(logits, step), dim=-1)  # (A*K, V)
        scores = torch.tensor([b.score for r in alive for b in beams[r]], device=logp.device)
        cand = (logp + scores[:, None]).view(len(alive), k * vocab)
        top_s, top_i = cand.topk(min(2 * k, k * vocab), dim=-1)
        src: list[int] = []  # batch row each surviving beam continues from
        nxt: list[int] = []
        still: list[int] = []
        for a, r in enumerate(alive):
            new: list[_Beam] = []
            row_src: list[int] = []
            row_nxt: list[int] = []
            # Candidates best first; like Whisper, end-of-text candidates ranked above
            # the K-th kept beam finish, the rest are ignored.
            for s, i in zip(top_s[a].tolist(), top_i[a].tolist()):
                if s == float("-inf") or len(new) == k:
                    break
                b, tok = divmod(i, vocab)
                parent = beams[r][b]
                if tok == eot:
                    if len(finished[r]) < k:
                        finished[r].append(SearchResult(list(parent.tokens), s))
                    continue
                toks = parent.tokens + [tok]
                if loop := _loop_len(toks, options):
                    finished[r].append(SearchResult(cut_loop(toks, loop), s, looped=True))
                elif len(toks) >= caps[r]:
                    finished[r].append(SearchResult(toks, s, truncated=True))
                else:
                    new.append(_Beam(toks, s))
                    row_src.append(a * k + b)
                    row_nxt.append(tok)
            if len(finished[r]) >= k or not new:
                continue
            while len(new) < k:  # fewer live candidates than beams: pad with dead copies
                new.append(_Beam(new[0].tokens, float("-inf")))
                row_src.append(row_src[0])
                row_nxt.append(row_nxt[0])
            beams[r] = new
            src += row_src
            nxt += row_nxt
            still.append(a)
        if not still:
            break
        idx = torch.tensor(src, device=enc.device)
        # Self-attention K/V follow their beam; cross-attention K/V are the same for
        # every beam of a row, so they only change when whole rows are dropped.
        rows = None
        if len(still) < len(alive):
            rows = torch.tensor([a * k + j for a in still for j in range(k)], device=enc.device)
            enc = enc[rows]
        reorder_beams(cache, idx, rows)
        route = route.select(src)  # each surviving beam keeps its row's adapter
        alive = [alive[a] for a in still]
        step += 1
        logits = decoder_logits(backbone, torch.tensor(nxt, device=enc.device)[:, None], enc, cache, route)
    out = []
    for r in range(n):
        pool = finished[r] or [SearchResult(b.tokens, b.score, truncated=True) for b in beams[r]]
        out.append(max(pool, key=lambda h: _rank(h, options.length_penalty)))
    return out


def _rank(h: SearchResult, length_penalty: float | None) -> float:
    """Whisper's ranking: mean log-prob, or GNMT length penalty when ``length_penalty`` is set."""
    length = len(h.tokens) + 1
    penalty = length if length_penalty is None else ((5 + length) / 6) ** length_penalty
    return h.sum_logprob / penalty


def run_search(backbone, enc, prompts, caps, options: DecodingOptions, route: routing.Route) -> list[SearchResult]:
    """Dispatch to the registered search method ``options.method``."""
    return SEARCHES.get(options.method)(backbone, enc, prompts, caps, options, route)
