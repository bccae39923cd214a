"""Foundation model lifecycle on a tiny transducer: init (preset + tokenizer + CMVN),
full-finetune pretraining through `asr-adapt train fit`, export back to a model directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from asr_adapt.cli.main import main as cli_main
from asr_adapt.data.kaldi import load_utterances
from asr_adapt.decoding.decoders import decoding_options, transcribe_batch
from asr_adapt.models.transducer import TransducerBackbone
from asr_adapt.training import foundation as fd
from asr_adapt.training.cli import run_train
from tests.training.helpers import tiny_foundation

LOCALES = ["en-US", "el-GR"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """(root, init_dir, exp): a tiny foundation initialised and trained for 2 steps."""
    root = tmp_path_factory.mktemp("foundation")
    train, dev, init_dir = tiny_foundation(root, LOCALES)
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 2, "val_check_interval": 2,
                    "check_val_every_n_epoch": None, "logger": False, "enable_progress_bar": False},
        "model": {"class_path": "asr_adapt.training.module.TransducerAdaptationModule",
                  "init_args": {"model": str(init_dir), "adapter": None, "full_finetune": True, "locales": LOCALES,
                                "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-2}}}},
        "data": {"train": [str(train)], "dev": [str(dev)], "max_batch_seconds": 4.0, "num_workers": 0},
    }
    conf = root / "conf.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    exp = root / "exp"
    assert run_train(["fit", "--config", str(conf), "--trainer.default_root_dir", str(exp)]) == 0
    return root, init_dir, exp


def test_init_fits_cmvn_on_chosen_locales(pretrained):
    root, init_dir, _ = pretrained
    model = TransducerBackbone.from_pretrained(init_dir)
    assert model.config.d_model == 32 and model.config.vocab_size == model.tokenizer.vocab_size
    # CMVN = global statistics of the en-US train audio only (the pretraining locales).
    wavs = [u.load() for u in load_utterances(root / "train") if u.lang == "en-US"]
    feats, lens = model.raw_features(wavs)
    x = torch.cat([f[: int(n)] for f, n in zip(feats, lens)]).double()
    torch.testing.assert_close(model.cmvn.mean, x.mean(0).float(), rtol=1e-4, atol=1e-4)
    assert fd.read_provenance(init_dir)["parameters"] == fd.count_parameters(model)


def test_full_finetune_checkpoint_exports_to_model_dir(pretrained):
    root, init_dir, exp = pretrained
    ckpt = fd.pick_checkpoint(exp, "best")
    raw = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    init = TransducerBackbone.from_pretrained(init_dir)
    params = {n for n, _ in init.named_parameters()}
    # The full-finetune checkpoint holds every backbone parameter (and nothing but the backbone).
    assert {k.removeprefix("backbone.") for k in raw} == params

    out = root / "exported"
    fd.export_checkpoint(ckpt, init_dir, out)
    model = TransducerBackbone.from_pretrained(out)
    state, init_state = model.state_dict(), init.state_dict()
    for name in params:
        torch.testing.assert_close(state[name], raw["backbone." + name], rtol=0, atol=0)
    # Training moved the weights, so the equality above is not the init's weights again.
    assert any(not torch.equal(state[n], init_state[n]) for n in params)
    # Buffers (CMVN) are not in the checkpoint: they come from the init directory.
    torch.testing.assert_close(model.cmvn.mean, init.cmvn.mean, rtol=0, atol=0)
    wav = np.sin(np.arange(16000) / 16000 * 2 * np.pi * 300).astype(np.float32) * 0.3
    for mode in ("full", "streaming"):
        (hyp,) = transcribe_batch(model, [wav], ["en-US"], decoding_options(model, mode=mode, chunk_ms=160), route=None)
        assert isinstance(hyp.text, str)


def test_export_refuses_adapter_checkpoints(tmp_path, pretrained):
    _, init_dir, exp = pretrained
    ck = torch.load(exp / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    ck["hyper_parameters"] = dict(ck["hyper_parameters"], full_finetune=False, adapter="lda")
    bad = tmp_path / "adapter.ckpt"
    torch.save(ck, bad)
    with pytest.raises(ValueError, match="not a full fine-tuning checkpoint"):
        fd.export_checkpoint(bad, init_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pick_best_uses_macro_cer(tmp_path):
    hist = tmp_path / "checkpoints"
    hist.mkdir()
    rows = [
        {"step": 2, "ckpt": "step2.ckpt", "locales": {"a": {"wer": 90.0, "cer": 40.0}, "b": {"wer": 90.0, "cer": 40.0}}},
        {"step": 4, "ckpt": "step4.ckpt", "locales": {"a": {"wer": 80.0, "cer": 50.0}, "b": {"wer": 80.0, "cer": 50.0}}},
    ]
    (hist / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for r in rows:
        (hist / r["ckpt"]).write_bytes(b"")
    (hist / "last.ckpt").write_bytes(b"")
    assert fd.pick_checkpoint(tmp_path, "best").name == "step2.ckpt"  # lower CER beats lower WER
    assert fd.pick_checkpoint(tmp_path, "last").name == "last.ckpt"
    with pytest.raises(KeyError):
        fd.pick_checkpoint(tmp_path, "nope")


def _run_with_checkpoints(tmp_path, pretrained, n: int):
    """An experiment dir whose ``n`` validation checkpoints are the fixture's, each weight
    offset by its index (step 10 * (i + 1))."""
    _, _, exp = pretrained
    ck = torch.load(exp / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    ckpt_dir = tmp_path / "run" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    rows = []
    for i in range(n):
        c = dict(ck, global_step=10 * (i + 1),
                 state_dict={k: v + i if v.is_floating_point() else v for k, v in ck["state_dict"].items()})
        name = f"step{10 * (i + 1)}.ckpt"
        torch.save(c, ckpt_dir / name)
        rows.append({"step": 10 * (i + 1), "ckpt": name, "locales": {"en-US": {"wer": 50.0, "cer": 20.0 - i}}})
    (ckpt_dir / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.save(c, ckpt_dir / "last.ckpt")
    return tmp_path / "run", ck["state_dict"]


def test_checkpoint_averaging_exports_the_mean_of_a_window(tmp_path, pretrained):
    _, init_dir, _ = pretrained
    run, base = _run_with_checkpoints(tmp_path, pretrained, 4)
    best = fd.pick_checkpoint(run, "best")
    assert best.name == "step40.ckpt"
    window = fd.averaging_window(run, best, 3)
    assert [p.name for p in window] == ["step20.ckpt", "step30.ckpt", "step40.ckpt"]
    assert [p.name for p in fd.averaging_window(run, run / "checkpoints" / "last.ckpt", 2)] == \
        ["step30.ckpt", "last.ckpt"]
    model = fd.export_checkpoint(window, init_dir, tmp_path / "avg")
    # Offsets 1, 2, 3 average to 2: the mean of the window, not any one checkpoint.
    state = model.state_dict()
    for name, _ in model.named_parameters():
        torch.testing.assert_close(state[name], base["backbone." + name] + 2, rtol=0, atol=1e-6)
    assert fd.read_provenance(tmp_path / "avg")["averaged"] == [str(p) for p in window]
    with pytest.raises(ValueError, match="only 4 validation checkpoints"):
        fd.averaging_window(run, best, 5)


def test_cli_export_with_avg(tmp_path, pretrained):
    _, init_dir, _ = pretrained
    run, base = _run_with_checkpoints(tmp_path, pretrained, 3)
    out = tmp_path / "cli_avg"
    assert cli_main(["init-model", "--from-experiment", str(run), "--avg", "2", "--init-dir", str(init_dir),
                     "-o", str(out)]) == 0
    model = TransducerBackbone.from_pretrained(out)
    name = next(n for n, _ in model.named_parameters())
    torch.testing.assert_close(model.state_dict()[name], base["backbone." + name] + 1.5, rtol=0, atol=1e-6)
    # The history orders the checkpoints; a lone checkpoint has none to average with.
    assert cli_main(["init-model", "--from-checkpoint", str(run / "checkpoints" / "step10.ckpt"), "--avg", "2",
                     "--init-dir", str(init_dir), "-o", str(tmp_path / "x")]) == 2
    assert cli_main(["init-model", "--from-experiment", str(run), "--avg", "4", "--init-dir", str(init_dir),
                     "-o", str(tmp_path / "y")]) == 2


def test_cli_init_and_export(pretrained, capsys):
    root, init_dir, exp = pretrained
    out = root / "cli_init"
    args = ["init-model", "--preset", "tiny", "--tokenizer", str(root / "tok"), "--cmvn-data", str(root / "train"),
            "--seed", "3", "-o", str(out)]
    assert cli_main(args) == 0
    assert "parameters" in capsys.readouterr().out
    assert cli_main(args) == 2  # refuses to replace a model without --overwrite
    exported = root / "cli_export"
    assert cli_main(["init-model", "--from-experiment", str(exp), "--pick", "last", "--init-dir", str(init_dir),
                     "-o", str(exported)]) == 0
    assert fd.read_provenance(exported)["made_by"] == "export"
    assert cli_main(["init-model", "--from-experiment", str(exp), "-o", str(root / "x")]) == 2  # needs --init-dir


def test_cli_init_overrides_preset_fields(pretrained):
    root, _, _ = pretrained
    base = ["init-model", "--preset", "tiny", "--tokenizer", str(root / "tok"), "--cmvn-data", str(root / "train")]
    out = root / "cli_set"
    assert cli_main(base + ["--set", "dropout=0.25", "--set", "train_chunk_sizes=(2, 4)", "-o", str(out)]) == 0
    cfg = TransducerBackbone.from_pretrained(out).config
    assert cfg.dropout == 0.25 and cfg.train_chunk_sizes == (2, 4)
    assert cfg.d_model == 32  # the rest is still the preset's
    assert fd.read_provenance(out)["overrides"] == {"dropout": 0.25, "train_chunk_sizes": [2, 4]}
    # Unknown fields, fields the tokenizer decides and malformed pairs are refused by name.
    for bad in ("dropoutt=0.1", "vocab_size=7", "dropout"):
        assert cli_main(base + ["--set", bad, "-o", str(root / "cli_bad")]) == 2
        assert not (root / "cli_bad").exists()


def test_training_runs_the_backbone_in_train_mode():
    """Backbones load in eval mode; the training module switches the whole tree at train start."""
    from asr_adapt.models.transducer.tokenizer import train_tokenizer as tt
    from asr_adapt.training.module import AdaptationModule

    model = TransducerBackbone.from_preset("tiny", tt("char", ["ab"])).eval()
    holder = torch.nn.Module()
    holder.backbone = model
    AdaptationModule.on_train_start(holder)
    assert model.training and all(m.training for m in model.modules())


def test_weight_decay_spares_norms_biases_and_embeddings():
    from asr_adapt.models.transducer.tokenizer import train_tokenizer as tt
    from asr_adapt.training.module import decay_groups

    model = TransducerBackbone.from_preset("tiny", tt("char", ["ab"]))
    decay, plain = decay_groups(model)
    assert plain["weight_decay"] == 0.0 and "weight_decay" not in decay  # the optimizer's own value
    names = {id(p): n for n, p in model.named_parameters()}
    plain_names = {names[id(p)] for p in plain["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert "predictor.embedding.weight" in plain_names and "cmvn.mean" not in plain_names | decay_names
    assert all(n.endswith(".bias") or "norm" in n or "embedding" in n for n in plain_names)
    assert "joiner.out.weight" in decay_names
    assert len(plain_names) + len(decay_names) == sum(1 for _ in model.parameters())
    opt = torch.optim.AdamW(decay_groups(model), lr=1e-3, weight_decay=0.1)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_full_context_steps_hold_the_first_pass_at_full_attention(monkeypatch):
    """Before `full_context_steps` every batch trains at full context; after it, chunks are drawn."""
    from asr_adapt.models.transducer.tokenizer import train_tokenizer as tt
    from asr_adapt.training.module import TransducerAdaptationModule

    seen = []
    real = TransducerBackbone.loss_terms

    def spy(self, wavs, texts, langs, chunk_size=None, left_chunks=None, step=None):
        seen.append((chunk_size, step))
        return real(self, wavs, texts, langs, chunk_size, left_chunks, step)

    monkeypatch.setattr(TransducerBackbone, "loss_terms", spy)
    holder = torch.nn.Module()
    holder.backbone = TransducerBackbone.from_preset("tiny", tt("char", ["ab"])).train()
    holder.log = lambda *a, **k: None
    batch = {"wavs": [np.zeros(8000, dtype=np.float32)], "texts": ["ab"], "langs": [None]}
    for step, expected in ((0, -1), (2, None)):
        holder.global_step, holder.full_context_steps = step, 1
        TransducerAdaptationModule.train_loss(holder, batch)
        assert seen[-1] == (expected, step)  # the step also reaches the pruned loss's warm-up
