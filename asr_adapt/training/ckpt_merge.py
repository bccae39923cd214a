"""Checkpoint-wise merging: each locale's adapter from that locale's best checkpoint.

Locales peak at different steps (arXiv 2401.08992), so the final bundle takes, per locale,
the adapter parameters from the checkpoint where that locale's dev WER was lowest. The
choice is a policy (registered by name):

* ``best``      per-locale best dev WER (checkpoint-wise merging; ties -> later step)
* ``best-macro`` the single checkpoint with the best macro-average dev WER, for all locales
* ``last``      the last checkpoint, for all locales
* ``avg-top-k`` per locale, the average of its parameters over its k best checkpoints
* ``best-significant`` the best-macro checkpoint, except for a locale whose own best
  checkpoint beats it on that locale's dev set with paired-bootstrap probability of
  improvement >= ``min_prob`` (per-utterance dev errors, recorded at every validation)

Plain ``best`` is an argmin over noisy dev WERs: when a locale's curve is flat, its "peak"
is whichever checkpoint happened to suit its few dev voices, and the merge can end up worse
on test than the best single checkpoint. ``best-significant`` guards against the noisiest of
those picks. The bootstrap runs on the same dev utterances that chose both checkpoints, so
P(improve) is biased upwards (more so with more validations): ``min_prob`` 0.95 is a guard,
not a 5 % false-move rate.

Checkpoint-wise merging assumes locale-owned parameters are independent of each other. For
adapters with globally shared parameters (S2-LoRA's A/B) the shared tensors come from the
checkpoint every locale was taken from, or, when locales come from different checkpoints,
from the best-macro checkpoint, and a warning says so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from asr_adapt.fileio import read_jsonl
from asr_adapt.registry import Registry
from asr_adapt.scoring.bootstrap import locale_rng, prob_improvement, rates, resample_sums

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    """Which checkpoint(s) a locale's adapter comes from."""

    locale: str
    steps: tuple[int, ...]
    ckpts: tuple[str, ...]
    dev_wer: float  # dev WER at the chosen step (mean over steps for avg-top-k)
    # best-significant: paired-bootstrap P(this locale's own best checkpoint beats the
    # best-macro one on its dev set); None where no comparison was needed.
    p_improve: float | None = None


@dataclass(frozen=True)
class MergeOptions:
    """Knobs of the policies that have any."""

    k: int = 3  # avg-top-k: checkpoints averaged per locale
    min_prob: float = 0.95  # best-significant: P(improve) a locale's own best checkpoint needs
    n_boot: int = 1000  # best-significant: bootstrap resamples
    seed: int = 0
    # Dev metric that ranks checkpoints: "wer", or "cer" where words are mostly wrong early on
    # (character models on random-word dictation, scripts without spaces).
    metric: str = "wer"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown merge metric {self.metric!r}; choose from {sorted(METRICS)}")


History = list[dict]
Policy = Callable[[History, list[str], MergeOptions], dict[str, Choice]]
POLICIES: Registry[Policy] = Registry("merge policy")


def history_path(exp_or_ckpt_dir: str | Path) -> Path:
    """``history.jsonl`` of an experiment dir or of its ``checkpoints/`` dir (where the checkpoints are)."""
    d = Path(exp_or_ckpt_dir)
    return d / "history.jsonl" if (d / "history.jsonl").exists() else d / "checkpoints" / "history.jsonl"


def load_history(exp_or_ckpt_dir: str | Path) -> History:
    """Read ``history.jsonl`` from an experiment dir or its ``checkpoints/`` dir; sorted by step."""
    path = history_path(exp_or_ckpt_dir)
    # Per-utterance dev errors live in a side file per validation; its name is joined to the
    # history's folder here (as ``ckpt`` is in load_histories), so the record still finds it
    # when histories of several runs are pooled.
    hist = [dict(r, utt_errors=str(path.parent / r["utt_errors"])) if r.get("utt_errors") else r
            for r in read_jsonl(path) if r.get("locales")]
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


#: merge metric -> (history field, per-utterance errors field, per-utterance reference-length field)
METRICS = {"wer": ("wer", "err", "ref"), "cer": ("cer", "cerr", "cref")}


def _err(rec: dict, loc: str, metric: str = "wer") -> float:
    m = rec["locales"].get(loc)
    return float("inf") if m is None else float(m[METRICS[metric][0]])


def _choice(loc: str, recs: list[dict], metric: str = "wer") -> Choice:
    return Choice(loc, tuple(r["step"] for r in recs), tuple(r["ckpt"] for r in recs),
                  sum(_err(r, loc, metric) for r in recs) / len(recs))


@POLICIES.decorator("best")
def best_per_locale(hist: History, locales: list[str], opts: MergeOptions) -> dict[str, Choice]:
    # min over (error rate, -step): the lowest, and among equals the later (more trained) step.
    m = opts.metric
    return {loc: _choice(loc, [min(hist, key=lambda r: (_err(r, loc, m), -r["step"]))], m) for loc in locales}


def macro_wer(rec: dict, locales: list[str], metric: str = "wer") -> float:
    return sum(_err(rec, loc, metric) for loc in locales) / len(locales)


def _best_macro_record(hist: History, locales: list[str], metric: str = "wer") -> dict:
    return min(hist, key=lambda r: (macro_wer(r, locales, metric), -r["step"]))


@POLICIES.decorator("best-macro")
def best_macro(hist: History, locales: list[str], opts: MergeOptions) -> dict[str, Choice]:
    rec = _best_macro_record(hist, locales, opts.metric)
    return {loc: _choice(loc, [rec], opts.metric) for loc in locales}


@POLICIES.decorator("last")
def last(hist: History, locales: list[str], opts: MergeOptions) -> dict[str, Choice]:
    return {loc: _choice(loc, [hist[-1]], opts.metric) for loc in locales}


@POLICIES.decorator("avg-top-k")
def avg_top_k(hist: History, locales: list[str], opts: MergeOptions) -> dict[str, Choice]:
    m = opts.metric
    return {loc: _choice(loc, sorted(hist, key=lambda r: (_err(r, loc, m), -r["step"]))[: opts.k], m)
            for loc in locales}


def utt_errors(rec: dict, loc: str, metric: str = "wer") -> dict[str, tuple[int, int]]:
    """utterance id -> (errors, reference length) of ``loc`` at validation ``rec``, in words
    (``metric="wer"``) or characters (``"cer"``)."""
    if not rec.get("utt_errors"):
        raise ValueError(
            f"checkpoint {rec['ckpt']} (step {rec['step']}) has no per-utterance dev errors: it was trained "
            "before they were recorded. Retrain, or merge with `asr-adapt merge --policy best` "
            "(recipes: `run.sh --merge-policy best`).")
    d = json.loads(Path(rec["utt_errors"]).read_text(encoding="utf-8")).get(loc)
    if d is None:
        raise ValueError(f"{rec['utt_errors']} has no dev utterances of {loc}")
    _, err, ref = METRICS[metric]
    if err not in d:
        raise ValueError(f"{rec['utt_errors']} has no per-utterance {metric.upper()} counts (recorded since "
                         "character errors were added); merge with --metric wer or --policy best")
    out = {u: (e, n) for u, e, n in zip(d["utt"], d[err], d[ref])}
    if len(out) != len(d["utt"]):
        raise ValueError(f"{rec['utt_errors']}: repeated utterance ids in {loc}'s dev set; give each dev "
                         "utterance a unique id so the paired comparison counts each once")
    return out


def prob_improvement_on_dev(system: dict, baseline: dict, loc: str, opts: MergeOptions) -> float:
    """Paired bootstrap over ``loc``'s dev utterances: P(WER of ``system`` < WER of ``baseline``)."""
    a, b = utt_errors(system, loc, opts.metric), utt_errors(baseline, loc, opts.metric)
    if a.keys() != b.keys() or any(a[u][1] != b[u][1] for u in b):
        raise ValueError(f"{loc}: steps {system['step']} and {baseline['step']} were validated on different "
                         "dev utterances or references; a paired comparison needs the same dev set")
    utts = sorted(a)
    ref = np.array([b[u][1] for u in utts], dtype=np.float64)
    res = resample_sums([np.array([a[u][0] for u in utts], dtype=np.float64),
                         np.array([b[u][0] for u in utts], dtype=np.float64)],
                        ref, opts.n_boot, locale_rng(opts.seed, loc))
    return prob_improvement(rates(res.errors[0], res.ref), rates(res.errors[1], res.ref))


@POLICIES.decorator("best-significant")
def best_significant(hist: History, locales: list[str], opts: MergeOptions) -> dict[str, Choice]:
    m = opts.metric
    base = _best_macro_record(hist, locales, m)
    out = {}
    for loc in locales:
        own = min(hist, key=lambda r: (_err(r, loc, m), -r["step"]))
        if loc not in base["locales"]:
            out[loc] = _choice(loc, [own], m)  # nothing to compare with: the locale's own best
            continue
        if _err(own, loc, m) >= _err(base, loc, m):
            out[loc] = _choice(loc, [base], m)  # the best single checkpoint ties this locale's best
            continue
        p = prob_improvement_on_dev(own, base, loc, opts)
        out[loc] = replace(_choice(loc, [own if p >= opts.min_prob else base], m), p_improve=p)
    return out


def choose(hist: History, policy: str = "best", k: int = 3, locales: list[str] | None = None,
           **options) -> dict[str, Choice]:
    """Per-locale choices of ``policy``; ``options`` are further :class:`MergeOptions` fields."""
    return POLICIES.get(policy)(hist, locales or history_locales(hist), MergeOptions(k=k, **options))


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
            out[key] = mean_tensors([state(c)[key] for c in ch.ckpts])
    return out


def mean_tensors(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Element-wise mean of one parameter across checkpoints, in its own dtype; a single
    tensor comes back as it is, and a non-floating one (a counter) from the last checkpoint."""
    if len(tensors) == 1 or not tensors[0].is_floating_point():
        return tensors[-1]
    return torch.stack([t.float() for t in tensors]).mean(0).to(tensors[0].dtype)


def plot_curves(hist: History, choices: dict[str, Choice], out_png: str | Path, metric: str = "wer") -> None:
    """Per-locale dev error-rate curves over training steps, the chosen step(s) marked with a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from asr_adapt.fileio import atomic_open

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for loc in sorted(choices):
        steps = [r["step"] for r in hist if loc in r["locales"]]
        errs = [_err(r, loc, metric) for r in hist if loc in r["locales"]]
        (line,) = ax.plot(steps, errs, marker=".", label=loc)
        ch = choices[loc]
        ax.plot(list(ch.steps), [_err(next(r for r in hist if r["step"] == s), loc, metric) for s in ch.steps],
                marker="*", markersize=14, linestyle="none", color=line.get_color())
    ax.set_xlabel("training step")
    ax.set_ylabel(f"dev {metric.upper()} (%)")
    ax.set_title(f"Per-locale dev {metric.upper()}; stars: checkpoint chosen per locale")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    with atomic_open(out_png, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
