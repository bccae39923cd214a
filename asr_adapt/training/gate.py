"""Never worse than the base: a locale's adapter goes into a merged bundle only if it beats
the base model on that locale's dev set.

After checkpoint-wise merging has chosen each locale's checkpoint, the gate compares that
checkpoint's per-utterance dev errors (recorded at validation, ``dev_utts/step*.json``) with
the base model's on the same utterances, by paired bootstrap over utterances
(:mod:`asr_adapt.scoring.bootstrap`, through :func:`~asr_adapt.training.ckpt_merge.prob_improvement_on_dev`).
A locale whose P(adapter better) is below ``min_prob`` is removed from the bundle, so its rows
find no adapter and decode exactly as the base model does
(:func:`~asr_adapt.adapters.locales.resolve_locale`); the bundle's ``adapter_config.json``
and ``provenance.json`` record every decision under ``"gate"``.

The base's dev errors come from a decode of the dev set with the unadapted base
(``hyp.jsonl`` with references, as ``asr-adapt decode`` writes it from a data dir), scored
with the same normaliser and counts as validation (:class:`~asr_adapt.training.metrics.LocaleAccumulator`).
Dev utterances the decode lacks are decoded into it first, with the experiment's base model
and the decoder's default options: how the base serves a gated locale.

What P(improve) means here: the adapter's checkpoint was chosen on these same dev
utterances, so the estimate leans optimistic; the gate stops adapters that are no better
than the base (or worse), it is not a held-out test. It is only as good as the dev set:
speakers (and, where possible, a recording or synthesis engine) that training did not use.
The gate counts, per locale, the dev utterances whose speaker also occurs in a training data
dir, and warns when there are any.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from asr_adapt.adapters.locales import resolve_locale
from asr_adapt.fileio import atomic_write_json, read_jsonl
from asr_adapt.training.ckpt_merge import (
    METRICS,
    Choice,
    History,
    MergeOptions,
    load_histories,
    prob_improvement_on_dev,
    utt_errors,
)
from asr_adapt.training.metrics import LocaleAccumulator

log = logging.getLogger(__name__)

#: per-utterance dev errors of the base model, beside the bundle (dev_utts/step*.json format)
BASE_ERRORS_FILE = "base_dev_utts.json"


@dataclass(frozen=True)
class GateOptions:
    """How a locale's adapter must beat the base to be kept."""

    min_prob: float = field(default=0.95, metadata={"help": "P(adapter better than base) a locale's adapter needs"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples"})
    seed: int = field(default=0, metadata={"help": "seed of the per-locale bootstrap generators"})
    metric: str = field(default="wer", metadata={"help": "dev error rate compared: wer or cer (the merge's metric)"})

    def __post_init__(self) -> None:
        if not 0.0 < self.min_prob <= 1.0:
            raise ValueError(f"gate min_prob must be in (0, 1], got {self.min_prob}")
        if self.n_boot < 1:
            raise ValueError(f"gate n_boot must be >= 1, got {self.n_boot}")
        if self.metric not in METRICS:
            raise ValueError(f"unknown gate metric {self.metric!r}; choose from {sorted(METRICS)}")


@dataclass(frozen=True)
class GateDecision:
    """One locale's verdict. Rates are percent, micro-averaged over its dev utterances."""

    locale: str
    keep: bool
    p_improve: float  # paired-bootstrap P(adapter's dev rate < base's)
    adapter_rate: float
    base_rate: float
    n_utts: int
    # dev utterances whose speaker also speaks in a training data dir; None: unknown
    seen_speaker_utts: int | None = None


def _config(exp: str | Path) -> dict:
    path = Path(exp) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {exp} a training experiment directory?")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _data_dirs(exps: Sequence[str | Path], split: str) -> list[str]:
    """The ``data.<split>`` dirs of every run, each once, in order."""
    dirs = [d for exp in exps for d in (_config(exp).get("data") or {}).get(split) or []]
    return list(dict.fromkeys(str(d) for d in dirs))


def chosen_record(hist: History, choice: Choice) -> dict:
    """The validation record of the one checkpoint ``choice`` takes its adapter from."""
    if len(choice.ckpts) == 1:
        rec = next(r for r in hist if r["ckpt"] == choice.ckpts[0])
        if rec.get("utt_errors"):
            return rec
        raise ValueError(f"checkpoint {rec['ckpt']} has no per-utterance dev errors (trained before they were "
                         "recorded), so there is nothing to gate its adapters by; retrain, or pass --no-gate")
    raise ValueError(f"{choice.locale}: its adapter averages {len(choice.ckpts)} checkpoints (avg-top-k), which "
                     "were never validated as one adapter, so there are no dev errors to gate it by; merge with "
                     "another policy or pass --no-gate")


def dev_utterances(hist: History, choices: dict[str, Choice], metric: str = "wer") -> dict[str, list[str]]:
    """locale -> the dev utterance ids its chosen checkpoint was validated on."""
    return {loc: sorted(utt_errors(chosen_record(hist, ch), loc, metric)) for loc, ch in sorted(choices.items())}


def decode_base_dev(exps: Sequence[str | Path], wanted: set[str], out: str | Path, device: str = "cpu") -> int:
    """Decode into ``out`` (resumable) the ``wanted`` dev utterances it lacks, with the base model
    of the last run in ``exps`` and default decoding options. Returns how many were decoded."""
    from asr_adapt.data.kaldi import load_utterances
    from asr_adapt.decoding.runner import HYP_FILE, decode_utterances
    from asr_adapt.decoding.service import Transcriber

    out = Path(out)
    missing = wanted - {r["utt_id"] for r in read_jsonl(out / HYP_FILE) if "utt_id" in r}
    if not missing:
        return 0
    dev = {u.utt_id: u for d in _data_dirs(exps, "dev") for u in load_utterances(d)}
    if missing - dev.keys():
        raise ValueError(f"{len(missing - dev.keys())} dev utterances of the history (e.g. "
                         f"{sorted(missing - dev.keys())[:3]}) are in none of the runs' data.dev dirs")
    model_cfg = _config(exps[-1])["model"]
    module_name, cls_name = model_cfg["class_path"].rsplit(".", 1)
    family = getattr(importlib.import_module(module_name), cls_name).family
    # No adapters, default options: the rows decode as `asr-adapt decode --model BASE` decodes them.
    transcriber = Transcriber.load(family, model_cfg["init_args"]["model"], device=device)
    log.info("gate: decoding %d dev utterances with the base model into %s", len(missing), out)
    summary = decode_utterances(transcriber, [dev[u] for u in sorted(missing)], out, progress=False)
    if summary.failed:
        raise ValueError(f"{len(summary.failed)} dev utterances could not be decoded; see {out / 'failed.tsv'}")
    return summary.decoded


def base_dev_errors(decode_dir: str | Path, dev: dict[str, list[str]]) -> dict[str, dict[str, list]]:
    """Per-utterance errors of a base-model decode on ``dev`` (locale -> utterance ids), in the
    format validation records (``{"utt": [...], "err": [...], "ref": [...], "cerr": ..., "cref": ...}``).

    The locale of an utterance is the one the history files it under, not the decode's
    (possibly detected) language, so the comparison pairs the same utterances.
    """
    from asr_adapt.decoding.runner import HYP_FILE

    recs = {r["utt_id"]: r for r in read_jsonl(Path(decode_dir) / HYP_FILE) if "utt_id" in r}
    acc = LocaleAccumulator()  # validation's normaliser and counts
    for loc, utts in dev.items():
        missing = [u for u in utts if u not in recs]
        if missing:
            raise ValueError(f"{decode_dir}/{HYP_FILE} lacks {len(missing)} of {loc}'s {len(utts)} dev utterances "
                             f"(e.g. {missing[:3]}); decode the dev set the training validated on")
        no_ref = [u for u in utts if recs[u].get("ref") is None]
        if no_ref:
            raise ValueError(f"{decode_dir}/{HYP_FILE} has no reference ('ref') for {no_ref[:3]}: decode the dev "
                             "data dir (with its text) so each record carries its reference")
        acc.add(utts, [recs[u]["ref"] for u in utts], [recs[u].get("text") or "" for u in utts], [loc] * len(utts))
    acc.compute()
    return acc.utt_errors


def _rate(errors: dict[str, tuple[int, int]]) -> float:
    return 100.0 * sum(e for e, _ in errors.values()) / max(1, sum(n for _, n in errors.values()))


def seen_speaker_utts(exps: Sequence[str | Path], dev: dict[str, list[str]]) -> dict[str, int | None]:
    """locale -> how many of its dev utterances have a speaker who also occurs in a training data
    dir of ``exps`` (None for every locale when the data dirs cannot be read)."""
    from asr_adapt.data.kaldi import load_utterances

    try:
        trained = {u.speaker for d in _data_dirs(exps, "train") for u in load_utterances(d) if u.speaker}
        speaker = {u.utt_id: u.speaker for d in _data_dirs(exps, "dev") for u in load_utterances(d)}
    except OSError as e:  # data moved since training: the gate still works, the check cannot
        log.warning("gate: cannot compare dev and training speakers (%s)", e)
        return dict.fromkeys(dev)
    return {loc: sum(speaker.get(u) in trained for u in utts) for loc, utts in dev.items()}


def decide(hist: History, choices: dict[str, Choice], base_errors_file: str | Path,
           opts: GateOptions = GateOptions(), seen: dict[str, int | None] | None = None) -> dict[str, GateDecision]:
    """Each locale's :class:`GateDecision`; ``base_errors_file`` holds :func:`base_dev_errors`' output."""
    base = {"step": "base", "ckpt": "base model", "utt_errors": str(base_errors_file)}
    boot = MergeOptions(min_prob=opts.min_prob, n_boot=opts.n_boot, seed=opts.seed, metric=opts.metric)
    out = {}
    for loc, ch in sorted(choices.items()):
        rec = chosen_record(hist, ch)
        p = prob_improvement_on_dev(rec, base, loc, boot)  # also checks both scored the same utterances
        mine, theirs = utt_errors(rec, loc, opts.metric), utt_errors(base, loc, opts.metric)
        out[loc] = GateDecision(loc, p >= opts.min_prob, p, _rate(mine), _rate(theirs), len(mine),
                                (seen or {}).get(loc))
    return out


def gate_record(decisions: dict[str, GateDecision], opts: GateOptions | None, base_dev: str | None = None) -> dict:
    """The ``"gate"`` entry of a bundle's metadata: options, per-locale decisions and, per locale
    sent to the base, what serves it (``"base"``, or a language adapter the bundle still holds)."""
    if opts is None:
        return {"enabled": False, "to_base": []}
    kept = {loc for loc, d in decisions.items() if d.keep}
    return {"enabled": True, **asdict(opts), "base_dev": base_dev,
            "to_base": sorted(set(decisions) - kept),
            "locales": {loc: {**asdict(d), "served_by": loc if d.keep else resolve_locale(loc, kept) or "base"}
                        for loc, d in decisions.items()}}


def apply_gate(bundle: str | Path, record: dict) -> None:
    """Remove the locales ``record`` sends to the base from a merged bundle (their files and their
    ``adapter_config.json`` entries) and store ``record`` as the ``"gate"`` entry of its
    ``adapter_config.json`` and ``provenance.json``. A type left with no locale goes, shared
    tensors and all: nothing would use them."""
    from asr_adapt.adapters.io import CONFIG_NAME, read_meta

    bundle = Path(bundle)
    meta = read_meta(bundle)
    files = []
    for name, entry in list(meta["sets"].items()):
        files += [entry["locales"].pop(loc)["file"] for loc in record["to_base"] if loc in entry["locales"]]
        if not entry["locales"]:
            files += [entry["shared"]["file"]] if entry.get("shared") else []
            del meta["sets"][name]
    meta["gate"] = record
    atomic_write_json(bundle / CONFIG_NAME, meta)  # first, so the description never names a missing file
    for f in files:
        (bundle / f).unlink()
    prov_path = bundle / "provenance.json"
    prov = json.loads(prov_path.read_text(encoding="utf-8")) if prov_path.is_file() else {}
    atomic_write_json(prov_path, {**prov, "gate": record})


def gate_bundle(bundle: str | Path, exps: Sequence[str | Path], choices: dict[str, Choice],
                opts: GateOptions = GateOptions(), base_dev: str | Path | None = None,
                device: str = "cpu") -> dict[str, GateDecision]:
    """Gate the locales of ``bundle``, just merged from ``exps`` with ``choices``.

    ``base_dev``: a decode dir of the base model on the dev set; dev utterances it lacks are
    decoded into it (default: ``bundle/base_dev``). Writes ``bundle/base_dev_utts.json``.
    """
    bundle = Path(bundle)
    hist = load_histories(list(exps))
    dev = dev_utterances(hist, choices, opts.metric)
    decode_dir = Path(base_dev) if base_dev else bundle / "base_dev"
    decode_base_dev(exps, {u for utts in dev.values() for u in utts}, decode_dir, device)
    atomic_write_json(bundle / BASE_ERRORS_FILE, base_dev_errors(decode_dir, dev))
    seen = seen_speaker_utts(exps, dev)
    for loc, n in seen.items():
        if n:
            log.warning("gate: %d of %s's %d dev utterances are by speakers training also used; the gate "
                        "then favours the adapter", n, loc, len(dev[loc]))
    decisions = decide(hist, choices, bundle / BASE_ERRORS_FILE, opts, seen)
    apply_gate(bundle, gate_record(decisions, opts, str(base_dev) if base_dev else "base_dev"))
    return decisions


def gated_merge(exps: str | Path | Sequence[str | Path], out: str | Path, policy: str = "best", k: int = 3,
                min_prob: float = 0.95, metric: str = "wer", gate: GateOptions | None = GateOptions(),
                base_dev: str | Path | None = None, device: str = "cpu") -> str:
    """Checkpoint-wise merge of ``exps`` into ``out``, gated against the base (``gate=None``:
    recorded as not gated); built aside and swapped in whole, so a replaced bundle keeps no
    locale the gate now leaves out. Returns the Markdown report (also ``out/merge_report.md``).

    Raises:
        ValueError: dev sets that do not pair up with the base decode, or a policy with
            nothing to gate by (the gate's own checks).
    """
    from asr_adapt.fileio import atomic_directory, atomic_write
    from asr_adapt.training.bundle import merge_experiment

    exp_list = [exps] if isinstance(exps, str | Path) else list(exps)
    with atomic_directory(out) as tmp:
        choices = merge_experiment(exp_list, tmp, policy, k, min_prob, metric)
        if gate is None:
            apply_gate(tmp, gate_record({}, None))
        else:
            gate_bundle(tmp, exp_list, choices, gate, base_dev, device)
        report = report_markdown(json.loads((tmp / "provenance.json").read_text(encoding="utf-8")))
        atomic_write(tmp / "merge_report.md", report)
    return report


def report_markdown(prov: dict) -> str:
    """``merge_report.md`` from a bundle's ``provenance.json``: per locale, the checkpoint chosen,
    adapter vs base dev error rate, P(adapter better) and what serves the locale."""
    metric = (prov.get("metric") or "wer").upper()
    gate = prov.get("gate") or {"enabled": False, "to_base": []}
    lines = ["# Merged adapters", "", f"Checkpoint policy `{prov['policy']}`, dev {metric}."]
    if gate["enabled"]:
        lines.append(
            f"Gate: a locale keeps its adapter only if P(adapter better than the base model on its dev set) "
            f">= {gate['min_prob']} (paired bootstrap over dev utterances, {gate['n_boot']} resamples; base "
            f"dev decode `{gate['base_dev']}`). The checkpoint was chosen on the same dev set, so P leans optimistic.")
    else:
        lines.append("Not gated (`--no-gate`): every locale keeps its adapter, better than the base or not.")
    significant = prov["policy"] == "best-significant"
    cols = ["locale", "step(s)", f"adapter {metric}", f"base {metric}", "P(adapter better)",
            "dev utts (by training speakers)", "served by"]
    if significant:
        cols.insert(2, "P(own best > best macro)")
    lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for loc, c in sorted(prov["locales"].items()):
        g = (gate.get("locales") or {}).get(loc)
        row = [loc, ",".join(map(str, c["steps"]))]
        if significant:
            row.append("" if c.get("p_improve") is None else f"{c['p_improve']:.3f}")
        if g is None:
            row += [f"{c['dev_wer']:.2f}", "", "", "", "adapter"]
        else:
            seen = "?" if g["seen_speaker_utts"] is None else g["seen_speaker_utts"]
            by = g["served_by"]
            row += [f"{g['adapter_rate']:.2f}", f"{g['base_rate']:.2f}", f"{g['p_improve']:.3f}",
                    f"{g['n_utts']} ({seen})",
                    "adapter" if by == loc else "**base model**" if by == "base" else f"**{by} adapter** (language)"]
        lines.append("| " + " | ".join(row) + " |")
    if gate["to_base"]:
        lines += ["", f"Adapters removed (not better than the base): {', '.join(gate['to_base'])}."]
    return "\n".join(lines) + "\n"
