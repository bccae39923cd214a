"""Lightning training end to end on a tiny Whisper: fit, history, adapter-only checkpoints,
resume, refusal to overwrite, checkpoint-wise merge into a loadable bundle."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from asr_adapt.training.cli import run_train
from tests.training.helpers import make_data, tiny_whisper_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    model = tiny_whisper_dir(root / "tiny")
    train = make_data(root / "train", per_locale=4)
    dev = make_data(root / "dev", per_locale=2, seed=1)
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 4, "val_check_interval": 2,
                    "check_val_every_n_epoch": None, "logger": False, "enable_progress_bar": False},
        "model": {"class_path": "asr_adapt.training.module.WhisperAdaptationModule",
                  "init_args": {"model": str(model), "adapter": "lda", "locales": ["el-GR", "uk-UA"],
                                "adapter_groups": ["encoder"],
                                "decode": {"max_new_tokens": 8},
                                "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}},
                                "lr_scheduler": {"class_path": "asr_adapt.training.schedulers.WarmupCosine",
                                                 "init_args": {"warmup_steps": 2, "total_steps": 8}}}},
        "data": {"train": [str(train)], "dev": [str(dev)], "max_batch_seconds": 4.0, "num_workers": 0},
    }
    conf = root / "conf.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    return root, conf


def _history(exp):
    return [json.loads(line) for line in (exp / "checkpoints" / "history.jsonl").read_text().splitlines()]


def test_fit_resume_merge(setup, capsys):
    root, conf = setup
    exp = root / "exp"
    args = ["fit", "--config", str(conf), "--trainer.default_root_dir", str(exp)]
    assert run_train(args) == 0
    hist = _history(exp)
    assert [r["step"] for r in hist] == [2, 4]
    assert set(hist[0]["locales"]) == {"el-GR", "uk-UA"}
    assert all(0 <= m["wer"] for r in hist for m in r["locales"].values())
    # Per-utterance dev word errors beside each validation; they add up to that step's WER.
    for r in hist:
        utts = json.loads((exp / "checkpoints" / r["utt_errors"]).read_text())
        for loc, m in r["locales"].items():
            assert len(utts[loc]["utt"]) == m["n"] == 2
            assert 100.0 * sum(utts[loc]["err"]) / sum(utts[loc]["ref"]) == pytest.approx(m["wer"])
    assert (exp / "config.yaml").exists() and (exp / "checkpoints" / "history.csv").exists()

    # Adapter-only checkpoints: only trainable (adapter) tensors, plus optimizer state for resume.
    ck = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=False)
    assert ck["state_dict"] and all(".lda_adapters." in k for k in ck["state_dict"])
    assert ck["global_step"] == 4 and ck["optimizer_states"]
    lr_before = ck["lr_schedulers"][0]["last_epoch"]

    # Without --resume an experiment with checkpoints is refused; with it, the step continues.
    assert run_train(args) == 1
    assert run_train(args + ["--resume", "--trainer.max_steps", "6"]) == 0
    hist = _history(exp)
    assert [r["step"] for r in hist] == [2, 4, 6]
    # Training wall time is cumulative: the resumed run continues the count it saved at step 4.
    walls = [r["wall_s"] for r in hist]
    assert 0 < walls[0] < walls[1] < walls[2]
    ck = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=False)
    assert ck["global_step"] == 6 and ck["lr_schedulers"][0]["last_epoch"] == lr_before + 2

    # Checkpoint-wise merge picks each locale's best step and writes a loadable bundle.
    from asr_adapt.adapters import adapter_locales
    from asr_adapt.loading import load_model
    from asr_adapt.training.bundle import merge_experiment

    choices = merge_experiment(exp, root / "bundle", policy="best")
    for loc, ch in choices.items():
        best = min(hist, key=lambda r: (r["locales"][loc]["wer"], -r["step"]))
        assert ch.steps == (best["step"],)
    prov = json.loads((root / "bundle" / "provenance.json").read_text())
    assert set(prov["locales"]) == {"el-GR", "uk-UA"}
    assert (root / "bundle" / "dev_wer_curves.png").stat().st_size > 1000
    from asr_adapt.adapters import decode_hints

    assert decode_hints(root / "bundle") == {"min_window_s": 10.0}  # the window it was trained at
    teacher = load_model("whisper", str(root / "tiny"), str(root / "bundle"))
    assert set(adapter_locales(teacher)) == {"el-GR", "uk-UA"}
    _check_system_cost(root, exp, hist)
    _check_merge_cli(root, exp, hist, capsys)


def _check_merge_cli(root, exp, hist, capsys):
    """The guarded merge from the command line: best-macro checkpoint unless a gain is significant."""
    from asr_adapt.cli.main import main

    out = root / "bundle_sig"
    assert main(["merge", str(exp), "-o", str(out), "--policy", "best-significant"]) == 0
    assert "P(own best > best macro)" in capsys.readouterr().out
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["policy"] == "best-significant" and prov["min_prob"] == 0.95
    # Expected, worked out here from the dev history (not by the merge code): the checkpoint with
    # the best macro-average WER for every locale, except a locale whose own best checkpoint is
    # better with P(improve) >= 0.95 (then that one).
    macro = min(hist, key=lambda r: (sum(m["wer"] for m in r["locales"].values()) / len(r["locales"]), -r["step"]))
    for loc, picked in prov["locales"].items():
        own = min(hist, key=lambda r: (r["locales"][loc]["wer"], -r["step"]))
        significant = picked.get("p_improve", 0.0) >= 0.95
        assert tuple(picked["steps"]) == ((own["step"],) if significant else (macro["step"],)), loc
    with pytest.raises(SystemExit, match="min-prob"):
        main(["merge", str(exp), "-o", str(out), "--overwrite", "--policy", "best-significant", "--min-prob", "0"])


def _check_system_cost(root, exp, hist):
    """Training cost of a bundle: its runs' wall time, teachers included; parameters per locale."""
    from asr_adapt.adapters.report import adapter_info
    from asr_adapt.training.cost import system_cost

    cost = system_cost(root / "bundle")
    assert cost.runs == (str(exp),) and cost.wall_s == hist[-1]["wall_s"]
    assert cost.params_per_locale == {r["params"] for r in adapter_info(root / "bundle")}.pop() > 0
    assert cost.shared_params == 0  # LDA shares nothing
    # A student initialised from that bundle: its cost adds the teacher's run before its own.
    student = root / "student"
    (student / "checkpoints").mkdir(parents=True)
    (student / "config.yaml").write_text(yaml.safe_dump({"model": {"init_args": {"init_adapters": str(root / "bundle")}}}))
    (student / "checkpoints" / "history.jsonl").write_text(json.dumps(dict(hist[-1], wall_s=5.0)) + "\n")
    sb = _bundle_naming(root / "student_bundle", root / "bundle", exp, student)
    cost = system_cost(sb)
    assert cost.runs == (str(exp), str(student)) and cost.wall_s == hist[-1]["wall_s"] + 5.0
    # A teacher chain that loops back (retrained from its own bundle) counts each run once.
    (student / "config.yaml").write_text(yaml.safe_dump({"model": {"init_args": {"init_adapters": str(sb)}}}))
    assert system_cost(sb).runs == (str(exp), str(student))
    assert system_cost("").wall_s == 0 and system_cost("").params_per_locale == 0
    # A whole exported model (full fine-tuning): one set of parameters shared by every locale.
    model = root / "full_model"
    model.mkdir()
    (model / "foundation.json").write_text(json.dumps(
        {"made_by": "export", "checkpoint": str(exp / "checkpoints" / "last.ckpt"), "parameters": 1234}))
    cost = system_cost(model)
    assert cost.params_cell() == "1,234 shared" and cost.wall_s == hist[-1]["wall_s"]
    # A run whose history has no wall time (trained before it was recorded) makes the total unknown.
    (student / "checkpoints" / "history.jsonl").write_text(json.dumps(hist[-1] | {"wall_s": None}) + "\n")
    assert system_cost(sb).wall_s is None
    with pytest.raises(ValueError, match="training experiment not found"):
        system_cost(_bundle_naming(root / "gone_bundle", root / "bundle", root / "no_such_exp"))
    with pytest.raises(ValueError, match="neither an adapter bundle"):
        system_cost(student)


def _bundle_naming(out, like, *exps):
    """A bundle with ``like``'s adapters whose provenance names the experiments ``exps``."""
    out.mkdir()
    (out / "adapter_config.json").write_text((like / "adapter_config.json").read_text())
    (out / "provenance.json").write_text(json.dumps({"experiments": [str(e) for e in exps]}))
    return out


def test_resume_without_checkpoint_fails(setup, capsys):
    root, conf = setup
    rc = run_train(["fit", "--config", str(conf), "--trainer.default_root_dir", str(root / "empty"), "--resume"])
    assert rc == 1
    assert "does not exist" in capsys.readouterr().err
