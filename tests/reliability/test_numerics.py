"""Case 4: numerical faults. A NaN/inf loss batch is skipped and counted and leaves the
adapters untouched; gradient clipping is on by default in `asr-adapt train`."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
import yaml

from asr_adapt.cli.main import main
from asr_adapt.models.whisper import WhisperBackbone
from asr_adapt.training.datamodule import ASRDataModule
from asr_adapt.training.module import WhisperAdaptationModule
from tests.training.helpers import make_data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("numerics")
    return make_data(root / "train", per_locale=2), make_data(root / "dev", per_locale=1, seed=1)


def _fit(module, train, dev, root, batches: int) -> None:
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=batches, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(root), use_distributed_sampler=False)
    data = ASRDataModule(train=[str(train)], dev=[str(dev)], locales=["el-GR", "uk-UA"], max_batch_seconds=1.0,
                         num_workers=0)
    trainer.fit(module, datamodule=data)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_batch_is_skipped_and_counted(data, tiny_model, tmp_path, monkeypatch, bad):
    train, dev = data
    L.seed_everything(0)
    module = WhisperAdaptationModule(model=str(tiny_model), locales=["el-GR", "uk-UA"], adapter="lora",
                                     adapter_conf={"rank": 2}, adapter_groups=["encoder.attn"])
    before = {k: v.clone() for k, v in module.state_dict().items()}
    real = WhisperBackbone.compute_loss
    calls = []

    def loss_with_fault(self, *a, **kw):
        loss = real(self, *a, **kw)
        calls.append(1)
        return loss * bad if len(calls) == 1 else loss  # only the first batch is broken

    monkeypatch.setattr(WhisperBackbone, "compute_loss", loss_with_fault)
    _fit(module, train, dev, tmp_path, batches=1)
    assert module.skipped_batches == 1
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the adapters never saw it
    _fit(module, train, dev, tmp_path, batches=1)  # the next (finite) batch trains
    assert module.skipped_batches == 1
    assert any(not torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert all(torch.isfinite(v).all() for v in module.state_dict().values())


def test_gradient_clipping_is_on_by_default(data, tiny_model, tmp_path, monkeypatch, capsys):
    """`asr-adapt train` with SGD(lr=1) on a loss scaled by 1e4: the gradient norm before
    clipping is huge, the update it makes is at most the default clip value (1.0)."""
    train, dev = data
    probe = tmp_path / "probe.json"
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 2, "limit_val_batches": 0, "logger": False,
                    "enable_progress_bar": False,
                    "callbacks": [{"class_path": "tests.reliability.probes.UpdateProbe", "init_args": {"out": str(probe)}}]},
        "model": {"class_path": "asr_adapt.training.module.WhisperAdaptationModule",
                  "init_args": {"model": str(tiny_model), "adapter": "lora", "adapter_conf": {"rank": 2},
                                "locales": ["el-GR", "uk-UA"], "adapter_groups": ["encoder.attn"],
                                "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 1.0}}}},
        "data": {"train": [str(train)], "dev": [str(dev)], "max_batch_seconds": 1.0, "num_workers": 0},
    }
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as e:
        main(["train", "fit", "--config", str(conf), "--print_config"])
    assert e.value.code in (0, None)
    assert yaml.safe_load(capsys.readouterr().out)["trainer"]["gradient_clip_val"] == 1.0
    real = WhisperBackbone.compute_loss
    monkeypatch.setattr(WhisperBackbone, "compute_loss", lambda self, *a, **kw: real(self, *a, **kw) * 1e4)
    assert main(["train", "fit", "--config", str(conf), "--trainer.default_root_dir", str(tmp_path / "exp")]) == 0
    rows = json.loads(probe.read_text())
    assert len(rows) == 2
    for r in rows:
        assert r["grad_norm"] > 10.0  # would have moved the weights that far without clipping
        assert r["update_norm"] <= 1.0 + 1e-4
