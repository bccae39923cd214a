"""Each backbone family's decoding: its options dataclass, its batch decode and its language id.

Backbones know nothing about decoding (``asr_adapt.models`` imports nothing from here);
everything that decodes looks the family up in :data:`DECODERS`::

    opts = decoding_options(backbone, beam_size=4)
    hyps = transcribe_batch(backbone, wavs, langs, opts, route=Route(["el-GR", None]))

``route`` is required: which adapter serves each row is decided by the caller (normally
:class:`asr_adapt.decoding.service.Transcriber`, the one place that resolves locales to
adapters), and a decode cannot silently fall back to the base model by forgetting it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from asr_adapt import routing
from asr_adapt.decoding import transducer_search, whisper_decode
from asr_adapt.decoding.options import DecodingOptions
from asr_adapt.models.base import Hypothesis
from asr_adapt.registry import Registry


@dataclass(frozen=True)
class Decoder:
    """One family's decoding.

    options: the frozen decoding-options dataclass (``options()`` gives the defaults).
    transcribe: ``fn(backbone, wavs, langs, options, route) -> [Hypothesis]``.
    language_logprobs: ``fn(backbone, wavs, options, route) -> (codes, (B, L) log-probs)``
        over the family's language codes, or ``None`` when the family cannot identify
        languages (its rows need a locale).
    """

    options: type
    transcribe: Callable[..., list[Hypothesis]]
    language_logprobs: Callable | None = None


DECODERS: Registry[Decoder] = Registry("decoder")


def decoder_for(backbone) -> Decoder:
    """The :class:`Decoder` of ``backbone``'s family (unknown families list the known ones)."""
    return DECODERS.get(backbone.family)


def decoding_options(backbone, **overrides):
    """``backbone``'s family decoding options with ``overrides`` applied (validated)."""
    return decoder_for(backbone).options(**overrides)


def transcribe_batch(backbone, wavs: Sequence[np.ndarray], langs: Sequence[str | None], options=None, *,
                     route: routing.Route | Sequence[str | None] | None) -> list[Hypothesis]:
    """Decode a batch. wavs[i]: (N_i,) float32 16 kHz; langs[i]: the row's locale (``None``:
    identify it, where the family can); ``route``: the row's adapter key, ``None`` for the
    base model (``route=None``: no adapters on any row, said explicitly)."""
    dec = decoder_for(backbone)
    if route is None:
        route = routing.Route.base(len(wavs))
    elif not isinstance(route, routing.Route):
        route = routing.Route(route)
    return dec.transcribe(backbone, wavs, langs, options if options is not None else dec.options(), route)


def _whisper_language_logprobs(backbone, wavs: Sequence[np.ndarray], options: DecodingOptions, route: routing.Route):
    """Whisper's language id on each clip's first 30 s, at the window ``options`` decode with."""
    from asr_adapt.models.whisper_features import SAMPLE_RATE

    heads = [w[: 30 * SAMPLE_RATE] for w in wavs]
    feats = backbone.features(heads, options.context, options.min_window_s, options.window_step_s)
    with routing.use(route):
        enc = backbone.encode(feats.to(backbone.device))
    return whisper_decode.language_logprobs(backbone, enc, route)


DECODERS.register("whisper", Decoder(DecodingOptions, whisper_decode.transcribe, _whisper_language_logprobs))
DECODERS.register("transducer", Decoder(transducer_search.TransducerDecodingOptions, transducer_search.transcribe))
