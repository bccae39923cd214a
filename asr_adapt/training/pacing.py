"""Wall-clock pacing of a training run: throughput logging and a fixed time budget.

* :class:`Throughput` logs training steps per second (validation excluded), and on a GPU the
  device utilisation and peak memory, every ``every`` steps, so "is a step GPU-bound?" is
  answered by the run's own log (``train/steps_per_s``, ``train/gpu_util``).
* :class:`TimeBudget` trains for a wall-clock budget instead of a step count: after a few
  calibration steps it measures the step rate (and, once seen, the cost of a validation) and
  sets ``max_steps`` and the learning-rate schedule's ``total_steps`` so that the warm-up and
  the decay fit inside the budget; it re-plans after every validation. The planned end is
  rounded down to a validation step, so the last step is always validated and checkpointed.
  A run stopped at a step count would end with its learning rate mid-schedule.
* :class:`FlushDenormals` flushes denormal floats to zero while a CPU run fits: x86 handles
  them in microcode, and a transducer step makes many (probabilities of very unlikely symbols),
  which cost 1.2-1.6x per step (egs/synth_tail/asr2/RESULTS.md section 3h).
"""

from __future__ import annotations

import logging
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class _StepClock:
    """Wall seconds spent in training steps (validation time excluded) and per validation."""

    def __init__(self) -> None:
        self.train_s = 0.0
        self.steps = 0
        self.val_s: list[float] = []
        self._t: float | None = None
        self._val_t: float | None = None

    def start(self) -> None:
        self._t = time.monotonic()

    def stop_step(self) -> None:
        if self._t is not None:
            now = time.monotonic()
            self.train_s += now - self._t
            self.steps += 1
            self._t = now

    def start_val(self) -> None:
        self._val_t = time.monotonic()

    def stop_val(self) -> None:
        if self._val_t is not None:
            self.val_s.append(time.monotonic() - self._val_t)
            self._val_t = None
        self._t = time.monotonic()  # the next step's time starts after validation


class _Clocked(Callback):
    """A callback that times training steps and validations (:class:`_StepClock`) and then
    runs :meth:`after_step` / :meth:`after_validation`."""

    def __init__(self) -> None:
        self.clock = _StepClock()

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self.clock.start()

    def on_validation_start(self, trainer, pl_module) -> None:
        self.clock.start_val()

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        self.clock.stop_val()
        if not trainer.sanity_checking:
            self.after_validation(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.clock.stop_step()
        self.after_step(trainer, pl_module)

    def after_step(self, trainer: L.Trainer, pl_module) -> None:
        pass

    def after_validation(self, trainer: L.Trainer) -> None:
        pass


class Throughput(_Clocked):
    """Logs ``train/steps_per_s`` (and ``train/gpu_util`` %, ``train/gpu_mem_gb`` on CUDA) every ``every`` steps."""

    def __init__(self, every: int = 50) -> None:
        super().__init__()
        self.every = max(1, every)
        self._mark = (0, 0.0)

    def after_step(self, trainer: L.Trainer, pl_module) -> None:
        steps, secs = self.clock.steps - self._mark[0], self.clock.train_s - self._mark[1]
        if steps < self.every or secs <= 0:
            return
        self._mark = (self.clock.steps, self.clock.train_s)
        rate = steps / secs
        metrics = {"train/steps_per_s": rate}
        if pl_module.device.type == "cuda":
            try:
                metrics["train/gpu_util"] = float(torch.cuda.utilization(pl_module.device))
            except Exception:  # no NVML on this machine: the rate alone
                pass
            metrics["train/gpu_mem_gb"] = torch.cuda.max_memory_allocated(pl_module.device) / 1e9
        pl_module.log_dict(metrics, rank_zero_only=True)
        if trainer.is_global_zero:
            log.info("step %d: %s", trainer.global_step, "  ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in metrics.items()))


class TimeBudget(_Clocked):
    """Fit ``max_steps`` and the scheduler's ``total_steps`` to ``seconds`` of wall time.

    Args:
        seconds: wall-clock budget of this fit (training + validation), from its start.
        calibrate_steps: steps measured before the first plan (the first few, with
            compilation and allocator warm-up, are skipped: ``skip_steps``).
        reserve_s: seconds kept free at the end (the last validation and checkpoint).
    """

    def __init__(self, seconds: float, calibrate_steps: int = 60, skip_steps: int = 10, reserve_s: float = 0.0) -> None:
        if seconds <= 0:
            raise ValueError("the time budget must be positive")
        super().__init__()
        self.seconds = seconds
        self.calibrate_steps = max(calibrate_steps, skip_steps + 1)
        self.skip_steps = skip_steps
        self.reserve_s = reserve_s
        self._t0 = 0.0
        self._skip_s = 0.0
        self.planned: int | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        self._t0 = time.monotonic()

    def after_validation(self, trainer: L.Trainer) -> None:
        if self.planned is not None:
            self._plan(trainer)

    def after_step(self, trainer: L.Trainer, pl_module) -> None:
        if self.clock.steps == self.skip_steps:
            self._skip_s = self.clock.train_s
        if self.planned is None and self.clock.steps >= self.calibrate_steps:
            self._plan(trainer)

    def _plan(self, trainer: L.Trainer) -> None:
        measured = self.clock.steps - self.skip_steps
        step_s = (self.clock.train_s - self._skip_s) / max(1, measured)
        every = trainer.val_check_interval if isinstance(trainer.val_check_interval, int) else 0
        val_s = sum(self.clock.val_s) / len(self.clock.val_s) if self.clock.val_s else 0.0
        left_s = self.seconds - (time.monotonic() - self._t0) - self.reserve_s - val_s  # the final validation
        per_step = step_s + (val_s / every if every else 0.0)
        step = trainer.global_step
        total = step + max(0, int(left_s / per_step))
        if every:
            # End on a validation step; when none fits any more: stop now if this step was
            # validated, else run on to the next one (a little over budget beats an unvalidated end).
            total = (total // every) * every
            if total <= step:
                total = step if step % every == 0 else (step // every + 1) * every
        total = max(total, step)
        trainer.fit_loop.epoch_loop.max_steps = total
        for cfg in trainer.lr_scheduler_configs:
            if hasattr(cfg.scheduler, "total_steps"):
                cfg.scheduler.total_steps = total
        if trainer.is_global_zero and total != self.planned:
            log.info("time budget %.0f s: %.3f s/step, %.1f s/validation -> max_steps %d (now at %d)",
                     self.seconds, step_s, val_s, total, step)
        self.planned = total


class FlushDenormals(Callback):
    """Flush denormal floats to zero (x86 FTZ/DAZ) from fit start to fit end, on the CPU only.

    Values below ~1.2e-38 (float32) become 0: far below anything a weight, gradient or Adam
    moment carries meaningfully, so training is unchanged in effect, not bit for bit. GPUs
    flush in their own kernels; there the setting does nothing, so it is left alone."""

    def __init__(self) -> None:
        self.active = False

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        if pl_module.device.type != "cpu":
            return
        self.active = torch.set_flush_denormal(True)
        if not self.active:
            log.warning("this CPU cannot flush denormals (no SSE3); training runs without it")

    def on_fit_end(self, trainer: L.Trainer, pl_module) -> None:
        # The setting is process-wide: leave the process as it was found.
        if self.active:
            torch.set_flush_denormal(False)
            self.active = False

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        self.on_fit_end(trainer, pl_module)  # an interrupted fit restores the process too
