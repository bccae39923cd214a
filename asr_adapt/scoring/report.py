"""The result of scoring: per-locale statistics, macro and pooled rows, and their renderings.

Two averages over locales are reported and always labelled:

- **macro avg**: the unweighted mean over locales of each locale's rate (every locale
  counts the same however many utterances it has; the number tail-language work cares about).
- **pooled**: one micro rate over all utterances of all locales, each locale counted in
  its headline unit (words, or characters for CER locales), so a large locale dominates.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

from asr_adapt.scoring.metrics import Counts, kaldi_line

TABLE_COLUMNS = ["locale", "Snt", "Wrd", "Corr", "Sub", "Del", "Ins", "Err", "S.Err"]


@dataclass(frozen=True)
class Interval:
    """A bootstrap confidence interval of a rate in percent."""

    lo: float
    hi: float
    level: float = 0.95

    def to_dict(self) -> dict:
        return {"lo": self.lo, "hi": self.hi, "level": self.level}


@dataclass(frozen=True)
class Comparison:
    """System vs baseline on one row. ``delta`` is absolute (percentage points, negative is
    better); ``werr`` is the relative reduction in percent, (baseline - system) / baseline;
    ``p_improve`` is the paired-bootstrap probability that the system is better."""

    baseline: float
    system: float
    p_improve: float | None = None

    @property
    def delta(self) -> float:
        return self.system - self.baseline

    @property
    def werr(self) -> float:
        return 100.0 * (self.baseline - self.system) / self.baseline if self.baseline else math.nan

    def to_dict(self) -> dict:
        return {"baseline": self.baseline, "system": self.system, "delta": self.delta,
                "werr": None if math.isnan(self.werr) else self.werr, "p_improve": self.p_improve}


@dataclass(frozen=True)
class UttScore:
    """One scored utterance (texts after normalisation)."""

    utt_id: str
    locale: str
    ref: str
    hyp: str
    metric: str  # "wer" or "cer": the headline unit of its locale
    words: Counts
    chars: Counts
    missing: bool = False  # no hypothesis: scored as an empty one (all deletions)
    pairs: tuple = ()  # headline-unit alignment (ref, hyp) pairs, when details were kept

    @property
    def headline(self) -> Counts:
        return self.chars if self.metric == "cer" else self.words


@dataclass(frozen=True)
class RowStats:
    """One table row: a locale, the macro average or the pooled total.

    ``pct`` holds ``corr sub del ins err serr`` in headline units plus ``wer``/``cer``;
    ``counts`` is the headline-unit total (``None`` for the macro row, which has no counts).
    """

    label: str
    metric: str  # "wer", "cer", or "mixed" for rows over locales with different units
    n_utt: int
    n_units: int
    pct: dict[str, float]
    counts: Counts | None = None
    words: Counts | None = None
    chars: Counts | None = None
    ci: Interval | None = None
    comparison: Comparison | None = None

    @property
    def rate(self) -> float:
        """The headline rate of this row in percent."""
        return self.pct["err"]

    def kaldi_line(self) -> str | None:
        if self.counts is None or self.metric not in ("wer", "cer"):
            return None
        return kaldi_line(self.counts, "CER" if self.metric == "cer" else "WER")

    def to_dict(self) -> dict:
        return {
            "label": self.label, "metric": self.metric, "n_utt": self.n_utt, "n_units": self.n_units,
            "rate": self.rate, "pct": dict(self.pct),
            "counts": self.counts.to_dict() if self.counts else None,
            "words": self.words.to_dict() if self.words else None,
            "chars": self.chars.to_dict() if self.chars else None,
            "ci": self.ci.to_dict() if self.ci else None,
            "comparison": self.comparison.to_dict() if self.comparison else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> RowStats:
        def counts(key):
            return Counts.from_dict(d[key]) if d.get(key) else None

        ci = Interval(**d["ci"]) if d.get("ci") else None
        cmp = d.get("comparison")
        comparison = Comparison(cmp["baseline"], cmp["system"], cmp.get("p_improve")) if cmp else None
        return cls(d["label"], d["metric"], d["n_utt"], d["n_units"], dict(d["pct"]), counts("counts"),
                   counts("words"), counts("chars"), ci, comparison)


def row_from_counts(label: str, metric: str, head: Counts, n_utt: int, n_err_utt: int,
                    words: Counts, chars: Counts) -> RowStats:
    """Percentages of one micro-averaged row (a locale, or the pooled total)."""
    ref = head.ref or 1
    pct = {
        "corr": 100.0 * head.hits / ref, "sub": 100.0 * head.sub / ref, "del": 100.0 * head.dele / ref,
        "ins": 100.0 * head.ins / ref, "err": head.rate, "serr": 100.0 * n_err_utt / max(n_utt, 1),
        "wer": words.rate, "cer": chars.rate,
    }
    return RowStats(label, metric, n_utt, head.ref, pct, head, words, chars)


def macro_row(rows: list[RowStats]) -> RowStats:
    """Unweighted mean over locale rows of every percentage."""
    keys = rows[0].pct.keys() if rows else ()
    pct = {k: sum(r.pct[k] for r in rows) / len(rows) for k in keys}
    metrics = {r.metric for r in rows}
    return RowStats("macro avg", metrics.pop() if len(metrics) == 1 else "mixed",
                    sum(r.n_utt for r in rows), sum(r.n_units for r in rows), pct)


@dataclass
class ScoreReport:
    """Everything one scoring run produced. ``utterances`` is not serialised by
    :meth:`to_dict` beyond per-utterance counts (texts are in the per-utterance file)."""

    name: str
    normaliser: str
    normaliser_description: str
    config: dict
    locales: dict[str, RowStats]
    macro: RowStats
    pooled: RowStats
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    baseline: str | None = None
    utterances: list[UttScore] = field(default_factory=list)

    def rows(self) -> list[RowStats]:
        """Locale rows (sorted by locale), then macro avg, then pooled."""
        return [self.locales[k] for k in sorted(self.locales)] + [self.macro, self.pooled]

    def wer(self, locale: str) -> float:
        """The headline error rate of ``locale`` in percent (WER, or CER for CER locales)."""
        return self.locales[locale].rate

    # --- renderings -------------------------------------------------------------------
    def kaldi_lines(self) -> list[str]:
        """``<locale> %WER x.xx [ E / N, I ins, D del, S sub ]`` per locale (``%CER`` for CER
        locales), then the pooled WER and pooled CER over all locales."""
        out = [f"{loc} {self.locales[loc].kaldi_line()}" for loc in sorted(self.locales)]
        # Pooled over all locales in both units: a single pooled line in mixed units (words
        # for some locales, characters for others) would not be a Kaldi WER or CER.
        if self.pooled.words is not None:
            out.append(f"pooled {kaldi_line(self.pooled.words, 'WER')}")
            out.append(f"pooled {kaldi_line(self.pooled.chars, 'CER')}")
        return out

    def sclite_table(self) -> str:
        """sclite-style Markdown table in headline units (micro within each locale)."""
        head = TABLE_COLUMNS + ["unit", "WER", "CER", "95% CI"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows():
            unit = {"wer": "word", "cer": "char"}.get(r.metric, "mixed")
            ci = f"[{r.ci.lo:.2f}, {r.ci.hi:.2f}]" if r.ci else "-"
            p = r.pct
            cells = [r.label, str(r.n_utt), str(r.n_units)] + [
                f"{p[k]:.2f}" for k in ("corr", "sub", "del", "ins", "err", "serr")
            ] + [unit, f"{p['wer']:.2f}", f"{p['cer']:.2f}", ci]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def comparison_table(self) -> str | None:
        if self.baseline is None:
            return None
        lines = ["| locale | baseline | system | delta (abs) | WERR % | P(improve) |", "|---|---|---|---|---|---|"]
        for r in self.rows():
            c = r.comparison
            if c is None:
                continue
            werr = "-" if math.isnan(c.werr) else f"{c.werr:.2f}"
            p = "-" if c.p_improve is None else f"{c.p_improve:.3f}"
            lines.append(f"| {r.label} | {c.baseline:.2f} | {c.system:.2f} | {c.delta:+.2f} | {werr} | {p} |")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        cer = ",".join(self.config.get("cer_locales", []))
        parts = [
            f"# WER summary: {self.name}",
            "",
            f"- normaliser: `{self.normaliser}` ({self.normaliser_description})",
            f"- headline metric: CER for locales of languages {{{cer}}}, WER otherwise",
            f"- bootstrap: {self.config.get('bootstrap', 0)} resamples, seed {self.config.get('seed')}",
            "- **macro avg** = unweighted mean over locales; **pooled** = one micro rate over all "
            "utterances (each locale in its headline unit)",
            "",
            "```",
            *self.kaldi_lines(),
            "```",
            "",
            self.sclite_table(),
        ]
        cmp = self.comparison_table()
        if cmp:
            parts += ["", f"## Against baseline `{self.baseline}`", "", cmp]
        if self.missing:
            parts += ["", f"**{len(self.missing)} reference(s) without hypothesis** (scored as all deletions): "
                      + ", ".join(self.missing[:50]) + (" ..." if len(self.missing) > 50 else "")]
        if self.extra:
            parts += ["", f"{len(self.extra)} hypothesis(es) without reference (ignored): "
                      + ", ".join(self.extra[:50]) + (" ..." if len(self.extra) > 50 else "")]
        return "\n".join(parts) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["system", "row", "metric", "Snt", "Wrd", "Corr", "Sub", "Del", "Ins", "Err", "S.Err",
                    "wer", "cer", "ci_lo", "ci_hi", "baseline", "delta", "werr", "p_improve"])
        for r in self.rows():
            p, c = r.pct, r.comparison
            w.writerow([self.name, r.label, r.metric, r.n_utt, r.n_units]
                       + [f"{p[k]:.4f}" for k in ("corr", "sub", "del", "ins", "err", "serr", "wer", "cer")]
                       + ([f"{r.ci.lo:.4f}", f"{r.ci.hi:.4f}"] if r.ci else ["", ""])
                       + ([f"{c.baseline:.4f}", f"{c.delta:.4f}", "" if math.isnan(c.werr) else f"{c.werr:.4f}",
                           "" if c.p_improve is None else f"{c.p_improve:.4f}"] if c else ["", "", "", ""]))
        return buf.getvalue()

    def to_dict(self, with_utterances: bool = True) -> dict:
        d = {
            "name": self.name, "normaliser": self.normaliser,
            "normaliser_description": self.normaliser_description, "config": dict(self.config),
            "baseline": self.baseline,
            "locales": {k: v.to_dict() for k, v in sorted(self.locales.items())},
            "macro": self.macro.to_dict(), "pooled": self.pooled.to_dict(),
            "missing": list(self.missing), "extra": list(self.extra),
        }
        if with_utterances:
            d["utterances"] = [
                {"utt_id": u.utt_id, "locale": u.locale, "metric": u.metric, "missing": u.missing,
                 "words": [u.words.ref, u.words.errors], "chars": [u.chars.ref, u.chars.errors]}
                for u in self.utterances
            ]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ScoreReport:
        """Rebuild the summary (not the per-utterance texts) from :meth:`to_dict` output."""
        return cls(
            d["name"], d["normaliser"], d.get("normaliser_description", ""), dict(d.get("config", {})),
            {k: RowStats.from_dict(v) for k, v in d["locales"].items()},
            RowStats.from_dict(d["macro"]), RowStats.from_dict(d["pooled"]),
            list(d.get("missing", [])), list(d.get("extra", [])), d.get("baseline"),
        )
