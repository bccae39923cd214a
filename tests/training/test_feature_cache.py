"""GPU-style pretraining on CPU: the device-resident feature bank, index batches, the wall-clock
budget and the steps/s log."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import yaml

from asr_adapt.data.kaldi import load_utterances
from asr_adapt.models.transducer import TransducerBackbone
from asr_adapt.training.cli import run_train
from asr_adapt.training.datamodule import ASRDataModule
from asr_adapt.training.feature_bank import FeatureBank
from asr_adapt.training.pacing import FlushDenormals, TimeBudget
from asr_adapt.training.schedulers import WarmupCosine
from tests.training.helpers import tiny_foundation

LOCALES = ["en-US", "el-GR"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(root, train, dev, init_dir): a tiny initialised foundation and its data."""
    root = tmp_path_factory.mktemp("fcache")
    train, dev, init_dir = tiny_foundation(root, LOCALES)
    return root, train, dev, init_dir


def test_bank_rows_equal_per_batch_features_and_tokens(corpus):
    _, train, _, init_dir = corpus
    model = TransducerBackbone.from_pretrained(init_dir)
    utts = load_utterances(train)
    bank = FeatureBank.build(model, utts, batch_seconds=2.0, jobs=2, progress=False)
    rows = [5, 0, 3]
    g = bank.gather(rows)
    feats, flens = model.features([utts[i].load() for i in rows])
    targets, tlens = model.encode_targets([utts[i].text for i in rows])
    assert g.keep.all()
    assert torch.equal(g.flens, flens) and torch.equal(g.tlens, tlens)
    assert torch.equal(g.targets, targets)
    for b, n in enumerate(flens.tolist()):  # padding beyond each row's length is zero in the bank
        torch.testing.assert_close(g.feats[b, :n], feats[b, :n], rtol=1e-5, atol=1e-5)
        assert not g.feats[b, n:].any()


def test_unreadable_audio_is_dropped_from_the_batches_that_draw_it(corpus, tmp_path):
    _, train, _, init_dir = corpus
    model = TransducerBackbone.from_pretrained(init_dir)
    utts = load_utterances(train)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not a wav file")
    utts[2] = type(utts[2])(utts[2].utt_id, str(bad), utts[2].text, utts[2].lang, utts[2].speaker, utts[2].duration)
    bank = FeatureBank.build(model, utts, jobs=1, progress=False)
    g = bank.gather([1, 2, 3])
    assert g.keep.tolist() == [True, False, True] and g.feats.shape[0] == 2


def test_cached_batch_gives_the_waveform_batch_loss(corpus):
    """Same rows, full context, no dropout: the index batch's loss equals the waveform batch's."""
    from asr_adapt.training.module import TransducerAdaptationModule

    _, train, _, init_dir = corpus
    module = TransducerAdaptationModule(model=str(init_dir), adapter=None, full_finetune=True, locales=LOCALES,
                                        full_context_steps=10)
    module.log = lambda *a, **k: None
    module.eval()  # no dropout; full context comes from full_context_steps
    utts = load_utterances(train)
    module.bank = FeatureBank.build(module.backbone, utts, progress=False)
    rows = [1, 6, 4]
    common = {"utt_ids": [utts[i].utt_id for i in rows], "texts": [utts[i].text for i in rows],
              "langs": [utts[i].lang for i in rows]}
    wav_loss = module.train_loss(common | {"wavs": [utts[i].load() for i in rows]})
    idx_loss = module.train_loss(common | {"index": torch.tensor(rows)})
    torch.testing.assert_close(idx_loss, wav_loss, rtol=1e-4, atol=1e-4)


def test_datamodule_feature_cache_yields_indices_and_refuses_waveform_augmentation(corpus):
    _, train, dev, _ = corpus
    dm = ASRDataModule(train=[str(train)], dev=[str(dev)], max_batch_seconds=3.0, num_workers=0, feature_cache=True)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    seen = torch.cat([b["index"] for b in batches])
    assert "wavs" not in batches[0] and len(seen) >= len(dm.train_utts)
    assert set(seen.tolist()) <= set(range(len(dm.train_utts)))
    with pytest.raises(ValueError, match="waveform augmentation"):
        ASRDataModule(train=[str(train)], feature_cache=True, augment={"noise_prob": 0.5})


def test_pretraining_with_feature_cache_and_time_budget_ends_on_a_validated_step(corpus, capsys):
    root, train, dev, init_dir = corpus
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 10_000, "val_check_interval": 3,
                    "check_val_every_n_epoch": None, "logger": False, "enable_progress_bar": False},
        "model": {"class_path": "asr_adapt.training.module.TransducerAdaptationModule",
                  "init_args": {"model": str(init_dir), "adapter": None, "full_finetune": True, "locales": LOCALES,
                                "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}},
                                "lr_scheduler": {"class_path": "asr_adapt.training.schedulers.WarmupCosine",
                                                 "init_args": {"warmup_steps": 1, "total_steps": 10_000}}}},
        "data": {"train": [str(train)], "dev": [str(dev)], "max_batch_seconds": 3.0, "num_workers": 0,
                 "feature_cache": True},
    }
    conf = root / "budget.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    exp = root / "exp_budget"
    # A tiny budget: the plan after calibration cannot fit another validation interval, so the
    # run stops at the next validated step instead of running to max_steps.
    assert run_train(["fit", "--config", str(conf), "--trainer.default_root_dir", str(exp), "--time-budget", "0.5",
                      "--flush-denormal"]) == 0
    assert _denormals_kept()  # the process-wide setting is restored when fitting ends
    history = [yaml.safe_load(line) for line in (exp / "checkpoints" / "history.jsonl").read_text().splitlines()]
    last = history[-1]["step"]
    assert last % 3 == 0 and last < 10_000
    ckpt = torch.load(exp / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["lr_schedulers"][0]["total_steps"] == last  # the schedule was fitted to the budget


def _denormals_kept() -> bool:
    tiny = torch.tensor([1e-40], dtype=torch.float64).float()  # a float32 denormal
    return bool((tiny * 1.0).item() != 0.0)


def test_flush_denormals_acts_on_cpu_fits_only_and_restores_the_process():
    cb = FlushDenormals()
    assert _denormals_kept()
    cb.on_fit_start(None, types.SimpleNamespace(device=torch.device("cpu")))
    try:
        assert cb.active and not _denormals_kept()
    finally:
        cb.on_fit_end(None, None)
    assert _denormals_kept() and not cb.active
    cb.on_fit_start(None, types.SimpleNamespace(device=torch.device("meta")))  # not the CPU: left alone
    assert not cb.active and _denormals_kept()


def _fake_trainer(step: int, every: int, scheduler) -> types.SimpleNamespace:
    epoch_loop = types.SimpleNamespace(max_steps=10_000)
    return types.SimpleNamespace(
        global_step=step, val_check_interval=every, is_global_zero=True, sanity_checking=False,
        fit_loop=types.SimpleNamespace(epoch_loop=epoch_loop),
        lr_scheduler_configs=[types.SimpleNamespace(scheduler=scheduler)],
    )


def test_time_budget_plan_fits_steps_and_validations_into_the_budget(monkeypatch):
    import asr_adapt.training.pacing as pacing

    sched = WarmupCosine(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 5, 10_000)
    now = [0.0]
    monkeypatch.setattr(pacing.time, "monotonic", lambda: now[0])
    cb = TimeBudget(100.0, calibrate_steps=20, skip_steps=10)
    trainer = _fake_trainer(0, 10, sched)
    cb.on_fit_start(trainer, None)
    cb.on_train_start(trainer, None)
    for step in range(1, 21):  # 0.5 s per step after the first ten (5 s of warm-up)
        now[0] += 0.5
        trainer.global_step = step
        cb.on_train_batch_end(trainer, None, None, None, step)
    # 90 s left at 0.5 s/step, no validation measured yet: 180 more steps -> 200, a multiple of 10.
    assert trainer.fit_loop.epoch_loop.max_steps == 200 and sched.total_steps == 200
    cb.on_validation_start(trainer, None)
    now[0] += 5.0  # one validation costs 5 s: every 10 steps cost 10 s instead of 5
    cb.on_validation_end(trainer, None)
    # (100 - 15 - 5 for the final validation) / (0.5 + 0.5) = 80 more steps -> 100
    assert trainer.fit_loop.epoch_loop.max_steps == 100 and sched.total_steps == 100


def test_warmup_cosine_total_steps_round_trips_through_its_state():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    a = WarmupCosine(opt, 2, 100)
    a.total_steps = 40
    for _ in range(30):
        opt.step()
        a.step()
    b = WarmupCosine(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 2, 100)
    b.load_state_dict(a.state_dict())
    assert b.total_steps == 40 and b._factor(30) == pytest.approx(a._factor(30))
    assert np.isclose(a.get_last_lr()[0], a._factor(30))


def test_spectral_envelope_adds_one_smooth_bounded_curve_per_utterance():
    from asr_adapt.training.augment import AugmentConfig, spectral_envelope

    feats = torch.randn(3, 80, 50)
    out = spectral_envelope(feats, 1.5, generator=torch.Generator().manual_seed(0))
    curve = out - feats  # (B, F, T): the same curve at every frame
    torch.testing.assert_close(curve, curve[:, :, :1].expand_as(curve))
    c = curve[:, :, 0]
    assert c.abs().max() <= 1.5 * sum(1 / k for k in range(1, 5)) + 1e-5
    assert (c[:, 1:] - c[:, :-1]).abs().max() < 0.3  # smooth over neighbouring mel bins
    assert not torch.allclose(c[0], c[1])  # a different envelope per utterance
    scale = torch.full((80,), 0.5)
    scaled = spectral_envelope(feats, 1.5, scale, generator=torch.Generator().manual_seed(0)) - feats
    torch.testing.assert_close(scaled, curve * 0.5)
    with pytest.raises(ValueError):
        AugmentConfig(spectral_envelope=-1.0)
    assert AugmentConfig(spectral_envelope=1.0).feature_level and not AugmentConfig(spectral_envelope=1.0).active


def test_cached_batches_get_the_envelope_in_normalised_units(corpus):
    """Bank features are after CMVN: the envelope is multiplied by CMVN's inverse std, so a raw
    (log-mel) curve means the same thing on both training paths."""
    from asr_adapt.training.module import TransducerAdaptationModule

    _, _, _, init_dir = corpus
    module = TransducerAdaptationModule(model=str(init_dir), adapter=None, full_finetune=True, locales=LOCALES,
                                        feature_augment={"spectral_envelope": 1.0})
    x = torch.zeros(2, module.backbone.config.n_mels, 7)
    torch.manual_seed(0)
    raw = module.augment_features(x)
    torch.manual_seed(0)
    normalised = module.augment_features(x, module.backbone.cmvn.istd)
    torch.testing.assert_close(normalised, raw * module.backbone.cmvn.istd[None, :, None])
