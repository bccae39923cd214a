"""One loader for every entry point: a backbone by family and name (or directory), with an
optional adapter bundle, on a device.

`asr-adapt decode`, `pseudo-label`, `stream-eval`, `serve`, the Python API and training (its
backbone, the noisy-student teacher) all load through :func:`load_model`, so a name resolves,
a bundle is checked against its base (fingerprint) and attached the same way everywhere.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from asr_adapt.models.base import Backbone, backbone_class

log = logging.getLogger(__name__)


def load_model(family: str, model: str | os.PathLike, adapters: str | os.PathLike | None = None, *,
               device: str = "cpu", **backbone_kwargs: Any) -> Backbone:
    """Backbone ``family`` from ``model`` (a name the family resolves, e.g. ``whisper-base`` or
    ``transducer-synth-compact``, or a directory) with the bundle ``adapters`` attached, in eval mode.

    ``backbone_kwargs`` go to the family's ``from_pretrained`` (e.g. Whisper's
    ``train_min_window_s``). A bundle trained on another base is refused (its fingerprint).
    """
    backbone = backbone_class(family).from_pretrained(str(model), device=device, **backbone_kwargs)
    if adapters:
        from asr_adapt.adapters import load_adapters, model_fingerprint

        locales = load_adapters(backbone, str(adapters), model_fingerprint(backbone), backbone.injection_points())
        log.info("loaded adapters for %s from %s", ", ".join(locales), adapters)
    return backbone.eval()
