"""The decoding settings an export carries, so stock runtimes decode like asr-adapt by default.

asr-adapt decodes Whisper greedily with one token mask (:class:`~asr_adapt.decoding.whisper_search.LogitMask`):
the base's non-speech list plus every control token after ``<|endoftext|>`` at every step,
and blank / end-of-text / the base's begin list at the first step. The stock runtimes' own
defaults differ, and a user gives them little more than a language:

* transformers' ASR pipeline decodes with 5 beams unless the model's ``generation_config.json``
  sets ``num_beams`` (on a LoRA el-GR export it then agreed with asr-adapt on 1 of 14 clips);
* CTranslate2 suppresses the ids in its ``config.json`` (``suppress_ids`` at every step,
  ``suppress_ids_begin`` at the first when ``suppress_blank``), which its converter copies from
  the generation config.

So the export writes asr-adapt's settings into both files (:func:`apply_to_generation_config`,
:func:`apply_to_ct2_config`). One deliberate gap: timestamp tokens stay allowed. asr-adapt
decodes without timestamps (``<|notimestamps|>`` in the prompt), where a Whisper model does not
emit them; suppressing them in the runtimes' configs would break every user who asks those
runtimes for timestamps (their timestamp rules and the suppression would forbid every token).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from asr_adapt.decoding.options import DecodingOptions


@dataclass(frozen=True)
class ExportDecoding:
    """What a stock runtime needs to decode an export as asr-adapt does (greedy search implied)."""

    suppress_tokens: tuple[int, ...] = field(metadata={"help": "ids never emitted (asr-adapt's list, timestamps excepted)"})
    begin_suppress_tokens: tuple[int, ...] = field(metadata={"help": "ids also forbidden as the first generated token"})
    max_new_tokens: int = field(metadata={"help": "token cap per 30 s window (asr-adapt's default cap)"})

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


def suppressed_ids(backbone, options: DecodingOptions) -> list[int]:
    """Ids asr-adapt never emits under ``options``: what its logit mask removes at every step."""
    vocab = backbone.proj_out.out_features
    listed = backbone.suppress_tokens if options.suppress_tokens is None else options.suppress_tokens
    ids = {i for i in listed if 0 <= i < vocab}  # the mask ignores ids outside the vocabulary
    if options.suppress_special:
        ids.update(range(backbone.tokens.eot + 1, vocab))
    return sorted(ids)


def begin_suppressed_ids(backbone, options: DecodingOptions) -> list[int]:
    """Ids asr-adapt also forbids as the first generated token (blank, end-of-text, the base's list)."""
    if not options.suppress_blank:
        return []
    blank = backbone.tokenizer(" ", add_special_tokens=False).input_ids
    return sorted({*blank, backbone.tokens.eot, *backbone.begin_suppress_tokens})


def export_decoding(backbone, options: DecodingOptions | None = None) -> ExportDecoding:
    """asr-adapt's decoding settings for ``backbone`` (default options unless given), as an export carries them."""
    options = options or DecodingOptions()
    first_timestamp = backbone.tokens.no_timestamps + 1
    return ExportDecoding(
        suppress_tokens=tuple(i for i in suppressed_ids(backbone, options) if i < first_timestamp),
        begin_suppress_tokens=tuple(begin_suppressed_ids(backbone, options)),
        max_new_tokens=options.max_new_tokens,
    )


def apply_to_generation_config(gen, dec: ExportDecoding) -> None:
    """Make ``gen`` (a Whisper ``GenerationConfig``) decode like asr-adapt when the caller sets nothing.

    ``num_beams`` and ``do_sample`` are written even though they equal transformers' own
    defaults: the ASR pipeline only leaves its 5-beam default out when the model sets them.
    """
    gen.num_beams = 1
    gen.do_sample = False
    gen.suppress_tokens = list(dec.suppress_tokens)
    gen.begin_suppress_tokens = list(dec.begin_suppress_tokens)
    gen.return_timestamps = False
    # The pipeline adds max_new_tokens=256 when neither cap is set; asr-adapt caps at 224, as
    # openai/whisper does. max_length would compete with it (transformers warns on both).
    gen.max_new_tokens = dec.max_new_tokens
    gen.max_length = None


def apply_to_ct2_config(model_dir: Path, dec: ExportDecoding) -> None:
    """Write the suppression lists into a converted CTranslate2 Whisper's ``config.json``.

    Its converter copies them from the generation config today; they are set here so the
    export does not depend on that. faster-whisper's ``transcribe`` replaces ``suppress_ids``
    by its own non-speech list unless given ``suppress_tokens``, but it does use
    ``suppress_ids_begin`` (``suppress_blank=True``); the engine's ``generate`` uses both.
    """
    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["suppress_ids"] = list(dec.suppress_tokens)
    config["suppress_ids_begin"] = list(dec.begin_suppress_tokens)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
