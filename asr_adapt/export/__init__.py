"""Export: a base model with one locale's adapter folded in, for stock runtimes.

Formats are registered (:data:`FORMATS`) with the adapter types they can carry:

* ``hf``  - a Hugging Face Whisper directory (``WhisperForConditionalGeneration``,
  ``transformers.pipeline``);
* ``ct2`` - a CTranslate2 directory (``faster_whisper.WhisperModel``), converted by
  CTranslate2's own converter with its quantisation.

Both carry asr-adapt's decoding settings (greedy search, its token suppression and cap) in
the runtimes' own config files (:mod:`asr_adapt.export.decoding`), so a runtime called with
little more than a language decodes as asr-adapt does; ``--check`` measures that
(:mod:`asr_adapt.export.parity`).

Typical use::

    export_model("whisper-base", "exp/adapters", "el-GR", "exp/export/el-GR-ct2", fmt="ct2", quantization="int8")
"""

from asr_adapt.export.api import export_model
from asr_adapt.export.ct2 import QUANTIZATIONS as CT2_QUANTIZATIONS
from asr_adapt.export.ct2 import save_ct2
from asr_adapt.export.formats import FORMATS, ExportFormat, register_format, support_table
from asr_adapt.export.hf import DTYPES, MergedModel, clean_model, merge_for_export, merged_state_dict, save_hf

# Only linear updates of existing weights fold into a stock Whisper; LDA adds layers.
_FOLDABLE = frozenset({"lora", "s2lora"})
register_format(ExportFormat(
    name="hf", description="Hugging Face Whisper directory (transformers)", supported_adapters=_FOLDABLE,
    quantizations=tuple(DTYPES), default_quantization="float32", exporter=save_hf,
))
register_format(ExportFormat(
    name="ct2", description="CTranslate2 Whisper directory (faster-whisper)", supported_adapters=_FOLDABLE,
    quantizations=CT2_QUANTIZATIONS, default_quantization="float32", exporter=save_ct2,
))

__all__ = [
    "FORMATS", "ExportFormat", "MergedModel", "clean_model", "export_model", "merge_for_export",
    "merged_state_dict", "register_format", "save_ct2", "save_hf", "support_table",
]
