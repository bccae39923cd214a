"""Fold one locale's adapter into the base Whisper and save a plain Hugging Face directory.

The result is what ``WhisperForConditionalGeneration.from_pretrained`` and
``transformers.pipeline("automatic-speech-recognition", ...)`` load with no asr-adapt code:
the merged weights in a freshly built model (no adapter parameters, no hooks), plus the
base directory's tokenizer and feature extractor, and its generation config with asr-adapt's
decoding settings written in (:mod:`asr_adapt.export.decoding`), so a pipeline given only a
language searches and suppresses tokens as asr-adapt does.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from asr_adapt.adapters import (
    AdapterError,
    is_adapter_param,
    load_adapters,
    merge_locale,
    model_fingerprint,
    read_meta,
    resolve_locale,
)
from asr_adapt.export.decoding import apply_to_generation_config, export_decoding

log = logging.getLogger(__name__)

# Non-weight files of a Whisper directory that stock loaders read; copied verbatim.
SIDE_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
    "added_tokens.json", "normalizer.json", "preprocessor_config.json",
)
DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass
class MergedModel:
    """A base Whisper with one locale's adapters folded into its weights.

    backbone: the :class:`~asr_adapt.models.whisper.WhisperBackbone` (adapters attached,
        merged); ``backbone.hf`` runs the merged model.
    base_dir: the base model's Hugging Face directory (side files are copied from it).
    locale: the locale asked for; adapter_key: the adapter that serves it (language fallback).
    """

    backbone: object
    base_dir: Path
    locale: str
    adapter_key: str
    adapter_types: list[str]
    base_fingerprint: str


def adapter_types(adapters: str | Path) -> list[str]:
    """Adapter types stored in an adapter directory (read from its config, nothing loaded)."""
    return sorted(read_meta(adapters)["sets"])


def merge_for_export(model: str, adapters: str | Path, locale: str) -> MergedModel:
    """Load ``model`` (name or HF dir), attach ``locale``'s adapter from ``adapters`` and merge it."""
    from asr_adapt.models.resolver import resolve_model
    from asr_adapt.models.whisper import WhisperBackbone

    meta = read_meta(adapters)
    available = sorted({loc for e in meta["sets"].values() for loc in e["locales"]})
    key = resolve_locale(locale, available)
    if key is None:
        raise AdapterError(f"{adapters} has no adapter for {locale!r} nor its language; it has {available}")
    base_dir = Path(resolve_model(model))
    backbone = WhisperBackbone.from_pretrained(str(base_dir))
    fingerprint = model_fingerprint(backbone)
    load_adapters(backbone, adapters, fingerprint, backbone.injection_points(), locales=[key])
    merge_locale(backbone, key)
    return MergedModel(backbone, base_dir, locale, key, sorted(meta["sets"]), fingerprint)


def merged_state_dict(backbone) -> dict[str, torch.Tensor]:
    """The HF model's state dict with every adapter tensor left out (found by registered prefix)."""
    return {k: v for k, v in backbone.hf.state_dict().items() if not is_adapter_param(k)}


def clean_model(backbone, dtype: torch.dtype = torch.float32):
    """A new ``WhisperForConditionalGeneration`` holding the merged weights and nothing else.

    Built from the config rather than copied, so no adapter module, forward hook or
    bookkeeping attribute can travel into the saved model.
    """
    from transformers import WhisperForConditionalGeneration

    state = merged_state_dict(backbone)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(backbone.hf.config)
    # assign=True takes the tensors as they are (no random init); clone so the export never
    # aliases the live backbone. Tied keys are absent or shared; tie_weights() restores them.
    missing, unexpected = model.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=False, assign=True)
    model.tie_weights()
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise RuntimeError(f"merged weights do not fit a stock Whisper: missing {missing}, unexpected {unexpected}")
    return model.to(dtype).eval()


def whisper_generation_config(base_dir: Path, tokenizer, config):
    """The base directory's generation config, with Whisper fields filled in where absent.

    ``generate(language=..., task=...)`` needs ``lang_to_id``, ``task_to_id`` and
    ``no_timestamps_token_id``; a directory saved from a bare ``WhisperConfig`` lacks them,
    so they are derived from the tokenizer (looked up by token text, never hard-coded).
    """
    from transformers import GenerationConfig

    from asr_adapt.models.whisper import WhisperTokens

    try:
        gen = GenerationConfig.from_pretrained(str(base_dir))
    except (OSError, ValueError):
        gen = GenerationConfig.from_model_config(config)
    tokens = WhisperTokens.from_tokenizer(tokenizer)
    defaults = {
        "lang_to_id": {f"<|{code}|>": i for code, i in tokens.lang_to_id.items()},
        "task_to_id": dict(tokens.task_to_id),
        "no_timestamps_token_id": tokens.no_timestamps,
        "is_multilingual": len(tokens.lang_to_id) > 1,
        "decoder_start_token_id": tokens.sot,
        "max_initial_timestamp_index": 50,
    }
    for name, value in defaults.items():
        if getattr(gen, name, None) in (None, {}, []):
            setattr(gen, name, value)
    # A config marked as derived from the model config is rebuilt from it on load, which
    # would drop the Whisper fields above.
    gen._from_model_config = False
    return gen


def save_hf(merged: MergedModel, out_dir: Path, quantization: str = "float32") -> None:
    """Write the merged model as a Hugging Face Whisper directory into ``out_dir`` (existing, empty)."""
    from safetensors import safe_open
    from transformers import WhisperFeatureExtractor

    bb = merged.backbone
    model = clean_model(bb, DTYPES[quantization])
    model.generation_config = whisper_generation_config(merged.base_dir, bb.tokenizer, bb.hf.config)
    apply_to_generation_config(model.generation_config, export_decoding(bb))
    model.save_pretrained(str(out_dir))
    for name in SIDE_FILES:
        if (merged.base_dir / name).is_file():
            shutil.copy2(merged.base_dir / name, out_dir / name)
    if not (out_dir / "tokenizer.json").is_file() and not (out_dir / "vocab.json").is_file():
        bb.tokenizer.save_pretrained(str(out_dir))
    if not (out_dir / "preprocessor_config.json").is_file():
        # Stock Whisper front end (16 kHz, 25 ms / 10 ms, 30 s windows) for this mel count.
        fe = WhisperFeatureExtractor(feature_size=bb.config.num_mel_bins)
        fe.processor_class = "WhisperProcessor"
        fe.save_pretrained(str(out_dir))
    # The guarantee the format makes: no adapter tensor in the weights file(s).
    for f in out_dir.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            leaked = [k for k in st.keys() if is_adapter_param(k)]
        if leaked:
            raise RuntimeError(f"adapter tensors leaked into {f}: {leaked[:5]}")


def write_provenance(merged: MergedModel, out_dir: Path, adapters: str | Path, fmt: str, quantization: str) -> None:
    """``asr_adapt_export.json``: what the directory was made from (read by people, not loaders)."""
    info = {
        "format": fmt,
        "quantization": quantization,
        "base": str(merged.base_dir),
        "base_fingerprint": merged.base_fingerprint,
        "adapters": str(Path(adapters).resolve()),
        "adapter_types": merged.adapter_types,
        "locale": merged.locale,
        "adapter_key": merged.adapter_key,
    }
    (out_dir / "asr_adapt_export.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
