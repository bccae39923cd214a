"""Callbacks: adapter-only checkpoints + per-locale dev history at every validation,
and an experiment-directory lock.

Layout of an experiment directory ``EXP`` (``trainer.default_root_dir``)::

    EXP/config.yaml                 resolved training config
    EXP/checkpoints/step0000120.ckpt  adapter-only state + optimizer/scheduler (atomic)
    EXP/checkpoints/last.ckpt         the most recent one (for --resume)
    EXP/checkpoints/history.jsonl     one line per validation: step, ckpt, per-locale WER/CER,
                                      wall_s (training + validation wall time so far, across resumes),
                                      utt_errors (the file below)
    EXP/checkpoints/dev_utts/step0000120.json  per-utterance dev word errors per locale (atomic)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from asr_adapt.fileio import JsonlAppender, atomic_write, dir_lock, read_jsonl

log = logging.getLogger(__name__)


def checkpoint_dir(trainer: L.Trainer) -> Path:
    return Path(trainer.default_root_dir) / "checkpoints"


class LocaleCheckpoint(Callback):
    """After every validation: save ``step{N}.ckpt`` + ``last.ckpt`` and append the dev history."""

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath
        self._wall_before = 0.0  # wall seconds of earlier runs of this experiment (restored on resume)
        self._t0: float | None = None
        self._wall_at_save: float | None = None  # while saving: the value its history line also gets

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        self._t0 = time.monotonic()

    def wall_s(self) -> float:
        """Wall-clock seconds spent fitting (training + validation), summed over resumed runs."""
        return self._wall_before + (0.0 if self._t0 is None else time.monotonic() - self._t0)

    # Saved in every checkpoint, so a resumed run keeps counting instead of restarting from zero.
    def state_dict(self) -> dict:
        return {"wall_s": self.wall_s() if self._wall_at_save is None else self._wall_at_save}

    def load_state_dict(self, state_dict: dict) -> None:
        self._wall_before = float(state_dict.get("wall_s", 0.0))

    def _dir(self, trainer: L.Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else checkpoint_dir(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        d = self._dir(trainer)
        step = trainer.global_step
        name = f"step{step:07d}.ckpt"
        wall = self._wall_at_save = round(self.wall_s(), 1)
        try:
            trainer.save_checkpoint(d / name)  # every rank must call it (collective under DDP)
        finally:
            self._wall_at_save = None
        if trainer.is_global_zero:
            _atomic_link(d / name, d / "last.ckpt")
            metrics = getattr(pl_module, "last_dev_metrics", {})
            done_steps = {r.get("step") for r in read_jsonl(d / "history.jsonl")}
            if step not in done_steps:  # a resumed run may re-validate a step it already logged
                utt_file = None
                if utt_errors := getattr(pl_module, "last_dev_utt_errors", None):
                    # Written before the history line that names it, so a named file always exists.
                    utt_file = f"dev_utts/step{step:07d}.json"
                    atomic_write(d / utt_file, json.dumps(utt_errors, ensure_ascii=False))
                val_loss = trainer.callback_metrics.get("val/loss")
                rec = {
                    "step": step,
                    "epoch": trainer.current_epoch,
                    "ckpt": name,
                    "val_loss": None if val_loss is None else float(val_loss),
                    "locales": metrics,
                    "macro_wer": (sum(m["wer"] for m in metrics.values()) / len(metrics)) if metrics else None,
                    "wall_s": wall,
                    "utt_errors": utt_file,
                }
                with JsonlAppender(d / "history.jsonl") as w:
                    w.write(rec)
                write_history_csv(d / "history.jsonl", d / "history.csv")
            summary = "  ".join(f"{loc} {m['wer']:.1f}" for loc, m in metrics.items())
            log.info("step %d dev WER: %s", step, summary)


def write_history_csv(jsonl: Path, out: Path) -> None:
    """Wide CSV of the history (step, epoch, wall_s, val_loss, macro_wer, wer/<loc>, cer/<loc>) for spreadsheets."""
    hist = read_jsonl(jsonl)
    locs = sorted({loc for r in hist for loc in r.get("locales", {})})
    header = ["step", "epoch", "wall_s", "val_loss", "macro_wer"] + [f"{m}/{loc}" for loc in locs for m in ("wer", "cer")]
    lines = [",".join(header)]
    for r in hist:
        row = [r["step"], r["epoch"], r.get("wall_s"), r.get("val_loss"), r.get("macro_wer")]
        for loc in locs:
            m = r.get("locales", {}).get(loc, {})
            row += [m.get("wer"), m.get("cer")]
        lines.append(",".join("" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v)) for v in row))
    atomic_write(out, "\n".join(lines) + "\n")


def _atomic_link(src: Path, dst: Path) -> None:
    """Point ``dst`` at ``src``'s content atomically (hard link, else copy), never half-written."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


class ExperimentLock(Callback):
    """Refuses a second concurrent run on the same experiment directory."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if trainer.is_global_zero and stage == "fit":
            self._stack.enter_context(dir_lock(trainer.default_root_dir, what="training"))

    def teardown(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        self._stack.close()
