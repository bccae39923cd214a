"""Score hypotheses against references per locale: :func:`score` and :func:`score_files`.

Rules for awkward input (all reported, none silent):

- an empty or whitespace-only reference, or one that normalisation empties, is an error
  (:class:`ScoringError` naming the utterances): it has no defined error rate;
- an empty hypothesis scores as all deletions;
- a reference without hypothesis is scored as an empty hypothesis and listed in
  ``report.missing``;
- a hypothesis without reference is listed in ``report.extra`` and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

import asr_adapt.scoring.bootstrap as bs
from asr_adapt.langtags import NO_SPACE_LANGUAGES, language_of
from asr_adapt.scoring.metrics import align_chars, align_words, char_text, sum_counts
from asr_adapt.scoring.normalise import NORMALISERS, get_normaliser
from asr_adapt.scoring.readers import ScoringError, read_transcripts
from asr_adapt.scoring.report import (
    Comparison,
    Interval,
    RowStats,
    ScoreReport,
    UttScore,
    macro_row,
    row_from_counts,
)

log = logging.getLogger(__name__)

# Languages written without spaces between words: WER there measures the segmenter.
DEFAULT_CER_LANGUAGES = tuple(sorted(NO_SPACE_LANGUAGES))


@dataclass(frozen=True)
class ScoreConfig:
    """How to score. ``ScoreConfig(bootstrap=0, details=False)`` is the fast path used
    for per-validation dev WER in training."""

    normaliser: str = field(default="multilingual", metadata={"help": "registered normaliser name"})
    cer_locales: tuple[str, ...] = field(
        default=DEFAULT_CER_LANGUAGES,
        metadata={"help": "languages or full locales whose headline metric is CER"},
    )
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples for CIs; 0 disables"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap generators"})
    ci_level: float = field(default=0.95, metadata={"help": "confidence level of the intervals"})
    details: bool = field(default=True, metadata={"help": "keep alignments for per-utterance/top-error files"})
    default_locale: str = field(default="und", metadata={"help": "locale of utterances with none given"})

    def __post_init__(self) -> None:
        if self.normaliser not in NORMALISERS:
            raise ValueError(f"unknown normaliser {self.normaliser!r}; known: {', '.join(NORMALISERS.names())}")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap must be >= 0, got {self.bootstrap}")
        if not 0.0 < self.ci_level < 1.0:
            raise ValueError(f"ci_level must be in (0, 1), got {self.ci_level}")
        object.__setattr__(self, "cer_locales", tuple(self.cer_locales))

    def headline_metric(self, locale: str) -> str:
        """``"cer"`` when the locale or its language is in :attr:`cer_locales`, else ``"wer"``."""
        cer = set(self.cer_locales)
        return "cer" if locale in cer or language_of(locale) in cer else "wer"


FAST = ScoreConfig(bootstrap=0, details=False)


def _normalise_refs(refs: Mapping[str, str], norm) -> dict[str, str]:
    out, bad = {}, []
    for uid, text in refs.items():
        if text is None or not text.strip():
            bad.append(f"{uid!r} (empty reference)")
            continue
        n = norm(text)
        if not n.strip():
            bad.append(f"{uid!r} (reference {text!r} is empty after normaliser {norm.name!r})")
            continue
        out[uid] = n
    if bad:
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ScoringError("cannot score empty references: utterance " + ", ".join(bad[:10]) + more)
    return out


def _score_locale(locale, uids, refs, hyps, metric, keep_pairs, missing) -> list[UttScore]:
    """Align one locale's utterances (one jiwer call per unit type)."""
    r = [refs[u] for u in uids]
    h = [hyps.get(u, "") for u in uids]
    words = align_words(r, h, keep_pairs and metric == "wer")
    drop = metric == "cer"
    chars = align_chars([char_text(x, drop) for x in r], [char_text(x, drop) for x in h],
                        keep_pairs and metric == "cer")
    return [
        UttScore(u, locale, rr, hh, metric, w.counts, c.counts, u in missing,
                 (c if metric == "cer" else w).pairs)
        for u, rr, hh, w, c in zip(uids, r, h, words, chars)
    ]


def _locale_row(locale: str, utts: list[UttScore]) -> RowStats:
    head = sum_counts(u.headline for u in utts)
    n_err = sum(1 for u in utts if u.headline.errors > 0)
    return row_from_counts(locale, utts[0].metric, head, len(utts), n_err,
                           sum_counts(u.words for u in utts), sum_counts(u.chars for u in utts))


def _pooled_row(utts: list[UttScore]) -> RowStats:
    metrics = {u.metric for u in utts}
    row = _locale_row("pooled", utts)
    return replace(row, metric=metrics.pop() if len(metrics) == 1 else "mixed")


def score(
    refs: Mapping[str, str],
    hyps: Mapping[str, str],
    langs: Mapping[str, str] | None = None,
    config: ScoreConfig = ScoreConfig(),
    *,
    baseline: Mapping[str, str] | None = None,
    name: str = "system",
    baseline_name: str = "baseline",
) -> ScoreReport:
    """Score ``hyps`` against ``refs`` (both ``utt_id -> text``) per locale.

    ``langs`` maps ``utt_id -> locale`` (missing: ``config.default_locale``). With
    ``baseline`` (another ``utt_id -> text``), every row also carries the baseline's rate,
    the absolute delta, WERR and (with bootstrap) the paired probability of improvement.
    """
    if not refs:
        raise ScoringError("no references to score")
    norm = get_normaliser(config.normaliser)
    nrefs = _normalise_refs(refs, norm)
    nhyps = {u: norm(t or "") for u, t in hyps.items() if u in nrefs}
    missing = sorted(u for u in nrefs if u not in hyps)
    extra = sorted(u for u in hyps if u not in nrefs)
    if missing:
        log.warning("%d reference(s) have no hypothesis; scored as all deletions", len(missing))
    langs = langs or {}
    by_locale: dict[str, list[str]] = {}
    for uid in nrefs:
        by_locale.setdefault(langs.get(uid) or config.default_locale, []).append(uid)

    utts: dict[str, list[UttScore]] = {}
    base_utts: dict[str, list[UttScore]] = {}
    base_missing: list[str] = []
    nbase = None
    if baseline is not None:
        nbase = {u: norm(t or "") for u, t in baseline.items() if u in nrefs}
        base_missing = sorted(u for u in nrefs if u not in baseline)
    for loc in sorted(by_locale):
        metric = config.headline_metric(loc)
        utts[loc] = _score_locale(loc, by_locale[loc], nrefs, nhyps, metric, config.details, set(missing))
        if nbase is not None:
            base_utts[loc] = _score_locale(loc, by_locale[loc], nrefs, nbase, metric, False, set(base_missing))

    rows = {loc: _locale_row(loc, u) for loc, u in utts.items()}
    all_utts = [u for loc in sorted(utts) for u in utts[loc]]
    macro = macro_row([rows[k] for k in sorted(rows)])
    pooled = _pooled_row(all_utts)
    if nbase is not None:
        base_rows = {loc: _locale_row(loc, u) for loc, u in base_utts.items()}
        base_macro = macro_row([base_rows[k] for k in sorted(base_rows)]).rate
        base_pooled = _pooled_row([u for loc in sorted(base_utts) for u in base_utts[loc]]).rate
        rows = {k: replace(r, comparison=Comparison(base_rows[k].rate, r.rate)) for k, r in rows.items()}
        macro = replace(macro, comparison=Comparison(base_macro, macro.rate))
        pooled = replace(pooled, comparison=Comparison(base_pooled, pooled.rate))
    if config.bootstrap > 0 and rows:
        rows, macro, pooled = _with_bootstrap(config, utts, base_utts, rows, macro, pooled)

    cfg = {"normaliser": config.normaliser, "cer_locales": list(config.cer_locales),
           "bootstrap": config.bootstrap, "seed": config.seed, "ci_level": config.ci_level}
    if baseline is not None:
        cfg["baseline_missing"] = base_missing
    return ScoreReport(name, norm.name, norm.description, cfg, rows, macro, pooled, missing, extra,
                       baseline_name if baseline is not None else None, all_utts)


def _with_bootstrap(config, utts, base_utts, rows, macro, pooled):
    """Attach percentile CIs (and paired P(improve) against a baseline) to every row."""
    level, n_boot = config.ci_level, config.bootstrap
    sys_rates, base_rates, sys_err, base_err, refs = [], [], [], [], []
    new_rows = {}
    for loc in sorted(utts):
        ref = np.array([u.headline.ref for u in utts[loc]], dtype=np.float64)
        errs = [np.array([u.headline.errors for u in utts[loc]], dtype=np.float64)]
        if base_utts:
            errs.append(np.array([u.headline.errors for u in base_utts[loc]], dtype=np.float64))
        res = bs.resample_sums(errs, ref, n_boot, bs.locale_rng(config.seed, loc))
        refs.append(res.ref)
        sys_err.append(res.errors[0])
        sys_rates.append(bs.rates(res.errors[0], res.ref))
        row = replace(rows[loc], ci=Interval(*bs.percentile_ci(sys_rates[-1], level), level))
        if base_utts:
            base_err.append(res.errors[1])
            base_rates.append(bs.rates(res.errors[1], res.ref))
            p = bs.prob_improvement(sys_rates[-1], base_rates[-1])
            row = replace(row, comparison=replace(row.comparison, p_improve=p))
        new_rows[loc] = row

    def attach(row, sys_samples, base_samples):
        row = replace(row, ci=Interval(*bs.percentile_ci(sys_samples, level), level))
        if base_samples is not None:
            row = replace(row, comparison=replace(row.comparison,
                                                  p_improve=bs.prob_improvement(sys_samples, base_samples)))
        return row

    total_ref = np.sum(refs, axis=0)
    macro = attach(macro, np.mean(sys_rates, axis=0), np.mean(base_rates, axis=0) if base_utts else None)
    pooled = attach(pooled, bs.rates(np.sum(sys_err, axis=0), total_ref),
                    bs.rates(np.sum(base_err, axis=0), total_ref) if base_utts else None)
    return new_rows, macro, pooled


def dev_wer(refs: Mapping[str, str], hyps: Mapping[str, str], langs: Mapping[str, str] | None = None,
            normaliser: str = "multilingual") -> dict[str, float]:
    """Fast path for training: ``locale -> headline error rate (%)`` plus ``"macro"`` and
    ``"pooled"``; no bootstrap, no alignments kept."""
    rep = score(refs, hyps, langs, replace(FAST, normaliser=normaliser))
    out = {loc: r.rate for loc, r in rep.locales.items()}
    out["macro"] = rep.macro.rate
    out["pooled"] = rep.pooled.rate
    return out


def score_files(
    ref: str | Path,
    hyp: str | Path,
    *,
    baseline: str | Path | None = None,
    lang: str | None = None,
    config: ScoreConfig = ScoreConfig(),
    name: str | None = None,
) -> ScoreReport:
    """Read references and hypotheses (see :func:`~asr_adapt.scoring.readers.read_transcripts`)
    and score them. Locale per utterance: ``lang`` for all if given, else the reference's
    ``utt2lang``, else the hypothesis record's ``lang``, else ``config.default_locale``."""
    refs, ref_langs = read_transcripts(ref)
    hyps, hyp_langs = read_transcripts(hyp)
    langs = {u: lang for u in refs} if lang else {**hyp_langs, **ref_langs}
    base = read_transcripts(baseline)[0] if baseline is not None else None
    hyp_path = Path(hyp).resolve()
    # A decode dir (or its hyp.jsonl) is named after the directory, a bare file after its stem.
    default_name = hyp_path.name if hyp_path.is_dir() else (
        hyp_path.parent.name if hyp_path.name == "hyp.jsonl" else hyp_path.stem)
    return score(refs, hyps, langs, config, baseline=base, name=name or default_name,
                 baseline_name=Path(baseline).name if baseline is not None else "baseline")
