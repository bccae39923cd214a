"""Checkpoint-wise merging: each locale's adapter from that locale's best checkpoint.

Locales peak at different steps (arXiv 2401.08992), so the final bundle takes, per locale,
the adapter parameters from the checkpoint where that locale's dev WER was lowest. The
choice is a policy (registered by name):

* ``best``      per-locale best dev WER (checkpoint-wise merging; ties -> later step)
* ``best-macro`` the single checkpoint with the best macro-average dev WER, for all locales
* ``last``      the last checkpoint, for all locales
* ``avg-top-k`` per locale, the average of its parameters over its k best checkpoints

Checkpoint-wise merging assumes locale-owned parameters are independent of each other. For
adapters with globally shared parameters (S2-LoRA's A/B) the shared tensors are taken from
the best-macro checkpoint and a warning says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from asr_adapt.fileio import read_jsonl
from asr_adapt.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    """Which checkpoint(s) a locale's adapter comes from."""

    locale: str
    steps: tuple[int, ...]
    ckpts: tuple[str, ...]
    dev_wer: float  # dev WER at the chosen step (mean over steps for avg-top-k)


History = list[dict]
Policy = Callable[[History, list[str], int], dict[str, Choice]]
POLICIES: Registry[Policy] = Registry("merge policy")


def history_path(exp_or_ckpt_dir: str | Path) -> Path:
    """``history.jsonl`` of an experiment dir or of its ``checkpoints/`` dir (where the checkpoints are)."""
    d = Path(exp_or_ckpt_dir)
    return d / "history.jsonl" if (d / "history.jsonl").exists() else d / "checkpoints" / "history.jsonl"


def load_history(exp_or_ckpt_dir: str | Path) -> History:
    """Read ``history.jsonl`` from an experiment dir or its ``checkpoints/`` dir; sorted by step."""
    path = history_path(exp_or_ckpt_dir)
    hist = [r for r in read_jsonl(path) if r.get("locales")]
    if not hist:
        raise FileNotFoundError(f"no validation history with per-locale WER in {path}; train with validation first")
    return sorted(hist, key=lambda r: r["step"])


def load_histories(exps: list[str | Path]) -> History:
    """Concatenated histories of successive runs (e.g. noisy-student generations).

    Steps are made global (each run's steps offset by the previous runs' last step) so the
    curves read left to right, and each record's ``ckpt`` becomes a full path, so a locale
    can take its adapter from any generation's checkpoint.
    """
    out: History = []
    offset = 0
    for exp in exps:
        ckpt_dir = history_path(exp).parent
        out += [dict(r, step=r["step"] + offset, run_step=r["step"], ckpt=str(ckpt_dir / r["ckpt"]), exp=str(Path(exp)))
                for r in load_history(exp)]
        offset = out[-1]["step"]
    return out


def history_locales(hist: History) -> list[str]:
    return sorted({loc for r in hist for loc in r["locales"]})


def _wer(rec: dict, loc: str) -> float:
    m = rec["locales"].get(loc)
    return float("inf") if m is None else float(m["wer"])


def _choice(loc: str, recs: list[dict]) -> Choice:
    return Choice(loc, tuple(r["step"] for r in recs), tuple(r["ckpt"] for r in recs),
                  sum(_wer(r, loc) for r in recs) / len(recs))


@POLICIES.decorator("best")
def best_per_locale(hist: History, locales: list[str], k: int = 1) -> dict[str, Choice]:
    # min over (WER, -step): the lowest WER, and among equals the later (more trained) step.
    return {loc: _choice(loc, [min(hist, key=lambda r: (_wer(r, loc), -r["step"]))]) for loc in locales}


def macro_wer(rec: dict, locales: list[str]) -> float:
    return sum(_wer(rec, loc) for loc in locales) / len(locales)


@POLICIES.decorator("best-macro")
def best_macro(hist: History, locales: list[str], k: int = 1) -> dict[str, Choice]:
    rec = min(hist, key=lambda r: (macro_wer(r, locales), -r["step"]))
    return {loc: _choice(loc, [rec]) for loc in locales}


@POLICIES.decorator("last")
def last(hist: History, locales: list[str], k: int = 1) -> dict[str, Choice]:
    return {loc: _choice(loc, [hist[-1]]) for loc in locales}


@POLICIES.decorator("avg-top-k")
def avg_top_k(hist: History, locales: list[str], k: int = 3) -> dict[str, Choice]:
    return {loc: _choice(loc, sorted(hist, key=lambda r: (_wer(r, loc), -r["step"]))[:k]) for loc in locales}


def choose(hist: History, policy: str = "best", k: int = 3, locales: list[str] | None = None) -> dict[str, Choice]:
    return POLICIES.get(policy)(hist, locales or history_locales(hist), k)


def load_ckpt_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The (adapter-only) ``state_dict`` of a training checkpoint."""
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def assemble_state(
    ckpt_dir: str | Path,
    choices: dict[str, Choice],
    locale_keys: dict[str, set[str]],
    shared_from: str,
) -> dict[str, torch.Tensor]:
    """Build one state dict: each locale's keys from its chosen checkpoint(s) (averaged if several).

    Args:
        locale_keys: locale -> the state-dict keys that locale owns.
        shared_from: checkpoint file for keys no locale owns (shared parameters).
    """
    ckpt_dir = Path(ckpt_dir)
    cache: dict[str, dict[str, torch.Tensor]] = {}

    def state(name: str) -> dict[str, torch.Tensor]:
        if name not in cache:
            cache[name] = load_ckpt_state(ckpt_dir / name)
        return cache[name]

    out = dict(state(shared_from))
    for loc, ch in choices.items():
        for key in locale_keys.get(loc, ()):
            tensors = [state(c)[key] for c in ch.ckpts]
            out[key] = tensors[0] if len(tensors) == 1 else torch.stack([t.float() for t in tensors]).mean(0).to(tensors[0].dtype)
    return out


def plot_curves(hist: History, choices: dict[str, Choice], out_png: str | Path) -> None:
    """Per-locale dev-WER curves over training steps, the chosen step(s) marked with a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from asr_adapt.fileio import atomic_open

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for loc in sorted(choices):
        steps = [r["step"] for r in hist if loc in r["locales"]]
        wers = [r["locales"][loc]["wer"] for r in hist if loc in r["locales"]]
        (line,) = ax.plot(steps, wers, marker=".", label=loc)
        ch = choices[loc]
        ax.plot(list(ch.steps), [_wer(next(r for r in hist if r["step"] == s), loc) for s in ch.steps],
                marker="*", markersize=14, linestyle="none", color=line.get_color())
    ax.set_xlabel("training step")
    ax.set_ylabel("dev WER (%)")
    ax.set_title("Per-locale dev WER; stars: checkpoint chosen per locale")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    with atomic_open(out_png, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
