"""Frozen decoding options for the Whisper decoder; make variants with ``dataclasses.replace``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from asr_adapt.models.whisper_features import CONTEXTS, DEFAULT_MIN_WINDOW_S, DEFAULT_WINDOW_STEP_S


@dataclass(frozen=True)
class DecodingOptions:
    """How :func:`asr_adapt.decoding.whisper_decode.transcribe` decodes a batch.

    Repetition handling (DESIGN.md §4: a trimmed context can make the zero-shot base loop):
    while decoding, a row stops as soon as its tail repeats an n-gram too often (the
    repeats are cut to one copy); after decoding, pieces that looped or whose text
    compresses better than ``compression_ratio_threshold`` are decoded again with
    ``fallback`` (default: the stock 30 s context, where the base model is trained), and
    the second result is kept. Fallback is deterministic (no temperature sampling), so
    decoding a set twice gives the same text.
    """

    beam_size: int = field(default=1, metadata={"help": "1: greedy search; >1: beam search with this many beams"})
    search: str | None = field(
        default=None, metadata={"help": "search method name (registry); None: 'greedy' if beam_size == 1 else 'beam'"}
    )
    language: str | None = field(
        default=None,
        metadata={"help": "language/locale for rows that carry none (e.g. 'de', 'el-GR'); None: detect per clip"},
    )
    task: str = field(default="transcribe", metadata={"help": "'transcribe' or 'translate' (to English)"})
    max_new_tokens: int = field(default=224, metadata={"help": "hard cap on generated tokens per ≤30 s piece"})
    tokens_per_second: float = field(
        default=20.0, metadata={"help": "token cap per piece = tokens_per_second * duration + token_margin (anti-runaway)"}
    )
    token_margin: int = field(default=16, metadata={"help": "added to the duration-derived token cap"})
    length_penalty: float | None = field(
        default=None, metadata={"help": "beam ranking: None = mean log-prob; a = GNMT ((5+len)/6)^a penalty"}
    )
    repetition_guard: bool = field(default=True, metadata={"help": "stop a row whose tail repeats an n-gram"})
    repetition_max_ngram: int = field(default=16, metadata={"help": "longest n-gram (tokens) checked for repeats"})
    repetition_max_repeats: int = field(
        default=4, metadata={"help": "an n-gram repeated this many times in a row at the tail is a loop"}
    )
    repetition_min_span: int = field(
        default=10, metadata={"help": "...and the repeats must span at least this many tokens (so 'no no no' is fine)"}
    )
    compression_ratio_threshold: float | None = field(
        default=2.4, metadata={"help": "text gzip ratio above this counts as a loop (Whisper's value); None: off"}
    )
    fallback: str = field(
        default="full_context",
        metadata={"help": "what to do with looping pieces: 'full_context' (re-decode at 30 s) or 'none'"},
    )
    context: str = field(
        default="dynamic", metadata={"help": "'dynamic': encoder on the real length; 'full': stock 30 s padding"}
    )
    min_window_s: float = field(
        default=DEFAULT_MIN_WINDOW_S, metadata={"help": "dynamic context: shortest window (s) a batch is padded to"}
    )
    window_step_s: float = field(default=DEFAULT_WINDOW_STEP_S, metadata={"help": "dynamic context: window granularity (s)"})
    chunk_s: float = field(default=30.0, metadata={"help": "longer audio is cut into pieces of at most this many seconds"})
    chunk_search_s: float = field(
        default=5.0, metadata={"help": "cuts go at the quietest 20 ms in the last this-many seconds before the limit"}
    )
    suppress_blank: bool = field(default=True, metadata={"help": "forbid blank / end-of-text as the first token"})
    suppress_tokens: tuple[int, ...] | None = field(
        default=None, metadata={"help": "ids never emitted; None: the model's list (non-speech symbols); (): none"}
    )
    suppress_special: bool = field(
        default=True, metadata={"help": "forbid control tokens (language, task, timestamps) in the text"}
    )

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.task not in ("transcribe", "translate"):
            raise ValueError(f"task must be 'transcribe' or 'translate', got {self.task!r}")
        if self.context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {self.context!r}")
        if self.max_new_tokens < 1 or self.tokens_per_second <= 0 or self.token_margin < 0:
            raise ValueError("max_new_tokens >= 1, tokens_per_second > 0 and token_margin >= 0 are required")
        if not 0 < self.min_window_s <= 30 or self.window_step_s <= 0:
            raise ValueError("min_window_s must be in (0, 30] and window_step_s > 0")
        if not 1 <= self.chunk_s <= 30 or not 0 < self.chunk_search_s < self.chunk_s:
            raise ValueError("chunk_s must be in [1, 30] and 0 < chunk_search_s < chunk_s")
        if self.repetition_max_ngram < 1 or self.repetition_max_repeats < 2:
            raise ValueError("repetition_max_ngram >= 1 and repetition_max_repeats >= 2 are required")
        if self.suppress_tokens is not None and not isinstance(self.suppress_tokens, tuple):
            object.__setattr__(self, "suppress_tokens", tuple(self.suppress_tokens))
        if self.language in ("auto", ""):
            object.__setattr__(self, "language", None)

    @property
    def method(self) -> str:
        """Registered search method to run."""
        return self.search or ("greedy" if self.beam_size == 1 else "beam")

    def token_cap(self, duration_s: float, prompt_len: int, max_positions: int) -> int:
        """Most tokens a piece of ``duration_s`` may produce."""
        cap = math.ceil(self.tokens_per_second * duration_s) + self.token_margin
        return max(1, min(self.max_new_tokens, cap, max_positions - prompt_len))
