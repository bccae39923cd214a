"""The model side of the server: one base model, every locale's adapters, batched decode.

:meth:`ASREngine.decode` turns a batch of requests into ONE ``transcribe_batch`` call inside
``routing.use(adapter per row)``, so requests for different locales share the batch. A
request without a locale first goes through language identification on the base model
(adapters off: which adapter to use is what is being decided), and is then routed to the
adapter of the detected language.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from asr_adapt import routing
from asr_adapt.adapters import adapter_locales, attached_sets, resolve_locale
from asr_adapt.langtags import language_of
from asr_adapt.registry import Registry

log = logging.getLogger(__name__)

LANGUAGE_ID: Registry[Callable] = Registry("language identification")
"""backbone family -> ``fn(backbone, wavs, options) -> [language code]`` (base model, no adapters)."""


@LANGUAGE_ID.decorator("whisper")
def whisper_language_id(backbone, wavs: Sequence[np.ndarray], options) -> list[str]:
    """Whisper's own language id (the decoder's first step after start-of-transcript) on each
    clip's first 30 s, at the window the options decode with."""
    from asr_adapt.decoding.whisper_decode import detect_language
    from asr_adapt.models.whisper_features import SAMPLE_RATE

    heads = [w[: 30 * SAMPLE_RATE] for w in wavs]
    feats = backbone.features(heads, options.context, options.min_window_s, options.window_step_s)
    return detect_language(backbone, backbone.encode(feats.to(backbone.device)))


@dataclass
class Request:
    """One transcription request. wav: (N,) float32 16 kHz; locale: ``None`` = detect."""

    id: str
    wav: np.ndarray
    locale: str | None = None


@dataclass
class Result:
    """What the server answers for one request."""

    id: str
    text: str
    locale: str | None
    language: str | None
    adapter: str | None
    detected: bool
    duration_s: float
    batch_size: int
    decode_ms: float = 0.0
    extra: dict = field(default_factory=dict)


class ASREngine:
    """A backbone with an adapter bundle attached (unmerged: every locale stays available).

    Args:
        backbone: e.g. a :class:`~asr_adapt.models.whisper.WhisperBackbone`, adapters attached.
        options: the backbone's decoding options (language is set per row).
        language_locales: detected language -> adapter locale where several locales share it.
    """

    def __init__(self, backbone, options, language_locales: dict[str, str] | None = None) -> None:
        self.backbone = backbone.eval()
        self.options = options
        self.language_locales = dict(language_locales or {})
        self.locales = adapter_locales(backbone) if attached_sets(backbone) else []

    @classmethod
    def from_config(cls, config) -> ASREngine:
        import torch

        from asr_adapt.loading import load_model

        if config.threads:
            torch.set_num_threads(config.threads)
        backbone = load_model(config.family, config.model, config.adapters)
        options = backbone.decoding_options(beam_size=config.beam_size, context=config.context)
        return cls(backbone, options, config.language_locales)

    # ------------------------------------------------------------------ request checks
    def check_locale(self, locale: str) -> None:
        """Raise ``ValueError`` (the reason) when the model cannot transcribe ``locale``."""
        lang_token = getattr(self.backbone, "lang_token", None)
        if lang_token is not None:
            lang_token(locale)  # raises ValueError naming the languages it knows

    def adapter_for(self, locale: str | None) -> str | None:
        """Adapter key serving ``locale`` (or a detected language); ``None``: the base model."""
        if locale is None or not self.locales:
            return None
        key = resolve_locale(locale, self.locales)
        if key is not None:
            return key
        # A detected language ("el") is coarser than the adapter locales ("el-GR").
        lang = language_of(locale)
        if self.language_locales.get(lang) in self.locales:
            return self.language_locales[lang]
        matches = sorted(loc for loc in self.locales if language_of(loc) == lang)
        return matches[0] if matches else None

    # ------------------------------------------------------------------ batch decode
    def decode(self, requests: Sequence[Request]) -> list[Result]:
        """Decode a batch in one ``transcribe_batch`` call with per-row adapter routing."""
        import torch

        t0 = time.monotonic()
        wavs = [r.wav for r in requests]
        langs: list[str | None] = [r.locale for r in requests]
        todo = [i for i, lang in enumerate(langs) if lang is None]
        with torch.no_grad():
            if todo:
                detect = LANGUAGE_ID.get(self.backbone.family)
                for i, code in zip(todo, detect(self.backbone, [wavs[i] for i in todo], self.options)):
                    langs[i] = code
            keys = [self.adapter_for(lang) for lang in langs]
            with routing.use(keys):
                hyps = self.backbone.transcribe_batch(wavs, langs, self.options)
        ms = 1000.0 * (time.monotonic() - t0)
        return [
            Result(id=r.id, text=h.text, locale=r.locale or lang, language=language_of(lang), adapter=key,
                   detected=r.locale is None, duration_s=round(len(r.wav) / 16000, 3), batch_size=len(requests),
                   decode_ms=round(ms, 1))
            for r, h, lang, key in zip(requests, hyps, langs, keys)
        ]
