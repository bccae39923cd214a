"""CTranslate2 (faster-whisper) export: the merged Hugging Face directory, converted by
CTranslate2's own converter so the result is exactly what its runtime expects, with
asr-adapt's token suppression in its ``config.json`` (:mod:`asr_adapt.export.decoding`)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from asr_adapt.export.decoding import apply_to_ct2_config, export_decoding
from asr_adapt.export.hf import MergedModel, save_hf

# faster-whisper reads the tokenizer and, for the mel count, the feature extractor config
# from the model directory; the converter itself copies neither.
COPY_FILES = ("tokenizer.json", "preprocessor_config.json")
QUANTIZATIONS = ("float32", "float16", "bfloat16", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16")


def save_ct2(merged: MergedModel, out_dir: Path, quantization: str = "float32") -> None:
    """Write the merged model as a CTranslate2 Whisper directory into ``out_dir``."""
    try:
        from ctranslate2.converters import TransformersConverter
    except ImportError as e:  # optional dependency
        raise RuntimeError("the ct2 format needs the ctranslate2 package (pip install ctranslate2)") from e
    hf_dir = Path(tempfile.mkdtemp(prefix=".hf-", suffix=".tmp", dir=out_dir.parent))
    try:
        # Always float32 here: the converter quantises from full precision.
        save_hf(merged, hf_dir, "float32")
        copy = [f for f in COPY_FILES if (hf_dir / f).is_file()]
        TransformersConverter(str(hf_dir), copy_files=copy, load_as_float16=False).convert(
            str(out_dir), quantization=quantization, force=True  # out_dir is our own empty temp dir
        )
        apply_to_ct2_config(out_dir, export_decoding(merged.backbone))
    finally:
        shutil.rmtree(hf_dir, ignore_errors=True)
