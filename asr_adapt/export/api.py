"""``export_model``: base + one locale's adapter -> a directory a stock runtime loads."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from asr_adapt.export.formats import FORMATS
from asr_adapt.export.hf import adapter_types, merge_for_export, write_provenance

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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        spec.exporter(merged, tmp, q)
        write_provenance(merged, tmp, adapters, fmt, q)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model dir is shared like any other
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s + %s adapter %r (for %s) -> %s [%s, %s]", model, adapters, merged.adapter_key, locale, out, fmt, q)
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first, then deleted."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
