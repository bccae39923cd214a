"""Load a backbone with an adapter bundle for inference (teacher, decode, serve)."""

from __future__ import annotations

from asr_adapt.adapters import load_adapters, model_fingerprint
from asr_adapt.training.module import load_backbone


def load_teacher(family: str, model: str, adapters: str | None = None):
    """Backbone ``family`` from ``model`` with the bundle ``adapters`` attached (if any), in eval mode."""
    backbone = load_backbone(family, model)
    if adapters:
        load_adapters(backbone, adapters, model_fingerprint(backbone), backbone.injection_points())
    return backbone.eval()
