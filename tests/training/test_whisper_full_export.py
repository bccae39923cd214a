"""Full fine-tuning of a (tiny) Whisper: the best checkpoint exports to a model directory that
loads back with the checkpoint's weights (the comparison baseline of the recipes)."""

from __future__ import annotations

import torch
import yaml

from asr_adapt.cli.main import main
from asr_adapt.models.whisper import WhisperBackbone
from asr_adapt.training.cli import run_train
from tests.training.helpers import make_data, tiny_whisper_dir


def test_full_finetune_exports_and_reloads(tmp_path):
    model = tiny_whisper_dir(tmp_path / "tiny")
    train = make_data(tmp_path / "train", per_locale=2)
    dev = make_data(tmp_path / "dev", per_locale=1, seed=1)
    cfg = {
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 2, "val_check_interval": 1,
                    "check_val_every_n_epoch": None, "logger": False, "enable_progress_bar": False},
        "model": {"class_path": "asr_adapt.training.module.WhisperAdaptationModule",
                  "init_args": {"model": str(model), "adapter": None, "full_finetune": True,
                                "locales": ["el-GR", "uk-UA"], "decode": {"max_new_tokens": 4},
                                "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}}}},
        "data": {"train": [str(train)], "dev": [str(dev)], "max_batch_seconds": 4.0, "num_workers": 0},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    exp = tmp_path / "exp"
    assert run_train(["fit", "--config", str(tmp_path / "c.yaml"), "--trainer.default_root_dir", str(exp)]) == 0
    ckpt = exp / "checkpoints" / "step0000002.ckpt"
    out = tmp_path / "ft"
    assert main(["init-model", "--backbone", "whisper", "--from-checkpoint", str(ckpt), "--init-dir", str(model),
                 "-o", str(out)]) == 0
    state = {k[len("backbone."):]: v for k, v in torch.load(ckpt, weights_only=False)["state_dict"].items()}
    reloaded = WhisperBackbone.from_pretrained(str(out)).state_dict()
    base = WhisperBackbone.from_pretrained(str(model)).state_dict()
    assert all(torch.equal(reloaded[k], v) for k, v in state.items())
    assert any(not torch.equal(base[k], v) for k, v in state.items())  # training changed the weights
