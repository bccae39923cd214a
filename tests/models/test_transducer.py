"""Transducer backbone: presets, shapes, loss, persistence, injection points, hooks, tokenizers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from asr_adapt import routing
from asr_adapt.decoding.decoders import decoding_options, transcribe_batch
from asr_adapt.models.base import BACKBONES, Hypothesis
from asr_adapt.models.transducer import (
    PRESETS,
    TOKENIZERS,
    TransducerBackbone,
    TransducerConfig,
    load_tokenizer,
)
from asr_adapt.models.transducer.cascade import CascadedEncoder
from asr_adapt.models.transducer.encoder import ConformerBlock
from asr_adapt.models.transducer.tokenizer import CharTokenizer, SentencePieceTokenizer

TEXTS = ["abc", "cab ba", "ba"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine the thread
    pool's spin-waiting makes them many times slower; restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _wavs(seconds=(1.0, 0.7, 0.45), seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in seconds]


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TransducerBackbone.from_preset("tiny", CharTokenizer.train(TEXTS)).eval()


def test_presets_are_documented_and_valid():
    assert {"tiny", "small", "large"} <= set(PRESETS.names())
    for f in dataclasses.fields(TransducerConfig):
        assert f.metadata.get("help"), f"{f.name} has no help string"
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS.get("tiny").d_model = 8
    with pytest.raises(ValueError):
        TransducerConfig(d_model=30, num_heads=4)
    with pytest.raises(ValueError):
        TransducerConfig(second_pass_layers=0, second_pass_weight=0.5)
    cfg = PRESETS.get("small")
    assert TransducerConfig.from_dict(cfg.to_dict()) == cfg
    n = sum(p.numel() for p in CascadedEncoder(cfg).parameters())
    assert 5e6 < n < 15e6


def test_registered_backbone(model):
    assert BACKBONES.get("transducer") is TransducerBackbone
    assert model.family == "transducer"
    assert isinstance(decoding_options(model, mode="streaming"), type(decoding_options(model)))
    assert model.get_submodule(model.feature_module()) is model.cmvn


def test_shapes(model):
    wavs = _wavs()
    feats, lens = model.features(wavs)
    assert feats.shape == (3, int(lens.max()), 80)
    assert lens.tolist() == [(len(w) - 400) // 160 + 1 for w in wavs]
    out = model.encode(feats, lens, chunk_size=4)
    t = int(lens.max()) // 4
    assert out.first.shape == (3, t, 32) and out.second.shape == (3, t, 32)
    assert out.lengths.tolist() == (lens // 4).tolist()
    assert torch.isfinite(out.first).all() and torch.isfinite(out.second).all()


def test_loss_decreases_on_a_tiny_batch(model):
    wavs = _wavs()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        terms = model.loss_terms(wavs, TEXTS, [None] * 3)
        assert set(terms) == {"first_pass", "second_pass", "loss"}
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(terms["loss"].item())
    assert losses[-1] < 0.5 * losses[0]


def test_loss_weights_combine_both_passes(model):
    terms = model.loss_terms(_wavs(), TEXTS, [None] * 3, chunk_size=2, left_chunks=-1)
    cfg = model.config
    expected = cfg.first_pass_weight * terms["first_pass"] + cfg.second_pass_weight * terms["second_pass"]
    assert torch.allclose(terms["loss"], expected)


def test_ctc_heads_add_a_loss_per_pass_that_reaches_the_encoder_without_the_joiner():
    torch.manual_seed(0)
    m = TransducerBackbone.from_preset("tiny", CharTokenizer.train(TEXTS), ctc_weight=0.3, subsampling=8)
    terms = m.loss_terms(_wavs((1.2, 1.0, 0.9)), TEXTS, [None] * 3, chunk_size=-1, left_chunks=-1)
    assert set(terms) == {"first_pass", "second_pass", "ctc_first_pass", "ctc_second_pass", "loss"}
    w, cfg = 0.3, m.config
    expected = sum(cfg_w * ((1 - w) * terms[p] + w * terms[f"ctc_{p}"])
                   for p, cfg_w in (("first_pass", cfg.first_pass_weight), ("second_pass", cfg.second_pass_weight)))
    assert torch.allclose(terms["loss"], expected)
    # The CTC term alone trains the encoder and its head, and nothing of the joiner.
    terms["ctc_second_pass"].backward()
    assert m.encoder.first_pass.layers[0].attn.q_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.joiner.parameters())
    # 80 ms frames: each head emits two 40 ms CTC frames per encoder frame.
    enc = torch.zeros(2, 5, cfg.d_model)
    assert m.ctc_log_probs(enc, "first_pass").shape == (2, 10, cfg.vocab_size)


def test_compact_preset_is_a_small_8x_char_model():
    cfg = PRESETS.get("compact")
    assert cfg.subsampling == 8 and cfg.tokenizer == "char"
    m = TransducerBackbone.from_preset("compact", CharTokenizer.train(TEXTS))
    n = sum(p.numel() for p in m.parameters())
    assert n * 2 < 30e6  # ships as float16 (see save_pretrained) under 30 MB
    assert m.config.frame_ms == 80


def test_half_precision_storage_loads_back_as_float32(model, tmp_path):
    model.save_pretrained(tmp_path / "m16", dtype=torch.float16)
    again = TransducerBackbone.from_pretrained(tmp_path / "m16")
    a, b = model.state_dict(), again.state_dict()
    assert all(b[k].dtype == a[k].dtype for k in a)
    assert all(torch.equal(b[k], a[k].half().to(a[k].dtype)) for k in a if a[k].is_floating_point())
    assert torch.equal(again.cmvn.mean, model.cmvn.mean)  # statistics stay in full precision


def test_subsampling_must_be_a_multiple_of_four():
    for bad in (2, 6):
        with pytest.raises(ValueError, match="subsampling"):
            dataclasses.replace(PRESETS.get("tiny"), subsampling=bad)


def test_shipped_names_resolve_and_unknown_names_fail_clearly(tmp_path, monkeypatch):
    from asr_adapt.models.transducer import shipped

    m = TransducerBackbone.from_preset("tiny", CharTokenizer.train(TEXTS))
    m.save_pretrained(tmp_path / "tiny-shipped")
    monkeypatch.setitem(shipped.SHIPPED._items, "tiny-shipped-test", tmp_path / "tiny-shipped")
    again = TransducerBackbone.from_pretrained("tiny-shipped-test")
    assert again.config == m.config
    with pytest.raises(FileNotFoundError, match="shipped models"):
        TransducerBackbone.from_pretrained("no-such-model")


def test_dynamic_chunk_sampling_covers_the_configured_set(model):
    draws = {model.sample_chunking() for _ in range(300)}
    cfg = model.config
    assert (-1, -1) in draws
    chunked = {d for d in draws if d != (-1, -1)}
    assert {c for c, _ in chunked} == set(cfg.train_chunk_sizes)
    assert {lc for _, lc in chunked} == set(cfg.train_left_chunks)


def test_save_load_roundtrip_is_exact(model, tmp_path):
    model.fit_cmvn(_wavs(seed=3))
    model.save_pretrained(tmp_path / "m")
    again = TransducerBackbone.from_pretrained(tmp_path / "m")
    assert again.config == model.config
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert again.fingerprint() == model.fingerprint()
    assert again.tokenizer.encode("cab") == model.tokenizer.encode("cab")
    wavs = _wavs()
    with torch.no_grad():
        fa, la = model.features(wavs)
        fb, lb = again.features(wavs)
        assert torch.equal(model.encode(fa, la).second, again.encode(fb, lb).second)
    ha = transcribe_batch(model, wavs, [None] * 3, route=None)
    hb = transcribe_batch(again, wavs, [None] * 3, route=None)
    assert [h.tokens for h in ha] == [h.tokens for h in hb]
    assert all(isinstance(h, Hypothesis) for h in ha)
    with pytest.raises(FileNotFoundError):
        TransducerBackbone.from_pretrained(tmp_path / "missing")


def test_injection_points_resolve(model):
    pts = model.injection_points()
    assert set(pts.blocks) == {"first_pass", "second_pass", "output"}
    assert len(pts.blocks["first_pass"]) == model.config.first_pass_layers
    assert len(pts.blocks["second_pass"]) == model.config.second_pass_layers
    for group in ("first_pass", "second_pass"):
        assert all(isinstance(model.get_submodule(n), ConformerBlock) for n in pts.blocks[group])
    assert [model.get_submodule(n) for n in pts.blocks["output"]] == [model.predictor, model.joiner]
    assert set(pts.linears) == {"first_pass.attn", "first_pass.ffn", "second_pass.attn", "second_pass.ffn"}
    for names in pts.linears.values():
        assert names and all(isinstance(model.get_submodule(n), nn.Linear) for n in names)


def test_block_hook_fires_and_routes_in_offline_and_streaming_paths(model):
    """A hook shaped like an adapter: reads the routing, shifts the block output."""
    name = model.injection_points().blocks["first_pass"][-1]
    seen: list[tuple[int, tuple]] = []
    shift = {"value": 0.0}

    def hook(module, args, output):
        y = output[0]
        groups = routing.groups(y.shape[0])  # raises if the batch dim disagrees with the routing
        seen.append((y.shape[1], tuple(sorted(k for k in groups))) if groups else (y.shape[1], ()))
        return (y + shift["value"],) + tuple(output[1:])

    handle = model.get_submodule(name).register_forward_hook(hook)
    wavs, langs = _wavs(), ["el-GR", "ar-EG", "el-GR"]
    feats, lens = model.features(wavs)
    with torch.no_grad(), routing.use(langs):
        base = model.encode(feats, lens, 2).first
        assert seen and seen[-1][1] == ("ar-EG", "el-GR")
        n_offline = len(seen)
        st = model.init_streaming_state(3, 2)
        y0, _, _ = model.streaming_forward(feats[:, :16], torch.full((3,), 16), st)
        assert len(seen) > n_offline and seen[-1][0] == 2  # called once per 2-frame chunk
        shift["value"] = 1.0
        moved = model.encode(feats, lens, 2).first
        y1, _, _ = model.streaming_forward(feats[:, :16], torch.full((3,), 16), model.init_streaming_state(3, 2))
    handle.remove()
    assert not torch.allclose(base, moved) and not torch.allclose(y0, y1)
    # Decoding in either mode routes through the same hookable blocks.
    handle = model.get_submodule(name).register_forward_hook(hook)
    seen.clear()
    transcribe_batch(model, wavs, langs, decoding_options(model, mode="streaming", chunk_ms=80), route=langs)
    assert seen and all(s[1] == ("ar-EG", "el-GR") for s in seen)
    handle.remove()


def test_char_tokenizer_roundtrip(tmp_path):
    tok = TOKENIZERS.get("char").train(["καλημέρα σας", "hello"])
    ids = tok.encode("σας hello")
    assert 0 not in ids and tok.decode(ids) == "σας hello"
    assert tok.encode("z") == [1]  # unseen character -> <unk>
    tok.save(tmp_path)
    assert load_tokenizer(tmp_path).encode("σας hello") == ids


def test_sentencepiece_is_multilingual_with_byte_fallback(tmp_path):
    texts = ["καλημέρα σας φίλε", "hello world again", "مرحبا بكم جميعا", "dobrý den přátelé"] * 5
    tok = SentencePieceTokenizer.train(texts, vocab_size=320)
    assert tok.sp.id_to_piece(0) == "<blk>"
    for text in ("καλημέρα φίλε", "مرحبا", "日本語"):  # the last was never seen: UTF-8 bytes
        ids = tok.encode(text)
        assert 0 not in ids and 1 not in ids
        assert tok.decode(ids) == text
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert isinstance(again, SentencePieceTokenizer) and again.encode("hello") == tok.encode("hello")


def test_tokenizer_cli(tmp_path):
    from asr_adapt.cli.main import main

    (tmp_path / "a").write_text("u1 καλημέρα σας\nu2 hello world\n", encoding="utf-8")
    (tmp_path / "b").write_text("u3 مرحبا بكم\nu4\n", encoding="utf-8")
    out = tmp_path / "tok"
    argv = ["tokenizer", "train", "--text", str(tmp_path / "a"), "--text", str(tmp_path / "b"), "-o", str(out)]
    assert main(argv) == 0
    tok = load_tokenizer(out)
    assert tok.decode(tok.encode("مرحبا hello")) == "مرحبا hello"
    assert main(argv) == 1  # refuses to overwrite
    assert main([*argv, "--overwrite", "--kind", "char"]) == 0
    assert isinstance(load_tokenizer(out), CharTokenizer)
