"""Write a :class:`ScoreReport` to a directory; collect several into a comparison.

Files of one scored system ``<name>``:

- ``wer-summary-<name>.md`` / ``.json`` / ``.csv``: the tables (JSON also has config and
  per-utterance counts; :func:`collect_reports` reads it back);
- ``per_utt-<name>.txt``: per-utterance alignments;
- ``errors-<name>.txt``: top substitutions, deletions, insertions per locale;
- ``wer-<name>.png``: per-locale bars (with baseline and CI error bars when available).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from asr_adapt.fileio import atomic_write, atomic_write_json, write_lines
from asr_adapt.scoring.details import error_lines, per_utt_lines
from asr_adapt.scoring.plots import grouped_bars, plot_locale_wer
from asr_adapt.scoring.readers import ScoringError
from asr_adapt.scoring.report import ScoreReport


def safe_name(name: str) -> str:
    """A file-name-safe version of a system name."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_") or "system"


def write_report(report: ScoreReport, out_dir: str | Path, top_n: int = 20, plots: bool = True) -> dict[str, Path]:
    """Write all report files for ``report`` into ``out_dir``; returns kind -> path."""
    out = Path(out_dir)
    n = safe_name(report.name)
    paths = {
        "md": out / f"wer-summary-{n}.md", "json": out / f"wer-summary-{n}.json",
        "csv": out / f"wer-summary-{n}.csv", "per_utt": out / f"per_utt-{n}.txt",
        "errors": out / f"errors-{n}.txt",
    }
    atomic_write(paths["md"], report.to_markdown())
    atomic_write_json(paths["json"], report.to_dict())
    atomic_write(paths["csv"], report.to_csv())
    write_lines(paths["per_utt"], per_utt_lines(report))
    write_lines(paths["errors"], error_lines(report, top_n))
    if plots:
        paths["png"] = plot_locale_wer(report, out / f"wer-{n}.png")
    return paths


def _find_summaries(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    found = sorted(path.glob("wer-summary-*.json"))
    if not found:
        raise ScoringError(f"{path}: no wer-summary-*.json (score the system first with `asr-adapt score`)")
    return found


def collect_reports(paths: list[str | Path]) -> list[ScoreReport]:
    """Read every ``wer-summary-*.json`` in the given dirs (or the given JSON files)."""
    reports = []
    for p in paths:
        for f in _find_summaries(Path(p)):
            try:
                reports.append(ScoreReport.from_dict(json.loads(f.read_text(encoding="utf-8"))))
            except (OSError, json.JSONDecodeError, KeyError) as e:
                raise ScoringError(f"{f}: not a score summary ({e})") from None
    names = [r.name for r in reports]
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise ScoringError(f"several scored systems are named {', '.join(dup)}; rescore with distinct --name")
    return reports


def comparison_rows(reports: list[ScoreReport]) -> tuple[list[str], list[list[float | None]]]:
    """Row labels (locales, then ``macro avg``, ``pooled``) and rates per row per system."""
    locales = sorted({loc for r in reports for loc in r.locales})
    labels = locales + ["macro avg", "pooled"]
    table = []
    for label in labels:
        row = []
        for r in reports:
            stats = {"macro avg": r.macro, "pooled": r.pooled}.get(label) or r.locales.get(label)
            row.append(None if stats is None else stats.rate)
        table.append(row)
    return labels, table


def _comparability_warnings(reports: list[ScoreReport]) -> list[str]:
    """Markdown lines warning that the systems' numbers cannot be compared directly."""
    out = []
    if len({r.normaliser for r in reports}) > 1:
        out.append("**Warning: the systems were scored with different normalisers.**\n")
    if len({tuple(sorted(r.locales)) for r in reports}) > 1:
        out.append("**Warning: the systems cover different locales; macro/pooled rows are not comparable.**\n")
    return out


def write_comparison(reports: list[ScoreReport], out_dir: str | Path, stem: str = "comparison") -> dict[str, Path]:
    """One table (rows: locales + macro avg + pooled; columns: systems) as MD, CSV and PNG.

    A locale absent from a system is ``-`` in its column; macro averages over different
    locale sets are flagged, since they are then not comparable.
    """
    out = Path(out_dir)
    labels, table = comparison_rows(reports)
    names = [r.name for r in reports]
    norms = sorted({r.normaliser for r in reports})
    md = [f"# WER comparison ({', '.join(names)})", "",
          f"Headline error rate per locale (CER for CER locales), %. Normaliser: {', '.join(norms)}.",
          "**macro avg** = unweighted mean over locales; **pooled** = micro rate over all utterances.", ""]
    md += _comparability_warnings(reports)
    md += ["| row | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row"] + names)
    for label, vals in zip(labels, table):
        md.append(f"| {label} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in vals) + " |")
        w.writerow([label] + ["" if v is None else f"{v:.4f}" for v in vals])
    paths = {"md": out / f"{stem}.md", "csv": out / f"{stem}.csv", "png": out / f"{stem}.png"}
    atomic_write(paths["md"], "\n".join(md) + "\n")
    atomic_write(paths["csv"], buf.getvalue())
    series = {n: [0.0 if row[k] is None else row[k] for row in table] for k, n in enumerate(names)}
    grouped_bars(labels, series, paths["png"], ylabel="WER / CER (%)", title="system comparison")
    return paths


def _cell(v: float | str | None, prec: int) -> str:
    return "-" if v is None else (f"{v:.{prec}f}" if isinstance(v, float) else str(v))


def write_systems_table(
    reports: list[ScoreReport],
    out_dir: str | Path,
    stem: str = "systems",
    macro_over: list[str] | None = None,
    extra: dict[str, dict[str, str]] | None = None,
) -> dict[str, Path]:
    """One row per system: error rate per locale, macro average, then ``extra`` columns.

    ``macro_over``: the locales the macro average is taken over (e.g. only the adapted tail
    locales); they come first, the other locales after the average. ``extra``: per system
    name, already formatted cells (e.g. trainable parameters, training time); a system
    without an entry gets ``-``.
    """
    out = Path(out_dir)
    extra = extra or {}
    all_locs = sorted({loc for r in reports for loc in r.locales})
    first = [loc for loc in (macro_over or all_locs) if loc in all_locs]
    rest = [loc for loc in all_locs if loc not in first]
    extra_cols = list(dict.fromkeys(c for cells in extra.values() for c in cells))
    header = ["system"] + first + ["macro avg"] + rest + extra_cols
    rows = []
    for r in reports:
        rates = {loc: s.rate for loc, s in r.locales.items()}
        got = [rates[loc] for loc in first if loc in rates]
        macro = sum(got) / len(got) if got and len(got) == len(first) else None
        cells = [rates.get(loc) for loc in first] + [macro] + [rates.get(loc) for loc in rest]
        rows.append([r.name] + cells + [extra.get(r.name, {}).get(c, "-") for c in extra_cols])
    md = [f"# Systems ({', '.join(r.name for r in reports)})", "",
          "Headline error rate per locale (CER for CER locales), %. "
          + (f"The macro average is over {', '.join(first)}." if macro_over else "Macro = unweighted mean over locales."),
          "", *_comparability_warnings(reports),
          "| " + " | ".join(header) + " |", "|---|" + "---|" * (len(header) - 1)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        md.append("| " + " | ".join(_cell(v, 2) for v in row) + " |")
        w.writerow(["" if v is None else _cell(v, 4) for v in row])
    paths = {"md": out / f"{stem}.md", "csv": out / f"{stem}.csv"}
    atomic_write(paths["md"], "\n".join(md) + "\n")
    atomic_write(paths["csv"], buf.getvalue())
    return paths
