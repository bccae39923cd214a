"""The one decode service behind every entry point.

`asr-adapt decode`, `pseudo-label`, `stream-eval`'s offline reference, `serve` and the Python
API all decode through a :class:`Transcriber`, which owns every decoding policy in one place:

* loading: :func:`asr_adapt.loading.load_model` (one loader), plus the bundle's decoding hints;
* language identification for rows without a locale (:class:`LanguageId`: zero-shot,
  restricted to candidate locales, or adapter-aware);
* locale -> adapter: :func:`asr_adapt.adapters.locales.resolve_locale`, the one fallback rule
  (exact tag, then language, then a configured sibling, else the base model; warned once);
* per-row options: rows an adapter serves decode with the settings the bundle was trained
  at (e.g. Whisper's encoder window), every other row with the base's options, so it
  decodes exactly as the unadapted base does;
* batching: rows sorted by duration into batches, each batch split by options, and the
  family's decoder (:data:`~asr_adapt.decoding.decoders.DECODERS`: long-audio pieces, search,
  loop fallback) called with the batch's :class:`~asr_adapt.routing.Route`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from asr_adapt.decoding.decoders import decoder_for, transcribe_batch
from asr_adapt.langtags import language_of
from asr_adapt.models.base import Hypothesis
from asr_adapt.routing import Route

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class LanguageId:
    """How rows without a locale get one.

    candidates: locales (or languages) the audio may be in; ``()``: any language the base
        knows (zero-shot). Identification picks among the candidates' languages only, and
        a row is then served as the candidate locale of that language.
    adapter_aware: rescore the ``top_k`` candidates by decoding the first ``probe_s``
        seconds with each candidate's own adapter (and its language; the base model for a
        candidate without one). Zero-shot identification is weakest on exactly the tail
        languages adapters exist for; the adapters are not. A candidate's score is
        ``log P_base(language) + decode_weight * mean token log-prob of its decode``: the
        decode alone favours adapted candidates on any audio (adapters raise the likelihood
        of the speech they were trained on), the language prior keeps the base's strong
        languages. ``decode_weight`` was chosen on a dev set (bench/lid_accuracy.py,
        bench/RESULTS.md).
    """

    candidates: tuple[str, ...] = ()
    adapter_aware: bool = False
    top_k: int = 3
    probe_s: float = 10.0
    decode_weight: float = 8.0  # chosen on dev (bench/RESULTS.md, "Language identification")

    @classmethod
    def parse(cls, spec: str | None, adapter_aware: bool = False) -> tuple[str | None, LanguageId]:
        """``"auto"`` / ``"auto:el-GR,uk-UA"`` / a locale -> (fixed locale or None, LanguageId)."""
        if spec in (None, "", "auto"):
            return None, cls(adapter_aware=adapter_aware)
        if spec.startswith("auto:"):
            cands = tuple(c.strip() for c in spec[5:].split(",") if c.strip())
            if not cands:
                raise ValueError("'auto:' needs at least one candidate locale, e.g. auto:el-GR,uk-UA")
            return None, cls(candidates=cands, adapter_aware=adapter_aware)
        return spec, cls(adapter_aware=adapter_aware)


def restrict(codes: list[str], logp: torch.Tensor,
             candidates: Sequence[str]) -> tuple[list[str], torch.Tensor, dict[str, str]]:
    """Language log-probs (B, L) over ``codes`` narrowed to the candidates' languages (all of
    them without candidates), those codes, and candidate language -> the locale a row
    identified as that language is served as."""
    by_lang: dict[str, str] = {}
    for c in candidates:
        by_lang.setdefault(language_of(c), c)
    if not by_lang:
        return codes, logp, by_lang
    unknown = sorted(lang for lang in by_lang if lang not in codes)
    if unknown:
        raise ValueError(f"candidate languages {unknown} are not languages this model identifies")
    keep = [i for i, c in enumerate(codes) if c in by_lang]
    return [codes[i] for i in keep], logp[:, keep], by_lang


def pick_candidate(logp: torch.Tensor, top: Sequence[int], scores: Sequence[float], decode_weight: float) -> int:
    """Index (into the language list) of the best candidate: ``logp[c] + decode_weight * score``.

    logp: (L,) base language log-probs of one clip; top: its candidate indices; scores: the
    mean token log-prob of each candidate's adapted decode.
    """
    return max(zip(top, scores), key=lambda cs: float(logp[cs[0]]) + decode_weight * cs[1])[0]


@dataclass
class Decoded:
    """One row's result: the hypothesis, the locale it was decoded as, the adapter that served it."""

    hyp: Hypothesis
    locale: str | None
    adapter: str | None
    detected: bool = False
    extra: dict = field(default_factory=dict)


class Transcriber:
    """A backbone (adapters attached) and every policy that decides how a row is decoded.

    Args:
        backbone: the loaded backbone (see :meth:`load`).
        options: decoding-option overrides for every row (e.g. ``beam_size``).
        hints: decoding settings the attached bundle was trained at; applied on top of
            ``options`` for the rows an adapter serves.
        siblings: locale or language -> adapter locale allowed to serve it (``el-CY: el-GR``).
        lid: how rows without a locale are identified.
    """

    def __init__(self, backbone, options: Mapping[str, Any] | None = None, *, hints: Mapping[str, Any] | None = None,
                 siblings: Mapping[str, str] | None = None, lid: LanguageId | None = None) -> None:
        from asr_adapt.adapters import adapter_locales, attached_sets

        self.backbone = backbone.eval()
        self.decoder = decoder_for(backbone)
        self.base_options = self.decoder.options(**dict(options or {}))
        known = {f.name for f in dataclasses.fields(self.base_options)}
        hints = {k: v for k, v in (hints or {}).items() if k in known}
        self.adapter_options = dataclasses.replace(self.base_options, **hints) if hints else self.base_options
        self.siblings = dict(siblings or {})
        self.lid = lid or LanguageId()
        self.locales: list[str] = adapter_locales(backbone) if attached_sets(backbone) else []

    @classmethod
    def load(cls, family: str, model: str | os.PathLike, adapters: str | os.PathLike | None = None, *,
             device: str = "cpu", compute_type: str = "float32", options: Mapping[str, Any] | None = None,
             siblings: Mapping[str, str] | None = None, lid: LanguageId | None = None,
             **backbone_kwargs: Any) -> Transcriber:
        """Load ``model`` of ``family`` with the bundle ``adapters`` (and its decoding hints)."""
        from asr_adapt.adapters import decode_hints
        from asr_adapt.loading import load_model

        backbone = load_model(family, model, adapters, device=device, **backbone_kwargs)
        backbone.set_compute_type(compute_type)  # after the adapters: converting replaces the layers they check
        hints = decode_hints(adapters) if adapters else {}
        if hints:
            log.info("rows served by the adapters decode with %s (as trained)", hints)
        return cls(backbone, options, hints=hints, siblings=siblings, lid=lid)

    # ------------------------------------------------------------------ policies
    def adapter_for(self, locale: str | None) -> str | None:
        """Adapter key serving ``locale`` (the one fallback rule); ``None``: the base model."""
        from asr_adapt.adapters.locales import resolve_locale

        if locale is None or not self.locales:
            return None
        return resolve_locale(locale, self.locales, self.siblings)

    def options_for(self, key: str | None):
        """The options a row routed to ``key`` decodes with."""
        return self.adapter_options if key is not None else self.base_options

    @property
    def can_identify(self) -> bool:
        return self.decoder.language_logprobs is not None

    def check_locale(self, locale: str) -> None:
        """Raise ``ValueError`` (the reason) when the model cannot transcribe ``locale``."""
        lang_token = getattr(self.backbone, "lang_token", None)
        if lang_token is not None:
            lang_token(locale)  # raises ValueError naming the languages it knows

    @torch.no_grad()
    def language_scores(self, wavs: Sequence[np.ndarray]) -> tuple[list[str], torch.Tensor, dict[str, str]]:
        """The base model's language log-probs over the candidates' languages: see :func:`restrict`."""
        if not self.can_identify:
            raise ValueError(f"the {self.backbone.family} backbone cannot identify languages: give each row a locale")
        codes, logp = self.decoder.language_logprobs(self.backbone, wavs, self.base_options, Route.base(len(wavs)))
        return restrict(codes, logp, self.lid.candidates)

    def identify(self, wavs: Sequence[np.ndarray]) -> list[str]:
        """A locale (a candidate) or a language code (zero-shot) per clip; see :class:`LanguageId`."""
        if not self.can_identify:
            raise ValueError(f"the {self.backbone.family} backbone cannot identify languages: give each row a locale")
        if not wavs:
            return []
        codes, logp, by_lang = self.language_scores(wavs)
        if self.lid.adapter_aware and self.locales:
            picked = self._adapter_aware(wavs, codes, logp, by_lang)
        else:
            picked = [codes[i] for i in logp.argmax(dim=-1).tolist()]
        return [by_lang.get(c, c) for c in picked]

    def candidate_scores(self, wavs, codes: list[str], logp: torch.Tensor,
                         by_lang: dict[str, str]) -> tuple[list[list[int]], list[list[float]]]:
        """Each clip's ``top_k`` languages (indices into ``codes``, by ``logp``) and the mean token
        log-prob of decoding its first ``probe_s`` seconds with each one's adapter and language
        (the base model for a language without an adapter). One batch per candidate rank."""
        k = min(self.lid.top_k, len(codes))
        top = logp.topk(k, dim=-1).indices.tolist()
        probes = [w[: int(self.lid.probe_s * SAMPLE_RATE)] for w in wavs]
        scores = [[float("-inf")] * k for _ in wavs]
        for r in range(k):
            langs = [by_lang.get(codes[top[i][r]], codes[top[i][r]]) for i in range(len(wavs))]
            keys = [self.adapter_for(lang) for lang in langs]
            for i, h in enumerate(self._decode_batch(probes, langs, keys)):
                scores[i][r] = h.avg_logprob if h.avg_logprob is not None else float("-inf")
        return top, scores

    def _adapter_aware(self, wavs, codes: list[str], logp: torch.Tensor, by_lang: dict[str, str]) -> list[str]:
        top, scores = self.candidate_scores(wavs, codes, logp, by_lang)
        return [codes[pick_candidate(logp[i], top[i], scores[i], self.lid.decode_weight)] for i in range(len(wavs))]

    # ------------------------------------------------------------------ decoding
    def _decode_batch(self, wavs: Sequence[np.ndarray], langs: Sequence[str | None],
                      keys: Sequence[str | None]) -> list[Hypothesis]:
        """One batch: rows split by the options their route decodes with, each part in one call."""
        out: list[Hypothesis | None] = [None] * len(wavs)
        variants: list = []  # the distinct options of this batch (at most two: adapter rows, base rows)
        for k in keys:
            if self.options_for(k) not in variants:
                variants.append(self.options_for(k))
        for opts in variants:
            rows = [i for i, k in enumerate(keys) if self.options_for(k) == opts]
            hyps = transcribe_batch(self.backbone, [wavs[i] for i in rows], [langs[i] for i in rows], opts,
                                    route=Route([keys[i] for i in rows]))
            for i, h in zip(rows, hyps):
                out[i] = h
        return out  # type: ignore[return-value]

    def transcribe(self, wavs: Sequence[np.ndarray], locales: Sequence[str | None] | None = None, *,
                   batch_size: int | None = None) -> list[Decoded]:
        """Decode (N_i,) float32 16 kHz clips; ``locales[i]``: the row's locale, ``None`` to identify it.

        Rows are sorted by duration into batches of ``batch_size`` (default: all rows in one);
        results come back in input order.
        """
        locales = list(locales) if locales is not None else [None] * len(wavs)
        if len(locales) != len(wavs):
            raise ValueError(f"{len(wavs)} clips but {len(locales)} locales")
        detected = [loc is None for loc in locales]
        todo = [i for i, d in enumerate(detected) if d]
        if todo and self.can_identify:
            for i, loc in zip(todo, self.identify([wavs[i] for i in todo])):
                locales[i] = loc
        keys = [self.adapter_for(loc) for loc in locales]
        order = sorted(range(len(wavs)), key=lambda i: -len(wavs[i]))
        size = batch_size or max(1, len(wavs))
        out: list[Decoded | None] = [None] * len(wavs)
        for b0 in range(0, len(order), size):
            rows = order[b0 : b0 + size]
            hyps = self._decode_batch([wavs[i] for i in rows], [locales[i] for i in rows], [keys[i] for i in rows])
            for i, h in zip(rows, hyps):
                out[i] = Decoded(h, locales[i] or h.lang, keys[i], detected[i])
        return out  # type: ignore[return-value]
