"""Per-locale token n-gram language models for shallow fusion in transducer beam search.

A transducer's prediction network is an LM only of the transcripts it was trained on, and a
stateless one looks back a few tokens; spelling that the audio does not decide (French
``croi``/``croix``, ``lonsur``/``long sûr``) is where an external LM over the same output
tokens helps. The model here is the classic one for that job: an interpolated Witten-Bell
n-gram over the transducer tokenizer's ids, one per locale, trained in seconds from Kaldi
``text`` files (icefall and NeMo fuse n-gram LMs the same way: ``score = log p_am +
lm_weight * log p_lm + lm_bonus`` per emitted token, plus ``lm_weight * log p_lm(</s>)`` at
the end).

Ids: the LM predicts the tokenizer's ids 1..V-1 plus the end of the sentence, which takes id
0 (the transducer's blank, never an LM token). In a history id 0 is the sentence boundary
(``<s>``), so the first token's context is ``(0, ..., 0)``.

Witten-Bell (interpolated), for a context ``h`` seen ``c(h)`` times followed by ``N1+(h)``
distinct tokens::

    p(w | h) = (c(h, w) + N1+(h) * p(w | h')) / (c(h) + N1+(h)),    p(w | ()) over a uniform base

where ``h'`` drops the oldest token; a context never seen backs off to ``h'`` entirely.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from asr_adapt.fileio import atomic_write

END = 0  # end of sentence when predicted, sentence start (<s>) in a history
FORMAT = "asr-adapt-token-ngram/1"
# Bytes of distributions kept per LM (V float64 each: ~1 KB at 140 characters, 40 KB at 5,000
# pieces). Beam search asks for the same few contexts over and over; a long-running server
# would otherwise grow without bound.
CACHE_BYTES = 32 * 2**20
log = logging.getLogger(__name__)


class TokenNgramLM:
    """An order-``n`` Witten-Bell LM over ``vocab_size`` token ids (id 0 = ``</s>`` / ``<s>``).

    ``counts[k]`` maps each context of ``k`` tokens (a tuple) to ``(ids (M,), counts (M,))``,
    the tokens seen after it.
    """

    def __init__(self, order: int, vocab_size: int, counts: list[dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]]],
                 symbols: Sequence[str] | None = None, locale: str | None = None) -> None:
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        if len(counts) != order:
            raise ValueError(f"an order-{order} LM needs counts for {order} context lengths, got {len(counts)}")
        self.order, self.vocab_size, self.counts = order, vocab_size, counts
        self.symbols = list(symbols) if symbols is not None else None
        self.locale = locale
        self._cache: dict[tuple[int, ...], np.ndarray] = {}
        self._cache_max = max(256, CACHE_BYTES // (8 * vocab_size))

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, sequences: Iterable[Sequence[int]], order: int, vocab_size: int,
              symbols: Sequence[str] | None = None, locale: str | None = None) -> TokenNgramLM:
        """Count every ``order``-gram of ``sequences`` (token ids in 1..V-1, one list per sentence)."""
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        raw: list[dict[tuple[int, ...], dict[int, int]]] = [defaultdict(lambda: defaultdict(int)) for _ in range(order)]
        n_sent = 0
        for seq in sequences:
            seq = list(seq)
            if any(not 0 < t < vocab_size for t in seq):
                raise ValueError(f"token ids must be in 1..{vocab_size - 1} (0 is the sentence boundary)")
            padded = [END] * (order - 1) + seq + [END]
            for i in range(order - 1, len(padded)):
                w = padded[i]
                for k in range(order):  # context of k tokens
                    raw[k][tuple(padded[i - k : i])][w] += 1
            n_sent += 1
        if not n_sent:
            raise ValueError("no sentences to train on")
        counts = [{ctx: (np.fromiter(d.keys(), dtype=np.int64, count=len(d)),
                         np.fromiter(d.values(), dtype=np.float64, count=len(d)))
                   for ctx, d in level.items()} for level in raw]
        return cls(order, vocab_size, counts, symbols, locale)

    # ------------------------------------------------------------------ scoring
    def logprobs(self, history: Sequence[int]) -> np.ndarray:
        """(V,) float64 log p(w | history) for every id w (w = 0: end of sentence).

        ``history``: the tokens so far (without sentence-start padding; any length).
        """
        ctx = tuple(history[-(self.order - 1):]) if self.order > 1 else ()
        ctx = (END,) * (self.order - 1 - len(ctx)) + ctx
        hit = self._cache.get(ctx)
        if hit is None:
            if len(self._cache) >= self._cache_max:
                self._cache.clear()
            hit = self._cache[ctx] = np.log(self._probs(ctx))
            hit.setflags(write=False)  # shared by every caller
        return hit

    def _probs(self, ctx: tuple[int, ...]) -> np.ndarray:
        p = np.full(self.vocab_size, 1.0 / self.vocab_size)
        for k in range(self.order):
            seen = self.counts[k].get(ctx[len(ctx) - k :] if k else ())
            if seen is None:  # a longer context than one never seen is never seen either
                break
            ids, c = seen
            total, types = c.sum(), len(ids)
            p = p * types
            np.add.at(p, ids, c)
            p /= total + types
        return p

    def score(self, tokens: Sequence[int]) -> float:
        """log p(tokens, </s>): the whole sentence."""
        tokens = list(tokens)
        return float(sum(self.logprobs(tokens[:i])[t] for i, t in enumerate(tokens + [END])))

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        levels = []
        for level in self.counts:
            levels.append({" ".join(map(str, ctx)): [ids.tolist(), c.astype(np.int64).tolist()]
                           for ctx, (ids, c) in level.items()})
        return {"format": FORMAT, "order": self.order, "vocab_size": self.vocab_size, "locale": self.locale,
                "symbols": self.symbols, "counts": levels}

    @classmethod
    def from_dict(cls, d: dict) -> TokenNgramLM:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a token n-gram LM (format {d.get('format')!r}, expected {FORMAT!r})")
        counts = [{tuple(int(x) for x in key.split()): (np.asarray(ids, dtype=np.int64), np.asarray(c, dtype=np.float64))
                   for key, (ids, c) in level.items()} for level in d["counts"]]
        return cls(d["order"], d["vocab_size"], counts, d.get("symbols"), d.get("locale"))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write(path, json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")))


def lm_path(directory: str | os.PathLike, locale: str) -> Path:
    """Where a locale's LM lives in an LM directory: ``DIR/LOCALE.json``."""
    return Path(directory) / f"{locale}.json"


@functools.lru_cache(maxsize=16)
def _load(path: str, stamp: tuple[int, int], pieces: tuple[str, ...]) -> TokenNgramLM:
    """Read and check one LM file; ``stamp`` (mtime in ns, size) reads a rewritten file again,
    and the vocabulary check runs once per file and tokenizer, not once per batch."""
    lm = TokenNgramLM.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    if lm.vocab_size != len(pieces) or (lm.symbols is not None and tuple(lm.symbols) != pieces):
        raise ValueError(f"{path}: counted over another tokenizer's vocabulary than this model's "
                         f"({lm.vocab_size} tokens against {len(pieces)}, or other tokens); "
                         "rebuild it with `asr-adapt lm train --model MODEL`")
    return lm


_reported: set[tuple[str, str | None]] = set()


def load_locale_lms(directory: str | os.PathLike, locales: Sequence[str | None],
                    pieces: Sequence[str]) -> list[TokenNgramLM | None]:
    """The LM of each row's locale from ``directory`` (``None`` where it has none, or no locale;
    said once per locale in the log, so an ``--lm`` that fuses nothing does not go unnoticed).

    ``pieces``: the model's token inventory (``Tokenizer.pieces()``); an LM counted over another
    tokenizer's ids is an error (its ids would mean other tokens), not a silent mismatch.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no LM directory (build one with `asr-adapt lm train`)")
    pieces = tuple(pieces)
    by_locale: dict[str | None, TokenNgramLM | None] = {}
    for loc in dict.fromkeys(locales):  # each locale of the batch once
        p = lm_path(directory, loc) if loc else None
        if p is None or not p.is_file():
            if (str(directory), loc) not in _reported:
                _reported.add((str(directory), loc))
                log.warning("no LM for %s in %s: those rows decode without one",
                            f"locale {loc}" if loc else "rows without a locale", directory)
            by_locale[loc] = None
            continue
        st = p.stat()
        by_locale[loc] = _load(str(p), (st.st_mtime_ns, st.st_size), pieces)
    return [by_locale[loc] for loc in locales]
