"""Whisper batch transcription: long-audio pieces, language id, search, loop fallback.

:func:`transcribe` is the Whisper entry of :data:`asr_adapt.decoding.decoders.DECODERS`:

1. clips longer than ``options.chunk_s`` are cut into pieces at quiet points
   (:func:`~asr_adapt.models.whisper_features.split_long_audio`); every piece is a batch
   row, routed to its clip's adapter (``route.select(clip of each piece)``);
2. the encoder runs on the pieces at the window the options ask for, in passes of at most
   ``max(len(wavs), PIECES_PER_PASS)`` pieces (memory does not grow with clip length);
3. rows without a language get one decoder step after ``<|startoftranscript|>``
   restricted to language tokens (a clip's pieces all take its first piece's language);
4. the registered search runs with a per-piece token cap derived from its duration;
5. pieces that looped are decoded again with the fallback options, and texts are joined.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from asr_adapt import routing
from asr_adapt.decoding.options import DecodingOptions
from asr_adapt.decoding.repetition import compression_ratio
from asr_adapt.decoding.whisper_search import SearchResult, decoder_logits, run_search
from asr_adapt.langtags import is_no_space
from asr_adapt.models.whisper_features import SAMPLE_RATE, split_long_audio
from asr_adapt.registry import Registry

# Scripts written without spaces between words: their pieces are joined without one.
# Fewest pieces of long clips decoded together in one model pass (a batch of N clips uses max(N, this)).
PIECES_PER_PASS = 8

FALLBACKS: Registry = Registry("decode fallback")
"""name -> ``fn(options) -> DecodingOptions | None`` (the options for a second pass)."""
FALLBACKS.register("none", lambda options: None)
FALLBACKS.register(
    "full_context",
    # The stock 30 s window is where the zero-shot base model does not loop; when already
    # there, there is nothing better to fall back to.
    lambda options: None if options.context == "full" else dataclasses.replace(options, context="full", fallback="none"),
)


@torch.no_grad()
def language_logprobs(backbone, enc: torch.Tensor, route: routing.Route) -> tuple[list[str], torch.Tensor]:
    """Whisper language codes and their log-probabilities (B, L) after ``<|startoftranscript|>``.

    enc: (B, T, D) encoder states; ``route``: the rows' adapters (``Route.base``: none).
    """
    lang_ids = backbone.tokens.lang_to_id
    codes = list(lang_ids)
    ids = torch.tensor([lang_ids[c] for c in codes], device=enc.device)
    sot = torch.full((enc.shape[0], 1), backbone.tokens.sot, dtype=torch.long, device=enc.device)
    logits = decoder_logits(backbone, sot, enc, backbone.new_cache(), route)  # (B, V)
    return codes, logits[:, ids].float().log_softmax(-1)


def detect_language(backbone, enc: torch.Tensor, route: routing.Route | None = None) -> list[str]:
    """Most likely Whisper language code per row. enc: (B, T, D) encoder states."""
    codes, logp = language_logprobs(backbone, enc, route if route is not None else routing.Route.base(enc.shape[0]))
    return [codes[i] for i in logp.argmax(dim=-1).tolist()]


def transcribe(backbone, wavs: Sequence[np.ndarray], langs: Sequence[str | None], options: DecodingOptions,
               route: routing.Route):
    """Decode clips of any length. wavs[i]: (N_i,) float32 16 kHz; langs[i]: locale or None;
    ``route``: each clip's adapter key (``None``: the base model).

    Returns one :class:`~asr_adapt.models.whisper.WhisperHypothesis` per clip; its
    ``lang`` is the given locale, else the detected Whisper language code.
    """
    from asr_adapt.models.whisper import WhisperHypothesis

    if not len(wavs) == len(langs) == len(route):
        raise ValueError(f"{len(wavs)} clips, {len(langs)} locales and {len(route)} routes: one of each per clip")
    if not wavs:
        return []
    pieces: list[tuple[int, int, int]] = []  # (clip row, start sample, end sample)
    for row, wav in enumerate(wavs):
        for start, end in split_long_audio(wav, options.chunk_s, options.chunk_search_s):
            pieces.append((row, start, end))
    rows = [r for r, _, _ in pieces]
    given = [langs[r] or options.language for r in rows]
    # Pieces go through the model in passes of at most max(batch, PIECES_PER_PASS) rows, so
    # memory is bounded by the batch size, not by the length of the longest clip.
    per_pass = max(len(wavs), PIECES_PER_PASS)
    results: list = []
    piece_langs: list = []
    first: dict[int, str] = {}  # a clip's pieces all take its first piece's language
    for g0 in range(0, len(pieces), per_pass):
        idx = range(g0, min(g0 + per_pass, len(pieces)))
        res, got = _decode_pieces(
            backbone, [wavs[pieces[i][0]][pieces[i][1] : pieces[i][2]] for i in idx],
            [given[i] or first.get(rows[i]) for i in idx], [rows[i] for i in idx], options,
            route.select([rows[i] for i in idx]),
        )
        for i, lang in zip(idx, got):
            first.setdefault(rows[i], lang)
        results += res
        piece_langs += got
    hyps = []
    for row in range(len(wavs)):
        idx = [i for i, r in enumerate(rows) if r == row]
        lang = langs[row] or options.language or piece_langs[idx[0]]
        sep = "" if is_no_space(lang) else " "
        texts = [backbone.tokenizer.decode(results[i][0].tokens, skip_special_tokens=True).strip() for i in idx]
        text = sep.join(t for t in texts if t)
        tokens = [t for i in idx for t in results[i][0].tokens]
        n_tok = sum(len(results[i][0].tokens) + 1 for i in idx)
        hyps.append(
            WhisperHypothesis(
                text=text,
                tokens=tokens,
                avg_logprob=sum(results[i][0].sum_logprob for i in idx) / n_tok,
                lang=lang,
                compression_ratio=compression_ratio(text),
                segments=[(pieces[i][1] / SAMPLE_RATE, pieces[i][2] / SAMPLE_RATE, t) for i, t in zip(idx, texts)],
                fallback=any(results[i][1] for i in idx),
                looped=any(results[i][0].looped for i in idx),
                truncated=any(results[i][0].truncated for i in idx),
            )
        )
    return hyps


def _decode_pieces(backbone, audio, given, rows, options: DecodingOptions, route: routing.Route):
    """Decode ≤30 s pieces, ``route``: each piece's adapter.

    Returns ([(SearchResult, used_fallback)] per piece, [language code or locale] per piece).
    """
    feats = backbone.features(audio, options.context, options.min_window_s, options.window_step_s)
    with routing.use(route):
        enc = backbone.encode(feats.to(backbone.device))
    langs = list(given)
    todo = [i for i, g in enumerate(given) if g is None]
    if todo:
        detected = detect_language(backbone, enc[todo], route.select(todo))
        first: dict[int, str] = {}
        for i, code in zip(todo, detected):
            first.setdefault(rows[i], code)  # a clip's pieces share its first piece's language
        for i in todo:
            langs[i] = first[rows[i]]
    prompts_list = [backbone.prompt(lang, options.task) for lang in langs]
    prompts = torch.tensor(prompts_list, dtype=torch.long, device=enc.device)
    max_pos = backbone.config.max_target_positions
    caps = [options.token_cap(len(a) / SAMPLE_RATE, len(p), max_pos) for a, p in zip(audio, prompts_list)]
    found = run_search(backbone, enc, prompts, caps, options, route)
    out: list[tuple[SearchResult, bool]] = [(r, False) for r in found]
    fb = FALLBACKS.get(options.fallback)(options)
    if fb is None:
        return out, langs
    redo = [i for i, r in enumerate(found) if _is_loop(backbone, r, options)]
    if redo:
        again, _ = _decode_pieces(backbone, [audio[i] for i in redo], [langs[i] for i in redo], [rows[i] for i in redo],
                                  fb, route.select(redo))
        for i, (r, _) in zip(redo, again):
            out[i] = (r, True)
    return out, langs


def _is_loop(backbone, r: SearchResult, options: DecodingOptions) -> bool:
    if r.looped:
        return True
    if options.compression_ratio_threshold is None:
        return False
    text = backbone.tokenizer.decode(r.tokens, skip_special_tokens=True)
    return compression_ratio(text) > options.compression_ratio_threshold
