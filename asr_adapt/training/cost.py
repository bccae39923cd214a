"""What a trained system cost: trainable parameters per locale and training wall time.

A *system* is what gets decoded, given as one of

* nothing (``""``): the zero-shot base, no training;
* an adapter bundle (``asr-adapt merge`` output, ``adapter_config.json`` + ``provenance.json``);
* an exported whole model (full fine-tuning; its ``foundation.json`` names the checkpoint).

Training time is the ``wall_s`` of the last validation in each run's ``history.jsonl``
(training + validation, summed over resumes), added up over every run behind the system:
the experiments its checkpoints come from and, through ``init_adapters`` in their
``config.yaml``, the teachers those started from (noisy-student generations). Time spent
pseudo-labelling between generations is not training time and is not counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from asr_adapt.training.ckpt_merge import history_path, load_history


@dataclass(frozen=True)
class SystemCost:
    params_per_locale: int | None  # trainable parameters one locale adds; the whole model for full FT
    shared_params: int  # stored once for all locales (e.g. S2-LoRA's shared A/B)
    wall_s: float | None  # None when some run behind the system has no recorded wall time
    runs: tuple[str, ...]  # training experiments behind it, teachers first


def system_cost(source: str | Path | None) -> SystemCost:
    """Cost of the system decoded from ``source`` (see the module docstring for what it may be)."""
    if not source:
        return SystemCost(0, 0, 0.0, ())
    src = Path(source)
    if (src / "adapter_config.json").exists():
        return _bundle_cost(src)
    if (src / "foundation.json").exists():
        info = json.loads((src / "foundation.json").read_text(encoding="utf-8"))
        runs = _runs_behind([Path(info["checkpoint"]).parent.parent]) if info.get("checkpoint") else ()
        return SystemCost(int(info["parameters"]), 0, _wall(runs), runs)
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
    prov = bundle / "provenance.json"
    exps = json.loads(prov.read_text(encoding="utf-8")).get("experiments", []) if prov.exists() else []
    runs = _runs_behind([Path(e) for e in exps])
    return SystemCost(max(per_locale.values(), default=0), shared, _wall(runs), runs)


def _runs_behind(exps: list[Path]) -> tuple[str, ...]:
    """``exps`` and, recursively, the runs of the bundles they were initialised from; teachers first."""
    out: list[str] = []
    for exp in exps:
        cfg = exp / "config.yaml"
        init = None
        if cfg.exists():
            conf = yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}
            init = ((conf.get("model") or {}).get("init_args") or {}).get("init_adapters")
        if init and (Path(init) / "provenance.json").exists():
            prov = json.loads((Path(init) / "provenance.json").read_text(encoding="utf-8"))
            out += [r for r in _runs_behind([Path(e) for e in prov.get("experiments", [])]) if r not in out]
        if str(exp) not in out:
            out.append(str(exp))
    return tuple(out)


def _wall(runs: tuple[str, ...]) -> float | None:
    total = 0.0
    for run in runs:
        if not history_path(run).exists():
            return None
        last = load_history(run)[-1].get("wall_s")
        if last is None:  # trained before wall time was recorded
            return None
        total += float(last)
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
