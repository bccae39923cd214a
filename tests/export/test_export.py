"""Export: merged HF directory, CTranslate2 conversion, refusal cases, the CLI (runtimes: test_runtime_defaults)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from asr_adapt import adapters as A
from asr_adapt import routing
from asr_adapt.cli.main import main
from asr_adapt.export import FORMATS, export_model
from asr_adapt.models.whisper import WhisperBackbone

torch.set_num_threads(1)


def _routed(base, bundle):
    bb = WhisperBackbone.from_pretrained(str(base))
    A.load_adapters(bb, bundle, A.model_fingerprint(bb), bb.injection_points())
    return bb


def _inputs():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 80, 3000, generator=g), torch.tensor([[50258, 50281, 50359, 50363, 400, 500]] * 2)


@pytest.mark.parametrize("bundle_name, locale, key", [("smooth_lora_bundle", "uk-UA", "uk-UA"), ("smooth_s2lora_bundle", "el-GR", "el")])
def test_hf_export_equals_routed_adapted_model(smooth_base, bundle_name, locale, key, request, tmp_path):
    from transformers import WhisperForConditionalGeneration

    bundle = request.getfixturevalue(bundle_name)
    out = export_model(str(smooth_base), bundle, locale, tmp_path / "hf")
    model, info = WhisperForConditionalGeneration.from_pretrained(str(out), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    base_keys = set(WhisperForConditionalGeneration.from_pretrained(str(smooth_base)).state_dict())
    with safe_open(str(out / "model.safetensors"), "pt") as st:
        keys = set(st.keys())
    assert keys <= base_keys and not [k for k in keys if A.is_adapter_param(k)]
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())

    feats, dec = _inputs()
    routed = _routed(smooth_base, bundle)
    with torch.no_grad():
        with routing.use([locale, locale]):
            want = routed.hf(input_features=feats, decoder_input_ids=dec).logits
        base_model = WhisperForConditionalGeneration.from_pretrained(str(smooth_base)).eval()
        base = base_model(input_features=feats, decoder_input_ids=dec).logits
        got = model.eval()(input_features=feats, decoder_input_ids=dec).logits
    assert (got - want).abs().max().item() < 1e-4
    assert (base - want).abs().max().item() > 1e-2  # the adapter really changes the model
    meta = json.loads((out / "asr_adapt_export.json").read_text())
    assert (meta["locale"], meta["adapter_key"], meta["format"]) == (locale, key, "hf")
    for name in ("tokenizer.json", "preprocessor_config.json", "generation_config.json"):
        assert (out / name).is_file()


def test_ct2_int8_export_loads(tiny_base, lora_bundle, tmp_path):
    pytest.importorskip("faster_whisper")
    from faster_whisper import WhisperModel

    out = export_model(str(tiny_base), lora_bundle, "el-GR", tmp_path / "ct2", fmt="ct2", quantization="int8")
    WhisperModel(str(out), device="cpu", compute_type="int8")
    assert json.loads((out / "asr_adapt_export.json").read_text())["quantization"] == "int8"


@pytest.mark.parametrize("fmt", ["hf", "ct2"])
def test_lda_cannot_be_exported_and_error_says_what_can(tiny_base, lda_bundle, fmt, tmp_path):
    with pytest.raises(A.AdapterError) as e:
        export_model(str(tiny_base), lda_bundle, "el-GR", tmp_path / "out", fmt=fmt)
    msg = str(e.value)
    assert "lda" in msg
    for name, spec in FORMATS.items():
        assert f"{name} supports {', '.join(sorted(spec.supported_adapters))}" in msg
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_overwrite_refused_then_allowed_and_failures_leave_nothing(tiny_base, lora_bundle, tmp_path):
    out = export_model(str(tiny_base), lora_bundle, "el-GR", tmp_path / "m")
    with pytest.raises(FileExistsError):
        export_model(str(tiny_base), lora_bundle, "uk-UA", out)
    assert json.loads((out / "asr_adapt_export.json").read_text())["locale"] == "el-GR"
    export_model(str(tiny_base), lora_bundle, "uk-UA", out, overwrite=True)
    assert json.loads((out / "asr_adapt_export.json").read_text())["locale"] == "uk-UA"
    with pytest.raises(A.AdapterError, match="no adapter for 'de-DE'"):
        export_model(str(tiny_base), lora_bundle, "de-DE", out, overwrite=True)
    with pytest.raises(ValueError, match="quantization"):
        export_model(str(tiny_base), lora_bundle, "el-GR", tmp_path / "q", quantization="int8")  # hf: no int8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp dirs left, old export intact
    assert json.loads((out / "asr_adapt_export.json").read_text())["locale"] == "uk-UA"


def test_cli(tiny_base, lora_bundle, lda_bundle, tmp_path, capsys):
    args = ["export", "--model", str(tiny_base), "--adapters", str(lora_bundle), "--lang", "uk-UA"]
    assert main([*args, str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "model.safetensors").is_file()
    assert main([*args, str(tmp_path / "a")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--format", "onnx", str(tmp_path / "b")]) == 2
    assert "unknown export format 'onnx'" in capsys.readouterr().err
    lda = ["export", "--model", str(tiny_base), "--adapters", str(lda_bundle), "--lang", "el-GR", str(tmp_path / "c")]
    assert main(lda) == 2
    assert "cannot export lda" in capsys.readouterr().err


def test_cli_check_reports_agreement_on_a_data_dir(tiny_base, lora_bundle, tmp_path, capsys):
    from tests.training.helpers import make_data

    data = make_data(tmp_path / "data", locales=("el-GR", "uk-UA"), per_locale=2)
    args = ["export", "--model", str(tiny_base), "--adapters", str(lora_bundle), "--lang", "el-GR",
            "--check", str(data), "--check-utts", "5", "--check-max-tokens", "8", str(tmp_path / "hf")]
    assert main(args) == 0
    assert "hf: 2/2 transcripts equal" in capsys.readouterr().out  # only the el-GR utterances
