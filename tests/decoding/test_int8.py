"""The int8 compute type on a tiny random Whisper (CPU): close to float32, decodes, and keeps
adapters working (LDA on int8 blocks; unmerged LoRA keeps its linear layers in float32)."""

from __future__ import annotations

import copy

import pytest
import soundfile as sf
import torch
from torch import nn

from asr_adapt import api, routing
from asr_adapt.adapters import attach_adapters, attached_sets, is_adapter_param, merge_locale, unmerge
from asr_adapt.cli.main import main
from asr_adapt.decoding.decoders import decoding_options, transcribe_batch
from asr_adapt.fileio import read_jsonl
from asr_adapt.models import whisper_compute
from asr_adapt.models.whisper import WhisperBackbone, tiny_config
from asr_adapt.models.whisper_compute import COMPUTE_TYPES, Int8Linear
from tests.export.bundles import clips, make_bundle, tiny_dir

LOCALES = ["el-GR", "de-DE"]  # row 0 has an adapter, row 1 does not


@pytest.fixture(params=["this CPU", "7-bit"])
def activations(request, monkeypatch):
    """Run once with this CPU's activation width and once with the 7 bits used without VNNI."""
    if request.param == "7-bit":
        monkeypatch.setattr(whisper_compute, "_int32_accumulation", lambda: False)
    return request.param


def _model(tokenizer, seed: int = 0) -> WhisperBackbone:
    torch.manual_seed(seed)
    return WhisperBackbone.from_config(tiny_config(), tokenizer)


def _randomise_adapters(model: nn.Module) -> None:
    """Non-identity adapter weights, so an adapted row really differs from the base."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if is_adapter_param(n):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _run(model: WhisperBackbone, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) encoder states and (B, V) first-step logits of an English prompt."""
    enc = model.encode(feats)
    prompts = torch.tensor([model.prompt("en")] * feats.shape[0])
    return enc, model.decoder_logits(prompts, enc, model.new_cache())


def _base_linears(model: WhisperBackbone) -> list[str]:
    return [n for names in model.injection_points().linears.values() for n in names] + ["proj_out"]


def test_registry_knows_the_types_and_refuses_a_gpu():
    assert {"float32", "int8"} <= set(COMPUTE_TYPES.names())
    with pytest.raises(KeyError, match="known: bf16_encoder_int8_decoder, bfloat16, float32, int8, int8_decoder"):
        COMPUTE_TYPES.get("int4")
    with pytest.raises(ValueError, match="CPU only"):
        COMPUTE_TYPES.get("int8").check(torch.device("cuda"))
    COMPUTE_TYPES.get("float32").check(torch.device("cuda"))


@pytest.mark.parametrize("kernel", ["fbgemm", "onednn"])
@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_scales_each_row_on_its_own(bias, kernel, activations):
    torch.manual_seed(0)
    lin = nn.Linear(64, 32, bias=bias)
    x = torch.randn(3, 5, 64)
    x[0, 0] *= 1000.0  # an outlier token, as Whisper's fc2 inputs have
    q = Int8Linear(lin, kernel=kernel)
    got, ref = q(x), lin(x)
    assert got.shape == ref.shape
    per_row = (got - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert per_row.max() < 5e-2  # the outlier does not coarsen the other tokens
    # A row's result does not depend on the rest of the batch (oneDNN's float epilogue may
    # round differently for another number of rows: equal to the last bit or two).
    if kernel == "fbgemm":
        assert torch.equal(q(x[1:2]), got[1:2])
    else:
        torch.testing.assert_close(q(x[1:2]), got[1:2], rtol=1e-6, atol=1e-6)


def test_int8_model_is_close_to_float32(tokenizer, activations):
    ref = _model(tokenizer)
    q = copy.deepcopy(ref)
    assert q.set_compute_type("int8") == []
    assert q.compute_type == "int8"
    assert all(isinstance(q.get_submodule(n), Int8Linear) for n in _base_linears(q))
    assert not any(type(m) is nn.Linear for m in q.modules())
    assert q.proj_out is q.hf.proj_out
    feats = ref.features(clips(), "dynamic", min_window_s=1.0)
    (enc_f, logits_f), (enc_q, logits_q) = _run(ref, feats), _run(q, feats)
    assert not torch.equal(enc_q, enc_f)
    assert _rel(enc_q, enc_f) < 5e-2
    assert _rel(logits_q, logits_f) < 5e-2


def test_int8_decoder_converts_the_decoder_only_and_leaves_the_encoder_exact(tokenizer):
    ref = _model(tokenizer)
    q = copy.deepcopy(ref)
    assert q.set_compute_type("int8_decoder") == []
    decoder = [n for g, names in q.injection_points().linears.items() if g.startswith("decoder") for n in names]
    encoder = [n for g, names in q.injection_points().linears.items() if g.startswith("encoder") for n in names]
    assert all(isinstance(q.get_submodule(n), Int8Linear) for n in decoder + ["proj_out"])
    assert all(type(q.get_submodule(n)) is nn.Linear for n in encoder)
    feats = ref.features(clips(), "dynamic", min_window_s=1.0)
    (enc_f, logits_f), (enc_q, logits_q) = _run(ref, feats), _run(q, feats)
    assert torch.equal(enc_q, enc_f)  # the encoder is untouched
    assert not torch.equal(logits_q, logits_f) and _rel(logits_q, logits_f) < 5e-2


@pytest.mark.parametrize("kernel", ["fbgemm", "onednn"])
def test_int8_decodes_as_the_float32_path(tokenizer, kernel, monkeypatch):
    """Greedy and beam: every clip's hypothesis under each reduced-precision type equals the
    float32 one (the logits differ by < 5 %, mostly less than this random model's margins between
    its top tokens). Where a row is a near-tie, the rounding may flip it, and how depends on the
    CPU's int8 kernels (oneDNN's weights round to 127 steps, fbgemm's to 127.5; AMD and Intel
    differ): so one row of the three may differ, if both paths score alike."""
    monkeypatch.setattr(whisper_compute, "default_int8_kernel", lambda: kernel)
    ref = _model(tokenizer)
    wavs = clips()
    for compute_type in ("int8", "int8_decoder", "bfloat16", "bf16_encoder_int8_decoder"):
        q = copy.deepcopy(ref)
        q.set_compute_type(compute_type)
        for opts in (decoding_options(q, max_new_tokens=6), decoding_options(q, max_new_tokens=6, beam_size=2)):
            want = transcribe_batch(ref, wavs, ["en", "de", None], opts, route=None)
            got = transcribe_batch(q, wavs, ["en", "de", None], opts, route=None)
            differ = [(g.avg_logprob, w.avg_logprob) for g, w in zip(got, want) if g.tokens != w.tokens]
            # At most one row may differ, and only as a near-tie: the reduced-precision model found
            # a path it scores about as the float32 model scores its own (a broken kernel's paths
            # score far lower, and differ in every row).
            assert len(differ) <= 1, (compute_type, opts.beam_size, differ)
            assert all(abs(g - w) <= 0.02 * abs(w) for g, w in differ), (compute_type, opts.beam_size, differ)
            assert all(h.tokens for h in got)


def test_int8_is_inference_only_and_one_way(tokenizer, tmp_path):
    q = _model(tokenizer)
    q.set_compute_type("int8")
    q.set_compute_type("int8")  # already there: nothing to do
    with pytest.raises(ValueError, match="already runs in int8"):
        q.set_compute_type("float32")
    with pytest.raises(RuntimeError, match="float32 model"):
        q.compute_loss(clips()[:1], ["hello"], ["en"])
    with pytest.raises(RuntimeError, match="float32 model"):
        q.save_pretrained(tmp_path / "out")


def test_lda_on_int8_blocks_leaves_adapter_free_rows_as_base_int8(tokenizer):
    base = _model(tokenizer)
    adapted = copy.deepcopy(base)
    attach_adapters(adapted, adapted.injection_points(), "lda", {"bottleneck": 8}, ["el-GR"])
    _randomise_adapters(adapted)
    assert adapted.set_compute_type("int8") == []  # LDA hooks blocks, not linears
    base.set_compute_type("int8")
    adapter_linears = [m for n, m in adapted.named_modules() if "lda_adapters" in n and isinstance(m, nn.Linear)]
    assert adapter_linears and all(type(m) is nn.Linear for m in adapter_linears)  # adapters stay float32

    feats = base.features(clips()[:2], "dynamic", min_window_s=1.0)
    with routing.use(LOCALES):
        enc_a, logits_a = _run(adapted, feats)
    enc_b, logits_b = _run(base, feats)
    assert torch.equal(enc_a[1], enc_b[1]) and torch.equal(logits_a[1], logits_b[1])
    assert not torch.allclose(enc_a[0], enc_b[0])

    opts = decoding_options(base, max_new_tokens=6, fallback="none")
    with routing.use(LOCALES):
        hyps_a = transcribe_batch(adapted, clips()[:2], LOCALES, opts, route=LOCALES)
    hyps_b = transcribe_batch(base, clips()[:2], LOCALES, opts, route=None)
    assert hyps_a[1].tokens == hyps_b[1].tokens


def test_unmerged_lora_keeps_its_linears_float32(tokenizer):
    model = _model(tokenizer)
    attach_adapters(model, model.injection_points(), "lora", {"rank": 2, "patterns": [r"(q_proj|v_proj)$"]}, ["el-GR"])
    _randomise_adapters(model)
    reference = copy.deepcopy(model)
    kept = model.set_compute_type("int8")
    targets = attached_sets(model)["lora"].targets
    assert sorted(kept) == sorted(targets)
    assert all(type(model.get_submodule(t)) is nn.Linear for t in targets)
    others = [n for n in _base_linears(model) if n not in targets]
    assert others and all(isinstance(model.get_submodule(n), Int8Linear) for n in others)

    feats = model.features(clips()[:2], "dynamic", min_window_s=1.0)
    with routing.use(LOCALES):
        _, logits_q = _run(model, feats)
        _, logits_f = _run(reference, feats)
    _, logits_base = _run(model, feats)  # no routing: every row without its adapter
    assert _rel(logits_q, logits_f) < 5e-2
    assert not torch.allclose(logits_q[0], logits_base[0])  # the adapter still acts on its row
    assert merge_locale(model, "el-GR") == "el-GR" and unmerge(model)  # and can still merge


def test_cli_and_api_int8_after_adapters(tmp_path):
    base = tiny_dir(tmp_path / "base", init_std=0.02)
    bundle = make_bundle(base, tmp_path / "bundle", "lda", {"bottleneck": 8})
    audio = tmp_path / "in"
    audio.mkdir()
    for i, wav in enumerate(clips()):
        sf.write(audio / f"c{i}.wav", wav, 16000)
    common = ["decode", str(audio), "--model", str(base), "--adapters", str(bundle), "--lang", "el-GR",
              "--min-window", "1", "--max-new-tokens", "4", "--no-progress"]
    assert main([*common, "-o", str(tmp_path / "out"), "--compute-type", "int8"]) == 0
    assert len(read_jsonl(tmp_path / "out" / "hyp.jsonl")) == 3
    assert main([*common, "-o", str(tmp_path / "bad"), "--compute-type", "int4"]) == 2

    rec = api.load_model(str(base), adapters=bundle, compute_type="int8")
    assert rec.backbone.compute_type == "int8"
    hyps = rec.transcribe([str(p) for p in sorted(audio.glob("*.wav"))], lang="el-GR", max_new_tokens=4)
    assert len(hyps) == 3
    with pytest.raises(RuntimeError, match="load the adapters first"):
        rec.load_adapters(bundle)
