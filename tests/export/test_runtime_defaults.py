"""Exports decode like asr-adapt in stock runtimes called with their defaults (plus a language).

The "chatty" base ranks ``<|en|>`` first at every step, so a runtime that does not suppress
control tokens as asr-adapt does emits it, and the pipeline's 5-beam default picks other
tokens than asr-adapt's greedy search: each check here fails without the export's settings.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from asr_adapt.decoding.options import DecodingOptions
from asr_adapt.decoding.whisper_search import LogitMask
from asr_adapt.export import export_model, merge_for_export
from asr_adapt.export.decoding import export_decoding
from asr_adapt.export.parity import (
    FASTER_WHISPER_ARGS,
    check_parity,
    decode_merged,
    faster_whisper_args,
    parity_options,
)

torch.set_num_threads(1)
MAX_NEW = 12


def _masked(mask: torch.Tensor) -> set[int]:
    return set(torch.nonzero(torch.isinf(mask)).flatten().tolist())


def test_generation_config_carries_asr_adapt_decoding(tiny_base, lora_bundle, tmp_path):
    # A base with its own non-speech list, as OpenAI's checkpoints have.
    base = shutil.copytree(tiny_base, tmp_path / "base")
    gen_path = base / "generation_config.json"
    gen_path.write_text(json.dumps({**json.loads(gen_path.read_text()), "suppress_tokens": [1, 2, 7]}))
    out = export_model(str(base), lora_bundle, "el-GR", tmp_path / "hf")
    gen = json.loads((out / "generation_config.json").read_text())
    assert (gen["num_beams"], gen["do_sample"], gen["return_timestamps"]) == (1, False, False)
    assert gen["max_new_tokens"] == DecodingOptions().max_new_tokens and gen.get("max_length") is None
    for field in ("lang_to_id", "task_to_id", "no_timestamps_token_id", "is_multilingual", "decoder_start_token_id"):
        assert gen[field] not in (None, {}, []), field  # what generate(language=...) needs is still there

    merged = merge_for_export(str(base), lora_bundle, "el-GR").backbone
    mask = LogitMask(merged, DecodingOptions(), merged.proj_out.out_features, torch.device("cpu"))
    timestamps = set(range(merged.tokens.no_timestamps + 1, merged.proj_out.out_features))
    always, first = _masked(mask.always), _masked(mask.first)
    assert {1, 2, 7, merged.tokens.lang_to_id["en"], merged.tokens.sot} <= set(gen["suppress_tokens"])
    # Exactly asr-adapt's masks, but for the timestamps it also masks (left to the runtimes'
    # timestamp modes, see asr_adapt.export.decoding).
    assert set(gen["suppress_tokens"]) == always - timestamps and timestamps <= always
    assert set(gen["suppress_tokens"]) | set(gen["begin_suppress_tokens"]) == first - timestamps


def test_transformers_defaults_decode_like_asr_adapt(chatty_base, chatty_lora_bundle, clips, tmp_path):
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    out = export_model(str(chatty_base), chatty_lora_bundle, "el-GR", tmp_path / "hf")
    merged = merge_for_export(str(chatty_base), chatty_lora_bundle, "el-GR").backbone
    ours = decode_merged(merged, clips, "el-GR", parity_options(MAX_NEW, "el-GR"))
    fe = WhisperFeatureExtractor.from_pretrained(str(out))
    exported, base = (WhisperForConditionalGeneration.from_pretrained(str(d)).eval() for d in (out, chatty_base))
    en = merged.tokens.lang_to_id["en"]
    for wav, hyp in zip(clips, ours):
        feats = fe(wav, sampling_rate=16000, return_tensors="pt").input_features
        assert base.generate(feats, language="el", max_new_tokens=2)[0].tolist() == [en, en]  # the test bites
        got = exported.generate(feats, language="el", max_new_tokens=MAX_NEW)[0].tolist()
        assert [t for t in got if t != merged.tokens.eot] == list(hyp.tokens)
    # The ASR pipeline, given only language and max_new_tokens (its own default is 5 beams).
    rep = check_parity(merged, out, "hf", clips, "el-GR", max_new_tokens=MAX_NEW)
    assert all(r["ours"] for r in rep.rows) and rep.n_agree == len(clips), rep.rows


def test_ct2_config_and_engine_defaults_decode_like_asr_adapt(chatty_base, chatty_lora_bundle, clips, tmp_path):
    pytest.importorskip("faster_whisper")
    out = export_model(str(chatty_base), chatty_lora_bundle, "el-GR", tmp_path / "ct2", fmt="ct2")
    assert {"model.bin", "config.json", "tokenizer.json", "preprocessor_config.json"} <= {p.name for p in out.iterdir()}
    merged = merge_for_export(str(chatty_base), chatty_lora_bundle, "el-GR").backbone
    config, want = json.loads((out / "config.json").read_text()), export_decoding(merged)
    assert config["suppress_ids"] == list(want.suppress_tokens) and merged.tokens.lang_to_id["en"] in config["suppress_ids"]
    assert config["suppress_ids_begin"] == list(want.begin_suppress_tokens)
    assert config["lang_ids"] and config["alignment_heads"]  # the converter's own fields survive

    # The engine with only beam_size=1 (its default is 5): suppression comes from config.json.
    rep = check_parity(merged, out, "ct2", clips, "el-GR", max_new_tokens=MAX_NEW)
    assert rep.n_agree == len(clips), rep.rows
    # It stops at 224 new tokens, asr-adapt here at 12; the 12 are the runtime's first 12.
    assert all(len(t.tokens) > MAX_NEW for t in rep.theirs) and "up to asr-adapt's token cap" in rep.summary()


def test_faster_whisper_with_readme_arguments(chatty_base, chatty_lora_bundle, clips, tmp_path):
    pytest.importorskip("faster_whisper")
    out = export_model(str(chatty_base), chatty_lora_bundle, "el-GR", tmp_path / "ct2", fmt="ct2")
    merged = merge_for_export(str(chatty_base), chatty_lora_bundle, "el-GR").backbone
    args = faster_whisper_args(out)
    assert args == {**FASTER_WHISPER_ARGS, "suppress_tokens": list(export_decoding(merged).suppress_tokens)}
    # faster-whisper pads the log-mel, not the audio; padded to 30 s, its input is stock
    # Whisper's and its transcripts must be asr-adapt's token for token.
    padded = [np.pad(w, (0, 30 * 16000 - len(w))) for w in clips]
    rep = check_parity(merged, out, "faster-whisper", padded, "el-GR", max_new_tokens=MAX_NEW)
    assert rep.n_agree == len(clips), rep.rows
    # As users call it (unpadded audio) it runs; agreement is a figure, not a guarantee.
    assert all(t.tokens for t in check_parity(merged, out, "faster-whisper", clips, "el-GR", max_new_tokens=MAX_NEW).theirs)


def test_check_refuses_a_cap_beyond_the_runtimes_own(tiny_base, lora_bundle, clips, tmp_path):
    merged = merge_for_export(str(tiny_base), lora_bundle, "el-GR").backbone
    with pytest.raises(ValueError, match="224"):
        check_parity(merged, tmp_path, "hf", clips, "el-GR", max_new_tokens=300)
