"""The model side of the server: one base model, every locale's adapters, batched decode.

:meth:`ASREngine.decode` hands a batch of requests to the decode service
(:class:`~asr_adapt.decoding.service.Transcriber`), which routes each row to its locale's
adapter by the one fallback rule, identifies the language of rows without a locale (on the
base model, or adapter-aware) and decodes every row in shared batches: the server's
transcripts are `asr-adapt decode`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from asr_adapt.decoding.service import LanguageId, Transcriber
from asr_adapt.langtags import language_of

log = logging.getLogger(__name__)


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
    """The server's decode service: a :class:`Transcriber` (base model, every locale's adapters
    unmerged, routing and identification policies) behind ``decode(requests)``."""

    def __init__(self, transcriber: Transcriber) -> None:
        self.transcriber = transcriber
        self.backbone = transcriber.backbone
        self.locales = transcriber.locales

    @classmethod
    def from_config(cls, config) -> ASREngine:
        import torch

        if config.threads:
            torch.set_num_threads(config.threads)
        lid = LanguageId(candidates=config.lid_candidates, adapter_aware=config.adapter_aware_lid)
        return cls(Transcriber.load(config.family, config.model, config.adapters, compute_type=config.compute_type,
                                    options={"beam_size": config.beam_size, "context": config.context},
                                    siblings=config.siblings, lid=lid))

    def check_locale(self, locale: str) -> None:
        """Raise ``ValueError`` (the reason) when the model cannot transcribe ``locale``."""
        self.transcriber.check_locale(locale)

    def adapter_for(self, locale: str | None) -> str | None:
        """Adapter key serving ``locale`` (the one fallback rule); ``None``: the base model."""
        return self.transcriber.adapter_for(locale)

    def decode(self, requests: Sequence[Request]) -> list[Result]:
        """Decode a batch of requests together (rows of different locales share it)."""
        t0 = time.monotonic()
        decoded = self.transcriber.transcribe([r.wav for r in requests], [r.locale for r in requests])
        ms = 1000.0 * (time.monotonic() - t0)
        return [
            Result(id=r.id, text=d.hyp.text, locale=r.locale or d.locale, language=language_of(d.locale),
                   adapter=d.adapter, detected=d.detected, duration_s=round(len(r.wav) / 16000, 3),
                   batch_size=len(requests), decode_ms=round(ms, 1))
            for r, d in zip(requests, decoded)
        ]
