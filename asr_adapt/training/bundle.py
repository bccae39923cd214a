"""Rebuild a training module from an experiment dir and write merged adapter bundles."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import yaml

from asr_adapt.adapters import adapter_state_dict, save_adapters
from asr_adapt.fileio import atomic_write_json
from asr_adapt.training.ckpt_merge import Choice, assemble_state, choose, load_histories, plot_curves

log = logging.getLogger(__name__)


def experiment_model_config(exp_dir: str | Path) -> dict:
    """The ``model`` section (``class_path``, ``init_args``) of the resolved ``EXP/config.yaml``."""
    cfg_path = Path(exp_dir) / "config.yaml"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path} not found: is {exp_dir} a training experiment directory?")
    return yaml.safe_load(cfg_path.read_text(encoding="utf-8"))["model"]


def build_from_experiment(exp_dir: str | Path, **overrides):
    """Instantiate the experiment's LightningModule from ``EXP/config.yaml`` (base weights reloaded)."""
    cfg = experiment_model_config(exp_dir)
    module_name, cls_name = cfg["class_path"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), cls_name)
    init = dict(cfg.get("init_args") or {})
    init.update(overrides)
    # Optimizer/scheduler entries are config dicts; they are not needed to assemble weights.
    for key in ("optimizer", "lr_scheduler"):
        init.pop(key, None)
    return cls(**init)


def merge_experiment(
    exp_dir: str | Path | list[str | Path], out_dir: str | Path, policy: str = "best", k: int = 3,
    min_prob: float = 0.95, metric: str = "wer",
) -> dict[str, Choice]:
    """Assemble the adapter bundle ``out_dir`` from the checkpoints of one or more runs.

    Several runs (e.g. the teacher and student generations of noisy-student training, which
    share the adapter layout) are pooled: a locale may take its adapter from any of them.
    Writes the bundle (per-locale adapter files), ``provenance.json`` (policy, ``k`` or
    ``min_prob`` where they apply; locale -> step(s), checkpoint(s), dev WER and, for
    best-significant, ``p_improve``) and ``dev_wer_curves.png`` with the chosen peaks marked.
    """
    exps = [Path(e) for e in (exp_dir if isinstance(exp_dir, list | tuple) else [exp_dir])]
    out_dir = Path(out_dir)
    hist = load_histories(exps)
    exp_dir = exps[-1]
    module = build_from_experiment(exp_dir, init_adapters=None)
    if module.hparams.full_finetune:
        raise ValueError(f"{exp_dir} is a full fine-tuning run: there are no per-locale adapters to merge")
    locales = [loc for loc in module.locales if any(loc in r["locales"] for r in hist)]
    if not locales:
        raise ValueError(f"none of the model's locales {module.locales} has dev WER in the history")
    choices = choose(hist, policy, k, locales, min_prob=min_prob, metric=metric)
    shared = set(adapter_state_dict(module.backbone, locales=[]))
    locale_keys = {
        loc: {"backbone." + key for key in set(adapter_state_dict(module.backbone, locales=[loc])) - shared}
        for loc in locales
    }
    # Shared tensors (S2-LoRA's A/B) belong to no locale: when every locale comes from one
    # checkpoint they come from it too, otherwise from the best macro-average checkpoint.
    sources = {c.ckpts for c in choices.values()}
    if len(sources) == 1 and len(next(iter(sources))) == 1:
        shared_ckpt = next(iter(sources))[0]
    else:
        shared_ckpt = choose(hist, "best-macro", k, locales, metric=metric)[locales[0]].ckpts[0]
        if shared:
            log.warning("adapter has %d shared tensors; taking them from the best-macro checkpoint", len(shared))
    state = assemble_state("", choices, locale_keys, shared_ckpt)  # ckpts are full paths
    module.load_state_dict(state, strict=True)
    provenance = {
        "policy": policy,
        "metric": metric,  # what "dev_wer" below measures (wer or cer)
        "k": k if policy == "avg-top-k" else None,
        "min_prob": min_prob if policy == "best-significant" else None,
        "experiments": [str(e) for e in exps],
        "shared_from": shared_ckpt if shared else None,
        "locales": {c.locale: {"steps": list(c.steps), "ckpts": list(c.ckpts), "dev_wer": c.dev_wer,
                               **({"p_improve": c.p_improve} if c.p_improve is not None else {})}
                    for c in choices.values()},
    }
    # The encoder window the adapters were trained at: decoders use it for the rows they serve.
    window = getattr(module.backbone, "train_min_window_s", None)
    hints = {"min_window_s": window} if window is not None else {}
    save_adapters(module.backbone, out_dir, module.base_fingerprint, locales=locales,
                  extra_meta={"provenance": provenance, "decode": hints})
    atomic_write_json(out_dir / "provenance.json", provenance)
    plot_curves(hist, choices, out_dir / "dev_wer_curves.png", metric)
    return choices
