"""``export_model``: base + one locale's adapter -> a directory a stock runtime loads."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from asr_adapt.export.formats import FORMATS
from asr_adapt.export.hf import adapter_types, merge_for_export, write_provenance
from asr_adapt.fileio import atomic_directory

log = logging.getLogger(__name__)


def export_model(
    model: str,
    adapters: str | os.PathLike,
    locale: str,
    out_dir: str | os.PathLike,
    fmt: str = "hf",
    quantization: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Export ``model`` with ``locale``'s adapter (language fallback) folded in.

    Args:
        model: base model name (``whisper-base``) or Hugging Face directory the adapters were
            trained on (checked by fingerprint).
        adapters: adapter directory (:func:`asr_adapt.adapters.save_adapters`).
        locale: BCP-47 tag; ``el-GR`` uses the ``el`` adapter when there is no ``el-GR`` one.
        fmt: a registered format (:data:`asr_adapt.export.formats.FORMATS`).
        quantization: weight type (format-specific; default: the format's default).
        overwrite: replace an existing ``out_dir``; otherwise that is an error.

    The result is built in a temporary sibling directory and renamed into place, so a failed
    export never leaves a half-written model (nor removes a previous one).
    Raises :class:`~asr_adapt.adapters.AdapterError` when the adapter type cannot be folded
    into the format (the message lists what each format supports).
    """
    spec = FORMATS.get(fmt)
    q = spec.check_quantization(quantization)
    # Checked before loading anything: a wrong adapter type should fail in milliseconds.
    spec.check_adapters(adapter_types(adapters))
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    merged = merge_for_export(model, adapters, locale)
    with atomic_directory(out) as tmp:
        spec.exporter(merged, tmp, q)
        write_provenance(merged, tmp, adapters, fmt, q)
    log.info("exported %s + %s adapter %r (for %s) -> %s [%s, %s]", model, adapters, merged.adapter_key, locale, out, fmt, q)
    return out

