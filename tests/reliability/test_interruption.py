"""Case 3: interruption. `kill -9` during decode, training, a checkpoint write and a recipe
stage; a second run on a directory in use refuses with a clear message."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import soundfile as sf
import torch
import yaml

from asr_adapt.cli.main import main
from asr_adapt.fileio import atomic_torch_save, read_jsonl
from tests.reliability.helpers import FAST, REPO, cli_argv, cli_env, tone
from tests.training.helpers import make_data

POLL_S = 600  # upper bound while waiting for a subprocess to reach a point (never reached when healthy)


def wait_for(cond, proc: subprocess.Popen, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}:\n{out[-3000:]}")
        if time.monotonic() - t0 > POLL_S:
            proc.kill()
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def kill9(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def spawn(argv: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=cli_env(),
                            start_new_session=True, **kw)


# ---------------------------------------------------------------- decode


def test_kill_during_decode_then_rerun_gives_one_line_per_utterance(tmp_path, tiny_model, capsys):
    src = tmp_path / "in"
    src.mkdir()
    n = 24
    for i in range(n):
        sf.write(src / f"u{i:02d}.wav", tone(0.5 + 0.05 * i, seed=i), 16000)
    out = tmp_path / "out"
    args = ["decode", src, "-o", out, "--model", tiny_model, "--lang", "en", "--batch-size", "1", *FAST]
    proc = spawn(cli_argv(*args))
    hyp = out / "hyp.jsonl"
    wait_for(lambda: hyp.exists() and hyp.read_text().count("\n") >= 2, proc, "the first lines of hyp.jsonl")
    os.killpg(proc.pid, signal.SIGSTOP)  # hold it mid-run
    try:
        # A second run on the same output directory refuses at once, naming the holder.
        capsys.readouterr()
        assert main([str(a) for a in args]) == 2
        err = capsys.readouterr().err
        assert f"pid {proc.pid}" in err and "in use" in err and "Traceback" not in err
    finally:
        kill9(proc)
    partial = read_jsonl(hyp)
    assert 2 <= len(partial) < n
    assert main([str(a) for a in args]) == 0
    recs = read_jsonl(hyp)
    assert sorted(r["utt_id"] for r in recs) == [f"u{i:02d}" for i in range(n)]
    assert hyp.read_text().count("\n") == n  # exactly one line per utterance
    assert recs[: len(partial)] == partial  # completed lines were kept, not redone


# ---------------------------------------------------------------- training


@pytest.fixture(scope="module")
def train_conf(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("train-kill")
    train = make_data(root / "train", per_locale=4)
    dev = make_data(root / "dev", per_locale=1, seed=1)
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 6, "val_check_interval": 2,
                    "check_val_every_n_epoch": None, "logger": False, "enable_progress_bar": False},
        "model": {"class_path": "asr_adapt.training.module.WhisperAdaptationModule",
                  "init_args": {"model": str(tiny_model), "adapter": "lda", "locales": ["el-GR", "uk-UA"],
                                "adapter_groups": ["encoder"], "decode": {"max_new_tokens": 4, "min_window_s": 1.0},
                                "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}},
                                "lr_scheduler": {"class_path": "asr_adapt.training.schedulers.WarmupCosine",
                                                 "init_args": {"warmup_steps": 2, "total_steps": 8}}}},
        "data": {"train": [str(train)], "dev": [str(dev)], "max_batch_seconds": 2.0, "num_workers": 0},
    }
    conf = root / "conf.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    return conf


def _expected_lr(step: int) -> float:
    from asr_adapt.training.schedulers import WarmupCosine

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = WarmupCosine(opt, warmup_steps=2, total_steps=8)
    for _ in range(step):
        opt.step()
        sched.step()
    return sched.get_last_lr()[0]


def test_kill_during_training_then_resume(train_conf, tmp_path, capsys):
    exp = tmp_path / "exp"
    args = ["train", "fit", "--config", str(train_conf), "--trainer.default_root_dir", str(exp)]
    proc = spawn(cli_argv(*args))
    last = exp / "checkpoints" / "last.ckpt"
    wait_for(last.exists, proc, "the first checkpoint")
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        capsys.readouterr()
        assert main(args + ["--resume"]) == 2  # the experiment is in use: one line, no traceback
        err = capsys.readouterr().err
        assert f"pid {proc.pid}" in err and "Traceback" not in err
    finally:
        kill9(proc)
    # The last good checkpoint loads; it is a whole file, written atomically.
    ck = torch.load(last, weights_only=False)
    killed_at = ck["global_step"]
    assert killed_at in (2, 4) and ck["state_dict"]
    for f in (exp / "checkpoints").glob("*.ckpt"):  # no partial file at any final path
        if not f.name.startswith("."):
            assert torch.load(f, weights_only=False)["global_step"] > 0, f
    assert main(args) == 1  # without --resume an experiment with checkpoints is refused
    assert main(args + ["--resume"]) == 0
    ck = torch.load(last, weights_only=False)
    assert ck["global_step"] == 6
    sched = ck["lr_schedulers"][0]
    assert sched["last_epoch"] == 6  # the schedule continued from the checkpoint, not from 0
    assert math.isclose(sched["_last_lr"][0], _expected_lr(6), rel_tol=1e-6)
    steps = [r["step"] for r in read_jsonl(exp / "checkpoints" / "history.jsonl")]
    assert steps == [2, 4, 6]


# ---------------------------------------------------------------- checkpoint write

_SLOW_SAVE = r"""
import pathlib, sys, time, torch
from asr_adapt.fileio import atomic_torch_save

class Stall:
    # Pickled after the big tensor's record: the file is half written when this runs.
    def __reduce__(self):
        pathlib.Path(sys.argv[2]).write_text("writing")
        time.sleep(600)
        return (int, (0,))

atomic_torch_save({"step": 2, "big": torch.ones(4_000_000), "stall": Stall()}, sys.argv[1])
"""


def test_kill_during_checkpoint_write_keeps_the_previous_one(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1, "w": torch.arange(10.0)}, ckpt)
    marker = tmp_path / "writing"
    proc = spawn([sys.executable, "-c", _SLOW_SAVE, str(ckpt), str(marker)])
    wait_for(marker.exists, proc, "the checkpoint write to start")
    assert list(tmp_path.glob(".last.ckpt.*.tmp"))  # the new checkpoint is being written beside it
    kill9(proc)
    prev = torch.load(ckpt, weights_only=False)
    assert prev["step"] == 1 and torch.equal(prev["w"], torch.arange(10.0))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["last.ckpt", "writing"]


def test_error_during_checkpoint_write_leaves_no_partial_file(tmp_path, monkeypatch):
    ckpt = tmp_path / "step.ckpt"
    atomic_torch_save({"step": 1}, ckpt)
    real_save = torch.save

    def failing_save(obj, f, *a, **kw):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        atomic_torch_save({"step": 2}, ckpt)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(ckpt, weights_only=False) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["step.ckpt"]


# ---------------------------------------------------------------- recipe stage

_STAGES = """#!/usr/bin/env bash
set -euo pipefail
cd "$(dirname "$0")"
. {utils}/stage_lib.sh
stage=1
stop_stage=2
overwrite=false
. {utils}/parse_options.sh
if should_run 1 && need_run out/s1.done; then
  log "stage 1"; echo run >> ran1; mkdir -p out; echo a > out/s1.txt; touch out/s1.done
fi
if should_run 2 && need_run out/s2.done; then
  log "stage 2"; echo run >> ran2; touch out/s2.started
  while [ ! -f go ]; do sleep 0.1; done
  echo b > out/s2.txt; touch out/s2.done
fi
log done
"""


def test_kill_during_recipe_stage_then_restart_at_that_stage(tmp_path):
    script = tmp_path / "run.sh"
    script.write_text(_STAGES.format(utils=REPO / "egs" / "_template" / "utils"))
    script.chmod(0o755)
    proc = spawn(["bash", str(script)], cwd=tmp_path)
    wait_for((tmp_path / "out" / "s2.started").exists, proc, "stage 2 to start")
    kill9(proc)
    assert (tmp_path / "out" / "s1.done").exists() and not (tmp_path / "out" / "s2.done").exists()
    (tmp_path / "go").touch()
    r = subprocess.run(["bash", str(script), "--stage", "2"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "s2.txt").read_text() == "b\n" and (tmp_path / "out" / "s2.done").exists()
    r = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.count("skip:") == 2  # finished stages are skipped via .done
    assert (tmp_path / "ran1").read_text().count("run") == 1
    assert (tmp_path / "ran2").read_text().count("run") == 2  # the killed attempt + the restart


def test_atomic_directory_replaces_whole_or_not_at_all(tmp_path):
    """A failed build leaves the old directory as it was and no temporary; a finished one
    replaces it with the permissions of an ordinary directory (not mkdtemp's 0700)."""
    from asr_adapt.fileio import atomic_directory

    out = tmp_path / "model"
    out.mkdir()
    (out / "weights").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (out / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with atomic_directory(out) as tmp:
        (tmp / "weights").write_text("new")
    assert (out / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
