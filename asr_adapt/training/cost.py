"""What a trained system cost: trainable parameters per locale and training wall time.

A *system* is what gets decoded, given as one of

* nothing (``""``): the zero-shot base, no training;
* an adapter bundle (``asr-adapt merge`` output, ``adapter_config.json`` + ``provenance.json``);
* an exported whole model (full fine-tuning; its ``foundation.json`` names the checkpoint).

Training time is the ``wall_s`` of the last validation in each run's ``history.jsonl``
(training + validation, summed over resumes), added up over every run behind the system:
the experiments its checkpoints come from and, through ``init_adapters`` in their
``config.yaml``, the teachers those started from (noisy-student generations). Not counted:
pseudo-labelling between generations, set-up before the first step, steps after the last
validation, and work a killed run lost after its last checkpoint.

Experiment paths are stored as they were given when training and merging (the recipes give
them relative to the recipe directory), so costs are computed from that directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from asr_adapt.training.bundle import experiment_model_config
from asr_adapt.training.ckpt_merge import history_path, load_history
from asr_adapt.training.foundation import read_provenance


@dataclass(frozen=True)
class SystemCost:
    params_per_locale: int | None  # trainable parameters one locale adds; None: one model for all (full FT)
    shared_params: int  # trained once for all locales (S2-LoRA's shared A/B; the whole model in full FT)
    wall_s: float | None  # None when some run behind the system did not record its wall time
    runs: tuple[str, ...]  # training experiments behind it, teachers first

    def params_cell(self) -> str:
        """``289,032``; ``1,536 (+ 98,304 shared)``; ``72,593,920 shared``."""
        if self.params_per_locale is None:
            return f"{self.shared_params:,} shared"
        cell = f"{self.params_per_locale:,}"
        return cell + (f" (+ {self.shared_params:,} shared)" if self.shared_params else "")


def system_cost(source: str | Path | None) -> SystemCost:
    """Cost of the system decoded from ``source`` (see the module docstring for what it may be).

    Raises ``ValueError`` for a source that is none of those, or that names a training
    experiment which does not exist from the current directory.
    """
    if not source:
        return SystemCost(0, 0, 0.0, ())
    src = Path(source)
    if (src / "adapter_config.json").exists():
        return _bundle_cost(src)
    info = read_provenance(src)
    if info:
        # A model exported from a training checkpoint; an `init` model was never trained here.
        runs = _runs_behind([Path(info["checkpoint"]).parent.parent]) if info.get("checkpoint") else ()
        return SystemCost(None, int(info.get("parameters", 0)), _wall(runs) if runs else None, runs)
    raise ValueError(f"{src}: neither an adapter bundle (adapter_config.json) nor an exported model "
                     "(foundation.json); give the output of `asr-adapt merge` or `asr-adapt init-model`")


def _bundle_cost(bundle: Path) -> SystemCost:
    from asr_adapt.adapters.report import adapter_info

    per_locale: dict[str, int] = {}
    shared = 0
    for row in adapter_info(bundle):
        if row["locale"] == "(shared)":
            shared += row["params"]
        else:
            per_locale[row["locale"]] = per_locale.get(row["locale"], 0) + row["params"]
    runs = _runs_behind(_bundle_experiments(bundle))
    return SystemCost(max(per_locale.values(), default=0), shared, _wall(runs), runs)


def _bundle_experiments(bundle: Path) -> list[Path]:
    prov = bundle / "provenance.json"
    return [Path(e) for e in json.loads(prov.read_text(encoding="utf-8")).get("experiments", [])] if prov.exists() else []


def _runs_behind(exps: list[Path], seen: set[Path] | None = None) -> tuple[str, ...]:
    """``exps`` and, recursively, the runs of the bundles they were initialised from; teachers
    first, each run once (however it is spelled), cycles cut."""
    seen = set() if seen is None else seen
    out: list[str] = []
    for exp in exps:
        key = exp.resolve()
        if key in seen:
            continue
        seen.add(key)
        if not exp.is_dir():
            raise ValueError(f"{exp}: training experiment not found from {Path.cwd()}; run from the directory "
                             "the systems were trained in (e.g. the recipe directory)")
        has_config = (exp / "config.yaml").exists()
        init = (experiment_model_config(exp).get("init_args") or {}).get("init_adapters") if has_config else None
        if init:
            out += _runs_behind(_bundle_experiments(Path(init)), seen)
        out.append(str(exp))
    return tuple(out)


def _wall(runs: tuple[str, ...]) -> float | None:
    total = 0.0
    for run in runs:
        if not history_path(run).exists():
            return None
        hist = load_history(run)
        # A run resumed from a checkpoint older than wall-time recording restarted its count.
        if any(r.get("wall_s") is None for r in hist):
            return None
        total += float(hist[-1]["wall_s"])
    return total


def format_duration(seconds: float | None) -> str:
    """``1 h 02 min``, ``12 min 05 s``, ``40 s``, ``-`` for unknown."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s"
