"""``--compute-type auto``: the table the engine benchmark writes, keyed by CPU features."""

from __future__ import annotations

import copy
import json

import pytest
import soundfile as sf
import torch

from asr_adapt.cli.main import main
from asr_adapt.fileio import read_jsonl
from asr_adapt.models import whisper_compute
from asr_adapt.models.whisper_compute import AUTO_TABLE, COMPUTE_TYPES, auto_compute_type
from tests.export.bundles import clips, tiny_dir


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "auto.json"
    path.write_text(json.dumps({"rows": [
        {"cpu_flags": ["amx_int8", "amx_bf16"], "compute_type": "bf16_encoder_int8_decoder", "evidence": "test"},
        {"cpu_flags": ["avx512_vnni"], "compute_type": "int8_decoder"},
    ], "fallback": "float32"}))
    return path


@pytest.mark.parametrize("flags,want", [
    ({"amx_int8", "amx_bf16", "avx512_vnni"}, "bf16_encoder_int8_decoder"),
    ({"avx512_vnni", "amx_int8"}, "int8_decoder"),  # the first row needs both AMX flags
    ({"avx2"}, "float32"),
])
def test_first_matching_row_else_the_fallback(table, monkeypatch, flags, want):
    monkeypatch.setattr(whisper_compute, "_cpu_flags", lambda: frozenset(flags))
    assert auto_compute_type("cpu", table)[0] == want
    assert auto_compute_type("cuda", table)[0] == "float32"


def test_the_shipped_table_names_known_types():
    doc = json.loads(AUTO_TABLE.read_text())
    assert doc["fallback"] in COMPUTE_TYPES
    assert all(row["compute_type"] in COMPUTE_TYPES and row["cpu_flags"] for row in doc["rows"])


def test_set_compute_type_auto_applies_the_table(tokenizer, table, monkeypatch):
    from asr_adapt.models.whisper import WhisperBackbone, tiny_config

    monkeypatch.setattr(whisper_compute, "AUTO_TABLE", table)
    torch.manual_seed(0)
    bb = WhisperBackbone.from_config(tiny_config(), tokenizer)
    for flags, want in (({"avx512_vnni"}, "int8_decoder"), ({"sse2"}, "float32")):
        monkeypatch.setattr(whisper_compute, "_cpu_flags", lambda flags=flags: frozenset(flags))
        q = copy.deepcopy(bb)
        q.set_compute_type("auto")
        assert q.compute_type == want


def test_decode_cli_takes_auto(tmp_path, table, monkeypatch):
    monkeypatch.setattr(whisper_compute, "AUTO_TABLE", table)
    monkeypatch.setattr(whisper_compute, "_cpu_flags", lambda: frozenset({"avx512_vnni"}))
    base = tiny_dir(tmp_path / "base", init_std=0.02)
    audio = tmp_path / "in"
    audio.mkdir()
    for i, wav in enumerate(clips()):
        sf.write(audio / f"c{i}.wav", wav, 16000)
    common = ["decode", str(audio), "--model", str(base), "--lang", "en", "--max-new-tokens", "4", "--no-progress"]
    assert main([*common, "-o", str(tmp_path / "out"), "--compute-type", "auto"]) == 0
    assert len(read_jsonl(tmp_path / "out" / "hyp.jsonl")) == 3
    assert main([*common, "-o", str(tmp_path / "bad"), "--compute-type", "fp4"]) == 2
