"""One batched Whisper call for the steps of many streams (server ticks, stream-eval updates).

:func:`decode_steps` takes one :class:`StepRow` per stream (its
:class:`~asr_adapt.decoding.streaming_whisper.WhisperStep`, locale, adapter key and
options) and answers each with a :class:`~asr_adapt.decoding.streaming_whisper.StepOutput`.
Rows of different locales share the batch, each routed to its own adapter.

A row's answer must not depend on which other rows share its batch (the server's batches
depend on timing; ``stream-eval`` decodes one stream at a time, and both must commit the
same text). So:

* the encoder runs on each row's own window (rows sharing a window are encoded together:
  the encoder has no padding mask, so a row is never padded to a longer neighbour's window);
* the decoder then takes every greedy row at once: encoder states of different lengths are
  zero-padded and masked out of the cross-attention (:class:`CrossMask`), and prompts of
  different lengths (prompt words, forced prefix) are left-padded with an attention mask and
  explicit positions, so the padding is invisible to each row.

Greedy rows run :func:`ragged_greedy`, which can also stop each row at its AlignAtt guard:
after every step it reads the cross-attention of the model's alignment heads (queries
captured by hooks on the ``encoder_attn.q_proj`` of those layers, keys from the KV cache)
and stops a row before a token whose attention peaks in the last ``guard_frames`` encoder
frames of that row's audio. Beam rows are decoded one at a time with the usual search.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from asr_adapt import routing
from asr_adapt.decoding.options import DecodingOptions
from asr_adapt.decoding.repetition import cut_loop
from asr_adapt.decoding.streaming_whisper import SAMPLE_RATE, StepOutput, WhisperStep, join_units, split_units
from asr_adapt.decoding.whisper_search import LogitMask, SearchResult, _loop_len, run_search
from asr_adapt.models.whisper_features import HOP_LENGTH, window_samples

SAMPLES_PER_FRAME = 2 * HOP_LENGTH  # one encoder frame = 2 mel hops = 20 ms


@dataclass(frozen=True)
class StepRow:
    """One stream's step in a batch: ``lang`` None = detect on this step's audio."""

    step: WhisperStep
    lang: str | None
    key: str | None
    options: DecodingOptions


@dataclass
class RowSearch:
    """A row's greedy result: tokens, the attended encoder frame of each, where it stopped."""

    result: SearchResult
    frames: list[int]
    guarded: bool = False  # stopped at the AlignAtt guard (not at end of text or the cap)
    next_starts_word: bool = False  # the token the guard held back begins a new word


def alignment_heads(backbone) -> list[tuple[int, int]]:
    """(decoder layer, head) pairs whose cross-attention aligns with time: the model's
    ``alignment_heads`` (OpenAI's per-model list) or, like Whisper, every head of the
    second half of the decoder layers."""
    heads = getattr(backbone.hf.generation_config, "alignment_heads", None)
    if heads:
        return [(int(layer), int(h)) for layer, h in heads]
    n_layers, n_heads = backbone.config.decoder_layers, backbone.config.decoder_attention_heads
    return [(layer, h) for layer in range(n_layers // 2, n_layers) for h in range(n_heads)]


class CrossAttentionProbe:
    """Cross-attention of the last query position over encoder frames, averaged over heads.

    Hooks the ``q_proj`` of the cross-attention in the heads' layers (after any adapter
    hook on it, so the query is the adapted one) and reads the keys from the KV cache.
    """

    def __init__(self, backbone, heads: Sequence[tuple[int, int]]) -> None:
        self.backbone = backbone
        self.heads = list(heads)
        self.layers = sorted({layer for layer, _ in self.heads})
        self.queries: dict[int, torch.Tensor] = {}
        self.head_dim = backbone.config.d_model // backbone.config.decoder_attention_heads

    @contextlib.contextmanager
    def attached(self):
        handles = []
        for layer in self.layers:
            q_proj = self.backbone.decoder.layers[layer].encoder_attn.q_proj

            def grab(module, inputs, out, layer=layer):
                self.queries[layer] = out[:, -1].detach()

            handles.append(q_proj.register_forward_hook(grab))
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def peak_frames(self, cache, frames: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) encoder frame with the highest head-averaged attention for the last query;
        ``frames``: (B, T) real frames (padding gets no attention, as in the decoder)."""
        total = None
        for layer in self.layers:
            q = self.queries[layer]  # (B, D)
            keys = cache.cross_attention_cache.layers[layer].keys  # (B, H, T, dh)
            b, n_heads = keys.shape[0], keys.shape[1]
            q = q.view(b, n_heads, self.head_dim).to(keys.dtype)
            want = [h for lay, h in self.heads if lay == layer]
            scores = torch.einsum("bhd,bhtd->bht", q[:, want], keys[:, want]) * self.head_dim**-0.5
            if frames is not None:
                scores = scores.masked_fill(~frames[:, None, :], float("-inf"))
            probs = scores.float().softmax(-1).sum(1)  # (B, T)
            total = probs if total is None else total + probs
        return total.argmax(-1)


def ragged_greedy(backbone, enc: torch.Tensor, prompts: Sequence[Sequence[int]], caps: Sequence[int],
                  options: DecodingOptions, route: routing.Route, *, blank_ok: Sequence[bool],
                  guards: Sequence[int | None], content_frames: Sequence[int],
                  enc_frames: torch.Tensor | None = None) -> list[RowSearch]:
    """Greedy search over prompts of different lengths (left-padded and masked).

    enc: (B, T, D); prompts[i]: row i's prompt ids; caps: (B,) token caps; blank_ok[i]:
    the first token may be blank/end of text (a row continuing a forced prefix);
    guards[i]: AlignAtt guard in encoder frames (None: no guard); content_frames[i]:
    encoder frames holding row i's audio (the rest of the window is padding);
    enc_frames: (B, T) which encoder frames are real when rows of different windows share
    the batch (None: all rows have T frames).
    """
    dev = enc.device
    eot = backbone.tokens.eot
    n, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((n, width), eot, dtype=torch.long)
    att = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        att[i, width - len(p) :] = 1
    pos = (att.cumsum(1) - 1).clamp(min=0)
    ids, att, pos = ids.to(dev), att.to(dev), pos.to(dev)
    vocab = backbone.proj_out.out_features
    strict = LogitMask(backbone, options, vocab, dev)
    lenient = LogitMask(backbone, dataclasses.replace(options, suppress_blank=False), vocab, dev)
    first = torch.stack([(lenient if ok else strict).first for ok in blank_ok])
    space_start = _space_tokens(backbone)
    out = [RowSearch(SearchResult([], 0.0), []) for _ in range(n)]
    alive = list(range(n))
    guarded = any(g is not None for g in guards)
    probe = CrossAttentionProbe(backbone, alignment_heads(backbone)) if guarded else None
    cache = backbone.new_cache()
    cross = CrossMask(backbone, enc_frames)
    with probe.attached() if probe else contextlib.nullcontext(), cross.attached(), routing.use(route):
        logits = backbone.decoder_logits(ids, enc, cache, attention_mask=att, position_ids=pos)
        step = 0
        while True:
            masked = logits + first if step == 0 else strict(logits, step)
            logp = torch.log_softmax(masked, dim=-1)
            best_lp, best = logp.max(dim=-1)
            peaks = probe.peak_frames(cache, cross.frames).tolist() if probe else [0] * len(alive)
            keep: list[int] = []
            for j, (tok, lp) in enumerate(zip(best.tolist(), best_lp.tolist())):
                row = alive[j]
                r = out[row]
                if tok == eot:
                    r.result.sum_logprob += lp
                    continue
                g = guards[row]
                if g is not None and peaks[j] >= content_frames[row] - g:
                    r.guarded, r.next_starts_word = True, tok in space_start
                    continue
                r.result.sum_logprob += lp
                r.result.tokens.append(tok)
                if g is not None:
                    r.frames.append(int(peaks[j]))
                if loop := _loop_len(r.result.tokens, options):
                    r.result.tokens, r.result.looped = cut_loop(r.result.tokens, loop), True
                    r.frames = r.frames[: len(r.result.tokens)]
                elif len(r.result.tokens) >= caps[row]:
                    r.result.truncated = True
                else:
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(alive):
                idx = torch.tensor(keep, device=dev)
                cache.batch_select_indices(idx)
                cross.select(idx)
                enc, att, pos = enc[idx], att[idx], pos[idx]
                alive = [alive[j] for j in keep]
                best = best[idx]
                route = route.select(keep)
            step += 1
            att = torch.cat([att, att.new_ones(len(alive), 1)], dim=1)
            pos = pos[:, -1:] + 1
            with routing.use(route):
                logits = backbone.decoder_logits(best[:, None], enc, cache, attention_mask=att, position_ids=pos)
    return out


def _space_tokens(backbone) -> frozenset[int]:
    """Ids of tokens that begin with a space (byte-level BPE's ``Ġ``): they start a word."""
    cached = getattr(backbone, "_space_start_ids", None)
    if cached is None:
        vocab = backbone.tokenizer.get_vocab()
        cached = frozenset(i for t, i in vocab.items() if t.startswith("Ġ"))
        object.__setattr__(backbone, "_space_start_ids", cached)
    return cached


def decode_steps(backbone, rows: Sequence[StepRow]) -> list[StepOutput]:
    """Answer every row's step (see the module doc for how rows share the batch)."""
    if not rows:
        return []
    enc, codes = _encode_rows(backbone, rows)
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        key = _search_key(r.options)
        groups.setdefault((key, i if r.options.method != "greedy" else -1), []).append(i)
    outs: list[StepOutput | None] = [None] * len(rows)
    for idx in groups.values():
        for i, o in zip(idx, _decode_group(backbone, [rows[i] for i in idx], [enc[i] for i in idx],
                                           [codes[i] for i in idx])):
            outs[i] = o
    return outs


def _search_key(o: DecodingOptions) -> DecodingOptions:
    """The options that matter once the encoder has run: rows whose options differ only in
    their encoder window (e.g. an adapter trained at 6 s next to the base's 10 s) decode together."""
    return dataclasses.replace(o, context="dynamic", min_window_s=1.0, window_step_s=1.0)


@torch.no_grad()
def _encode_rows(backbone, rows: Sequence[StepRow]) -> tuple[list[torch.Tensor], list[str]]:
    """Each row's encoder states (T_i, D) at its own window, and its language code.

    Rows sharing a window are encoded together (the encoder has no padding mask, so a row
    is never padded beyond its own window); rows without a language are identified.
    """
    from asr_adapt.decoding.whisper_decode import detect_language

    enc: list[torch.Tensor | None] = [None] * len(rows)
    codes: list[str | None] = [r.lang or r.options.language for r in rows]
    by_window: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        o = r.options
        by_window.setdefault((window_samples(len(r.step.audio), o.context, o.min_window_s, o.window_step_s),), []
                             ).append(i)
    for (window,), idx in by_window.items():
        route = routing.Route([rows[i].key for i in idx])
        feats = backbone.logmel([rows[i].step.audio for i in idx], window)
        with routing.use(route):
            states = backbone.encode(feats.to(backbone.device))
        unknown = [k for k, i in enumerate(idx) if codes[i] is None]
        if unknown:
            for k, c in zip(unknown, detect_language(backbone, states[unknown], route.select(unknown))):
                codes[idx[k]] = c
        for k, i in enumerate(idx):
            enc[i] = states[k]
    return enc, codes


def _pad_states(states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, T_max, D) encoder states and a (B, T_max) mask of real frames (None: all one length)."""
    width = max(x.shape[0] for x in states)
    if all(x.shape[0] == width for x in states):
        return torch.stack(list(states)), None
    out = states[0].new_zeros(len(states), width, states[0].shape[-1])
    mask = torch.zeros(len(states), width, dtype=torch.bool, device=out.device)
    for i, x in enumerate(states):
        out[i, : x.shape[0]] = x
        mask[i, : x.shape[0]] = True
    return out, mask


class CrossMask:
    """Masks the padded encoder frames in every decoder layer's cross-attention.

    Hugging Face's Whisper decoder passes no encoder mask to its layers, so a pre-hook on
    each layer supplies one: (B, 1, 1, T) additive, 0 on real frames and -inf on padding.
    The masked frames get exactly zero weight, so a row decodes as it would alone.
    """

    def __init__(self, backbone, frames: torch.Tensor | None) -> None:
        self.backbone = backbone
        self.frames = frames  # (B, T) bool, or None: nothing to mask
        self._additive = None if frames is None else self._make(frames)

    @staticmethod
    def _make(frames: torch.Tensor) -> torch.Tensor:
        return torch.where(frames, 0.0, float("-inf"))[:, None, None, :]

    def select(self, idx: torch.Tensor) -> None:
        if self.frames is not None:
            self.frames = self.frames[idx]
            self._additive = self._make(self.frames)

    @contextlib.contextmanager
    def attached(self):
        if self.frames is None:
            yield self
            return

        def inject(module, args, kwargs):
            kwargs["encoder_attention_mask"] = self._additive.to(args[0].dtype if args else torch.float32)
            return args, kwargs

        handles = [layer.register_forward_pre_hook(inject, with_kwargs=True) for layer in self.backbone.decoder.layers]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()


@torch.no_grad()
def _decode_group(backbone, rows: Sequence[StepRow], states: Sequence[torch.Tensor],
                  codes: Sequence[str]) -> list[StepOutput]:
    """Decode rows that share their search options (encoder states already computed)."""
    options = rows[0].options
    tok = backbone.tokenizer
    route = routing.Route([r.key for r in rows])
    prev_id = tok.convert_tokens_to_ids("<|startofprev|>")
    max_pos = backbone.config.max_target_positions
    prompts, forced, caps = [], [], []
    for r, code in zip(rows, codes):
        ids: list[int] = []
        if r.step.prompt:
            # Whisper's convention: the previous text takes at most half the context.
            prev = tok.encode(" " + join_units(r.step.prompt, code), add_special_tokens=False)
            ids = [prev_id, *prev[-(max_pos // 2 - 1) :]]
        ids += backbone.prompt(code, options.task)
        f = tok.encode(" " + join_units(r.step.prefix, code), add_special_tokens=False) if r.step.prefix else []
        prompts.append(ids + f)
        forced.append(f)
        caps.append(options.token_cap(len(r.step.audio) / SAMPLE_RATE, len(ids) + len(f), max_pos))
    if options.method == "greedy":
        enc, frames = _pad_states(states)
        found = ragged_greedy(
            backbone, enc, prompts, caps, options, route, blank_ok=[bool(f) for f in forced],
            guards=[r.step.guard_frames for r in rows],
            content_frames=[-(-len(r.step.audio) // SAMPLES_PER_FRAME) for r in rows], enc_frames=frames)
    else:  # beam: one row at a time (prompts of one length), no guard
        opts = dataclasses.replace(options, suppress_blank=False) if forced[0] else options
        res = run_search(backbone, states[0][None], torch.tensor([prompts[0]], device=states[0].device), [caps[0]],
                         opts, route)[0]
        found = [RowSearch(res, [])]
    return [_output(tok, r.step, code, f, s) for r, code, f, s in zip(rows, codes, forced, found)]


def _output(tok, step: WhisperStep, code: str, forced: list[int], s: RowSearch) -> StepOutput:
    """Units of the row's hypothesis (starting with its prefix) and each new unit's frame."""
    tokens = s.result.tokens
    text = tok.decode(forced + tokens, skip_special_tokens=True)
    words = split_units(text, code)
    new_text = text
    if list(words[: len(step.prefix)]) != list(step.prefix):
        # Re-tokenising the committed words can merge them differently from how they were
        # decoded; the forced prefix is what the hypothesis starts with by construction.
        new_text = tok.decode(tokens, skip_special_tokens=True)
        words = list(step.prefix) + split_units(new_text, code)
        forced = []
    frames = _unit_frames(tok, forced, tokens, s.frames, len(words) - len(step.prefix), code) if s.frames else None
    complete = not s.guarded or s.next_starts_word
    return StepOutput(words, frames, complete)


def _unit_frames(tok, forced: list[int], tokens: list[int], frames: list[int], n_new: int, code: str) -> list[int]:
    """Frame of the token that completes each of the last ``n_new`` units of the text."""
    # Text length after each token; a unit is complete once the text reaches its end.
    lengths = [len(tok.decode(forced + tokens[: k + 1], skip_special_tokens=True)) for k in range(len(tokens))]
    text = tok.decode(forced + tokens, skip_special_tokens=True)
    ends = _unit_ends(text, code)[-n_new:] if n_new else []
    out = []
    for e in ends:
        k = next((k for k, n in enumerate(lengths) if n >= e), len(tokens) - 1)
        out.append(frames[max(0, k)])
    return out


def _unit_ends(text: str, code: str) -> list[int]:
    """Character offset just after each unit of ``text`` (as :func:`split_units` splits it)."""
    ends, pos = [], 0
    for unit in split_units(text, code):
        pos = text.index(unit, pos) + len(unit)
        ends.append(pos)
    return ends


def whisper_decode_fn(backbone, lang: str | None, options: DecodingOptions, route=None):
    """``decode(audio (N,), prompt words, prefix words) -> words`` for one stream (no guard);
    the step of :func:`decode_steps` for a batch of one."""
    key = route[0] if route is not None else None

    def decode(audio: np.ndarray, prompt: tuple[str, ...], prefix: tuple[str, ...]) -> list[str]:
        step = WhisperStep(np.asarray(audio, dtype=np.float32), tuple(prompt), tuple(prefix), 0, len(audio), False)
        return decode_steps(backbone, [StepRow(step, lang, key, options)])[0].words

    return decode
