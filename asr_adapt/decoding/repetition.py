"""Loop detection: repeated n-grams at the tail of a hypothesis, and text compressibility.

A looping decoder emits the same word or phrase until the token cap (DESIGN.md §4). The
in-loop guard catches it as it happens, which also saves the wasted decoder steps; the
compression ratio (Whisper's own criterion) catches looser loops after the fact.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence


def tail_loop(tokens: Sequence[int], max_ngram: int, max_repeats: int, min_span: int) -> int:
    """Length ``n`` of an n-gram repeated at the tail of ``tokens``, or 0 if none.

    An n-gram counts as a loop when it occurs ``r`` times back to back at the end with
    ``r >= max(max_repeats, ceil(min_span / n))``: short n-grams need more repeats, so a
    genuine "no, no, no" is left alone while "la la la la la la la la la la" is stopped.
    """
    length = len(tokens)
    for n in range(1, max_ngram + 1):
        need = max(max_repeats, math.ceil(min_span / n))
        if n * need > length:
            break
        tail = tokens[length - n :]
        if all(tokens[length - (k + 1) * n : length - k * n] == tail for k in range(1, need)):
            return n
    return 0


def cut_loop(tokens: list[int], n: int) -> list[int]:
    """Drop trailing back-to-back copies of the last ``n``-gram, keeping one."""
    tail = tokens[len(tokens) - n :]
    end = len(tokens)
    while end - 2 * n >= 0 and tokens[end - 2 * n : end - n] == tail:
        end -= n
    return tokens[:end]


def compression_ratio(text: str) -> float:
    """UTF-8 bytes / zlib-compressed bytes; ~1-2 for speech, >2.4 for repetitive text."""
    data = text.encode("utf-8")
    if not data:
        return 0.0
    return len(data) / len(zlib.compress(data))
