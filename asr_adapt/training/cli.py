"""``asr-adapt train {fit,validate} --config recipes/....yaml [--overrides]`` via LightningCLI.

Everything (backbone, adapter, optimizer, scheduler, data, trainer incl. DDP strategy) comes
from the YAML config; command-line ``--model.init_args.adapter_conf.rank 16`` style
overrides work as in any LightningCLI. Two additions:

* ``--resume`` continues from ``<default_root_dir>/checkpoints/last.ckpt`` and fails loudly
  when there is none;
* without ``--resume`` an experiment directory that already has checkpoints is refused
  (``--overwrite`` starts over), so finished work is never silently replaced;
* ``--time-budget SECONDS`` trains for a wall-clock budget: the step count and the
  learning-rate schedule are fitted to it from the measured step rate
  (:class:`~asr_adapt.training.pacing.TimeBudget`).

Steps per second (and GPU utilisation on a GPU) are logged every 50 steps.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from asr_adapt.training.callbacks import ExperimentLock, LocaleCheckpoint, checkpoint_dir
from asr_adapt.training.checkpoint_io import AtomicCheckpointIO
from asr_adapt.training.datamodule import ASRDataModule
from asr_adapt.training.module import AdaptationModule
from asr_adapt.training.pacing import FlushDenormals, Throughput, TimeBudget

USAGE = """usage: asr-adapt train {fit,validate} --config CONFIG.yaml [--resume] [--overwrite] [LightningCLI overrides]

Train per-locale adapters on a frozen backbone. The config names the module
(asr_adapt.training.module.WhisperAdaptationModule or TransducerAdaptationModule), the
adapter (lda, lora, s2lora), optimizer/scheduler, data dirs and trainer settings
(set trainer.strategy: ddp and trainer.devices/num_nodes for multi-GPU). Checkpoints,
the per-locale dev history and the resolved config go to trainer.default_root_dir.
Run `asr-adapt train fit --help` for every option.
"""


class ExperimentConfigSaver(SaveConfigCallback):
    """Writes the resolved config to ``<default_root_dir>/config.yaml`` (next to the checkpoints)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.is_global_zero:
            out = Path(trainer.default_root_dir) / self.config_filename
            out.parent.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, out, skip_none=False, overwrite=True, multifile=False)


class AdaptCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
        parser.add_argument("--overwrite", action="store_true", help="delete existing checkpoints and start over")
        parser.add_argument("--time-budget", type=float, default=None,
                            help="train for this many wall seconds: max_steps and the scheduler's total_steps "
                                 "are fitted to the budget from the measured step rate")
        parser.add_argument("--flush-denormal", action="store_true",
                            help="on the CPU, flush denormal floats to zero while fitting (a transducer step "
                                 "ran 1.2-1.6x faster on an Intel CPU); results change in the last bits, not in effect")


def run_train(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in ("fit", "validate"):
        print(USAGE, file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    cmd, rest = argv[0], argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        cli = _build_cli(rest)
    except ValueError as e:
        # A config value the model or data module rejects (an unknown adapter type lists the
        # known ones): the message, without a traceback through jsonargparse.
        print(f"error: invalid config: {e}", file=sys.stderr)
        return 2
    trainer, cfg = cli.trainer, cli.config
    if cfg.get("time_budget"):
        trainer.callbacks.append(TimeBudget(cfg["time_budget"]))
    if cfg.get("flush_denormal"):
        trainer.callbacks.append(FlushDenormals())
    trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    ckpt_dir = checkpoint_dir(trainer)
    last = ckpt_dir / "last.ckpt"
    ckpt_path = None
    if cmd == "fit":
        if cfg.get("resume"):
            if not last.exists():
                print(f"error: --resume given but {last} does not exist; start without --resume", file=sys.stderr)
                return 1
            ckpt_path = str(last)
        elif last.exists():
            if not cfg.get("overwrite"):
                print(f"error: {ckpt_dir} already has checkpoints; pass --resume to continue "
                      "or --overwrite to start over", file=sys.stderr)
                return 1
            shutil.rmtree(ckpt_dir)
        trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    else:
        trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=str(last) if last.exists() else None)
    return 0


def _build_cli(rest: list[str]) -> AdaptCLI:
    return AdaptCLI(
        AdaptationModule,
        ASRDataModule,
        subclass_mode_model=True,
        run=False,
        args=rest,
        save_config_callback=ExperimentConfigSaver,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "callbacks": [LocaleCheckpoint(), ExperimentLock(), Throughput()],
            "enable_checkpointing": False,
            "num_sanity_val_steps": 0,
            "gradient_clip_val": 1.0,
            # Our batch samplers shard per rank themselves (no padding duplicates).
            "use_distributed_sampler": False,
        },
    )
